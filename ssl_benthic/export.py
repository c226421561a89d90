"""`ssl-benthic export`: a pretraining checkpoint's student backbone as timm safetensors plus JSON.

The weights keep timm's key naming, so they load with
`timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=PATH), num_classes=0)` and with
`create_backbone(name, weights=<export dir>)`. The JSON carries the normalisation the backbone was
trained with, so stage 2 evaluates it with the same statistics.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import save_file

from ssl_benthic.backbones import EXPORT_META, EXPORT_WEIGHTS

__all__ = ["export_backbone", "cli_export", "student_backbone_state"]

PREFIX = "backbone."
FORMAT = "ssl-benthic-backbone/1"


def student_backbone_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The student backbone's tensors (`backbone.*` keys, prefix removed)."""
    return {k[len(PREFIX) :]: v for k, v in state_dict.items() if k.startswith(PREFIX)}


def _metadata(ckpt: dict[str, Any], path: Path, num_features: int) -> dict[str, Any]:
    info = ckpt["ssl_benthic"]
    cfg = info["config"]
    return {
        "format": FORMAT,
        "timm_name": info["timm_name"],
        "img_size": cfg["transform"]["input_size"],
        "mean": list(cfg["transform"]["mean"]),
        "std": list(cfg["transform"]["std"]),
        "method": info["method"],
        "step": int(ckpt.get("global_step", 0)),
        "epoch": int(ckpt.get("epoch", 0)),
        "num_features": num_features,
        "model_kwargs": info.get("model_kwargs", {}),
        "source_checkpoint": str(path),
        "config": cfg,
    }


def export_backbone(checkpoint: str | Path, out_dir: str | Path) -> Path:
    """Write `backbone.safetensors` + `backbone.json` for `checkpoint` into `out_dir`; return out_dir."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if "ssl_benthic" not in ckpt or "state_dict" not in ckpt:
        raise ValueError(
            f"{path}: not an ssl-benthic pretraining checkpoint (no 'ssl_benthic' entry)"
        )
    state = student_backbone_state(ckpt["state_dict"])
    if not state:
        raise ValueError(f"{path}: no '{PREFIX}*' weights in the checkpoint's state_dict")
    info = ckpt["ssl_benthic"]
    # check that the weights fit the timm architecture exactly before writing anything
    model = timm.create_model(
        info["timm_name"], pretrained=False, num_classes=0, **info.get("model_kwargs", {})
    )
    model.load_state_dict(state, strict=True)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in state.items()}
    save_file(tensors, str(out / EXPORT_WEIGHTS), metadata={"format": "pt"})
    meta = _metadata(ckpt, path, int(model.num_features))
    (out / EXPORT_META).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def cli_export(args: argparse.Namespace) -> int:
    """`ssl-benthic export CHECKPOINT --out DIR`."""
    try:
        out = export_backbone(args.checkpoint, args.out)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"exported backbone to {out / EXPORT_WEIGHTS} (+ {EXPORT_META})")
    return 0
