"""`compare`: a resumable grid of starts x modes x losses x seeds, and its report."""
