"""Point-annotation exports (CoralNet, SQUIDLE+, MERMAID): one file per format behind one registry,
the patch rule shared with predict, and label maps.
"""
