"""Data: webdataset shards (writing, verifying, reading) and the synthetic sample."""
