"""`predict`: labels for new images, shards and points, written by registered writers."""
