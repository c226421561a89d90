"""`ssl-benthic embed`: features of images, shard samples or annotated points from any start
(export, import, timm name + weights file), written resumably, and kNN scores against labelled shards.
"""
