"""`hml-finetune evaluate`: a fine-tuned checkpoint scored on labelled shards with its stored
thresholds, hierarchies and normalisation.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from hml_finetune.data.labels import (
    hierarchy_from_dict,
    labelled_heads,
    read_split,
    require_labels,
)
from hml_finetune.finetune_config import FinetuneConfig
from hml_finetune.head_metrics import metrics_markdown, write_metrics
from hml_finetune.hierarchy import Hierarchy
from hml_finetune.model import HMLModel, extract_features, image_transform
from hml_finetune.scoring import process_device, run_fields, score_heads
from hml_finetune.train_data import align_split
from ssl_benthic.backbones import create_backbone
from ssl_benthic.config import ConfigError, from_dict
from ssl_benthic.errors import LabelError

__all__ = ["load_finetuned", "evaluate_shards", "cli_evaluate"]


def load_finetuned(path: str | Path) -> tuple[HMLModel, dict[str, Hierarchy], dict[str, Any]]:
    """(model, hierarchies, meta) from model.ckpt or a Lightning checkpoint of `run_finetune`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint not found: {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    meta = ckpt.get("hml_finetune") if isinstance(ckpt, dict) else None
    if meta is None:
        raise ConfigError(f"{path}: not an hml-finetune checkpoint (no 'hml_finetune' entry)")
    cfg = from_dict(FinetuneConfig, meta["config"], source=f"{path} [hml_finetune.config]")
    hierarchies = {h: hierarchy_from_dict(d) for h, d in meta["hierarchies"].items()}
    backbone = create_backbone(cfg.backbone.name, weights="random", **meta["backbone_kwargs"])
    model = HMLModel(backbone, hierarchies, cfg.heads, True, meta.get("single") or {})
    state = ckpt["state_dict"]
    if any(k.startswith("model.") for k in state):
        state = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    model.load_state_dict(state)
    return model.eval(), hierarchies, meta


def evaluate_shards(checkpoint: str | Path, shards: str | Path, out: str | Path | None) -> dict:
    """Score a checkpoint on a labelled shard folder with its stored thresholds and statistics; a
    split without labels (of the model's heads) is a LabelError, raised before any image is read."""
    model, hierarchies, meta = load_finetuned(checkpoint)
    labels = read_split(shards)  # labels only (no image decoded): checked before any feature
    require_labels(labels, f"--shards {shards}")
    heads, there = [*hierarchies, *model.single], labelled_heads([labels])
    if not there & set(heads):
        raise LabelError(
            f"--shards {shards}: no labels of the model's heads ({', '.join(heads)}) in its "
            f"{len(labels)} samples (heads labelled there: {', '.join(sorted(there))})"
        )
    cfg = from_dict(FinetuneConfig, meta["config"], source=str(checkpoint))
    stored = meta.get("thresholds") or {}
    fixed = cfg.threshold if cfg.threshold not in ("global", "per-node") else 0.5
    if not stored:
        print(f"{checkpoint}: no tuned thresholds stored (a training checkpoint): using {fixed}")
    thresholds = {
        h: torch.tensor(stored[h])
        if isinstance(stored.get(h), list)
        else float(stored.get(h, fixed))
        for h in hierarchies
    }
    known = meta.get("threshold_rules") or {}
    rules = {
        h: known.get(h) or ("stored" if h in stored else f"fixed {float(fixed):g}")
        for h in hierarchies
    }
    device = process_device(cfg)
    model.to(device)
    transform = image_transform(cfg.data.img_size, meta["mean"], meta["std"], augment=False)
    feats, keys = extract_features(
        model.backbone, shards, transform, cfg.data.batch_size, device, cfg.trainer.precision
    )
    split = align_split(labels, keys)
    heads = score_heads(
        model, feats, split, hierarchies, thresholds, meta["train_freq"], cfg.heads.flat, rules
    )
    result = {
        "heads": heads,
        **run_fields(cfg),
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
