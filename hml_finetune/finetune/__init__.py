"""Stage 2 on image shards: recipe, labels, loaders, model, training, scoring, inference, results,
and the `train` / `evaluate` commands.
"""
