"""The shard format, written and read: records and keys (`format`), tar writer, atomic folders,
resumable builds, manifests, the webdataset reader, verify-shards and summary.
"""
