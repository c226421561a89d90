"""`hml-finetune evaluate`: a fine-tuned checkpoint scored on labelled shards with its stored
temperatures, thresholds, hierarchies, normalisation and label rule (`predict.label_rule`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hml_finetune.finetune.data import align_split
from hml_finetune.finetune.inference import features, load_for_inference
from hml_finetune.finetune.labels import (
    labelled_heads,
    read_split,
    require_labels,
)
from hml_finetune.finetune.results import metrics_markdown, write_metrics
from hml_finetune.finetune.scoring import run_fields, score_heads
from ssl_benthic.core.errors import LabelError
from ssl_benthic.data.shards.reader import iter_samples

__all__ = ["evaluate_shards", "cli_evaluate"]


def evaluate_shards(
    checkpoint: str | Path, shards: str | Path, out: str | Path | None, device: str = "auto"
) -> dict:
    """Score a checkpoint on a labelled shard folder with its stored thresholds and statistics; a
    split without labels (of the model's heads) is a LabelError, raised before any image is read."""
    labels = read_split(shards)  # labels only (no image decoded): checked before any feature
    require_labels(labels, f"--shards {shards}")
    f = load_for_inference(checkpoint, device)
    heads, there = [*f.hierarchies, *f.model.single], labelled_heads([labels])
    if not there & set(heads):
        raise LabelError(
            f"--shards {shards}: no labels of the model's heads ({', '.join(heads)}) in its "
            f"{len(labels)} samples (heads labelled there: {', '.join(sorted(there))})"
        )
    samples = ((key, image) for key, image, _ in iter_samples(shards))
    keys, feats = features(f, samples, f.cfg.data.batch_size)
    feats = feats.to(f.device)
    probs = {h: p.cpu() for h, p in f.model.predict_features(feats).items()}
    raw = {h: p.cpu() for h, p in f.model.predict_features(feats, calibrated=False).items()}
    heads = score_heads(
        probs,
        align_split(labels, keys),
        f.hierarchies,
        f.thresholds,
        f.meta["train_freq"],
        f.schemes,
        f.model.single,
        f.rules,
        raw,
        f.model.temperatures,
        f.cfg.predict,
    )
    result = {
        "heads": heads,
        **run_fields(f.cfg),
        "checkpoint": str(checkpoint),
        "shards": str(shards),
    }
    out_dir = (
        Path(out) if out is not None else Path(checkpoint).parent / f"eval-{Path(shards).name}"
    )
    write_metrics(result, out_dir)
    return result


def cli_evaluate(args: argparse.Namespace) -> int:
    """`hml-finetune evaluate --checkpoint C --shards DIR [--out DIR]`."""
    result = evaluate_shards(args.checkpoint, args.shards, args.out)
    print(metrics_markdown(result))
    return 0
