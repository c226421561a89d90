"""`make-shards`: a source (CSV, folder tree, point export) -> planned samples -> shards, with
grouped splits that do not leak.
"""
