"""`ssl-benthic export`: a pretraining checkpoint's student backbone as timm safetensors plus JSON.

The weights keep timm's key naming, so they load with
`timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=PATH), num_classes=0)` and with
`create_backbone(name, weights=<export dir>)`. The JSON carries the normalisation the backbone was
trained with, so stage 2 evaluates it with the same statistics.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Any

import timm
import torch

from ssl_benthic.core.errors import BackboneError
from ssl_benthic.weights.load import (
    EXPORT_META,
    EXPORT_WEIGHTS,
    STUDENT_PREFIX,
    load_strict,
    pretrain_metadata,
    student_backbone_state,
    write_export_files,
)

__all__ = ["export_backbone", "cli_export"]

FORMAT = "ssl-benthic-backbone/1"


def _warn_if_unfinished(ckpt: dict[str, Any], path: Path) -> None:
    """Warn when a checkpoint stopped before its recipe's max_steps (an interrupted run)."""
    max_steps = ckpt["ssl_benthic"]["config"]["trainer"].get("max_steps", -1)
    step = int(ckpt.get("global_step", 0))
    if max_steps > 0 and step < max_steps:
        warnings.warn(
            f"{path} is at step {step} of its recipe's max_steps {max_steps}: exporting an "
            "unfinished run (resume it with `ssl-benthic pretrain ... --resume last` first?)",
            stacklevel=2,
        )


def export_backbone(checkpoint: str | Path, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write `backbone.safetensors` + `backbone.json` for `checkpoint` into `out_dir`; return out_dir.
    An existing export there is replaced only with `overwrite`."""
    path, out = Path(checkpoint), Path(out_dir)
    if not path.is_file():
        raise BackboneError(f"checkpoint not found: {path}")
    if not overwrite and ((out / EXPORT_WEIGHTS).exists() or (out / EXPORT_META).exists()):
        raise BackboneError(f"{out} already holds an export: pass --overwrite to replace it")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if "ssl_benthic" not in ckpt or "state_dict" not in ckpt:
        raise BackboneError(
            f"{path}: not an ssl-benthic pretraining checkpoint (no 'ssl_benthic' entry)"
        )
    state = student_backbone_state(ckpt["state_dict"])
    if not state:
        raise BackboneError(
            f"{path}: no '{STUDENT_PREFIX}*' weights in the checkpoint's state_dict"
        )
    info = ckpt["ssl_benthic"]
    # check that the weights fit the timm architecture exactly before writing anything
    model = timm.create_model(
        info["timm_name"], pretrained=False, num_classes=0, **info.get("model_kwargs", {})
    )
    load_strict(model, state, str(path))
    _warn_if_unfinished(ckpt, path)
    meta = {"format": FORMAT, **pretrain_metadata(ckpt, path), "num_features": model.num_features}
    meta["pool"] = meta["config"].get("backbone", {}).get("pool", "cls")  # the feature pretrained
    write_export_files(out, state, meta)
    return out


def cli_export(args: argparse.Namespace) -> int:
    """`ssl-benthic export CHECKPOINT --out DIR`."""
    out = export_backbone(args.checkpoint, args.out, overwrite=args.overwrite)
    print(f"exported backbone to {out / EXPORT_WEIGHTS} (+ {EXPORT_META})")
    return 0
