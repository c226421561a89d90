"""The HML method on tensors (no Lightning, no images): hierarchy, schemes, max-constraint, heads,
losses, uncertainty, thresholds, metrics.
"""
