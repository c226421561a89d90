"""The start an embedding comes from: its backbone, the eval transform it was made for, and the
record of both that `embed.json` keeps (weights file and sha256, timm name, pool, image size,
mean/std).

A start is an export or import folder (or `.safetensors` with its JSON, or a pretraining
checkpoint): its JSON gives the architecture and normalisation; or a timm name with a local weights
file, loaded by timm's own pretrained-weights path (its converters), normalised as timm's
pretrained config says; or `random` with a timm name, initialised from a seed (a baseline, and
reproducible, so a resumed run computes the same features), with the BenthicNet labelled statistics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ssl_benthic.core.errors import BackboneError
from ssl_benthic.core.normalization import BENTHICNET_LABELLED_MEAN, BENTHICNET_LABELLED_STD
from ssl_benthic.pretrain.config import TransformConfig
from ssl_benthic.pretrain.methods.base import eval_transform
from ssl_benthic.weights.backbones import check_model_name, create_backbone, read_export
from ssl_benthic.weights.load import weights_identity
from ssl_benthic.weights.vit_features import (
    backbone_img_size,
    export_is_fixed_size_vit,
    is_vit,
)

__all__ = ["Start", "load_start"]


@dataclass
class Start:
    """A backbone in eval mode, its transform (PIL -> normalised tensor) and its record."""

    backbone: nn.Module
    transform: Callable
    record: dict[str, Any]


def _from_timm_file(name: str, weights_file: str, pool: str, img_size: int | None) -> tuple:
    check_model_name(name)
    fixed = img_size is not None and export_is_fixed_size_vit(name, {})
    kwargs = {"img_size": img_size} if fixed else {}  # a fixed-size ViT is built for it (resampled)
    model = create_backbone(
        name, weights="imagenet", weights_file=weights_file, pool=pool, **kwargs
    )
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = img_size or int(cfg.get("input_size", (3, 224, 224))[-1])
    identity = weights_identity("imagenet", weights_file)
    return model, name, size, cfg.get("mean"), cfg.get("std"), identity


def _random(name: str, seed: int, pool: str, img_size: int | None) -> tuple:
    check_model_name(name)
    fixed = img_size is not None and export_is_fixed_size_vit(name, {})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_backbone(name, pool=pool, **({"img_size": img_size} if fixed else {}))
    size = img_size or int((model.pretrained_cfg or {}).get("input_size", (3, 224, 224))[-1])
    identity = {**weights_identity("random", None), "seed": seed}
    return model, name, size, None, None, identity


def _from_export(weights: str, pool: str, img_size: int | None) -> tuple:
    if not Path(weights).exists():
        raise BackboneError(
            f"--weights {weights}: no such export or import folder or file (a timm model name "
            "needs --weights-file FILE)"
        )
    meta = read_export(weights)[1]
    name = meta.get("timm_name")
    if not name:
        raise BackboneError(
            f"--weights {weights}: no timm_name in its JSON; import the file first "
            "(ssl-benthic import-weights FILE --out DIR) and embed with DIR"
        )
    size = img_size or int(meta.get("img_size") or 224)
    build, _note = backbone_img_size(weights, None, size)
    kwargs = {"img_size": build} if build is not None else {}
    model = create_backbone(name, weights=weights, pool=pool, **kwargs)
    identity = weights_identity(weights, None)
    return model, name, size, meta.get("mean"), meta.get("std"), identity


def load_start(
    weights: str,
    weights_file: str | None = None,
    pool: str = "cls",
    img_size: int | None = None,
    model: str | None = None,
    seed: int = 0,
) -> Start:
    """The start named by `weights` (a path; a timm name when `weights_file` is given; `random`
    with the timm name `model`), its ViT feature set by `pool`, its input `img_size` (default:
    the start's own)."""
    if (weights == "random") != (model is not None):
        raise BackboneError(
            "--model NAME goes with --weights random (and --weights random needs it)"
        )
    if weights == "random":
        built = _random(model, seed, pool, img_size)
    elif weights_file is not None:
        built = _from_timm_file(weights, weights_file, pool, img_size)
    else:
        built = _from_export(weights, pool, img_size)
    model, name, size, mean, std, identity = built
    mean = [float(v) for v in (mean or BENTHICNET_LABELLED_MEAN)]
    std = [float(v) for v in (std or BENTHICNET_LABELLED_STD)]
    transform = eval_transform(TransformConfig(input_size=size, mean=tuple(mean), std=tuple(std)))
    record = {
        "weights": identity,
        "timm_name": name,
        "pool": getattr(model, "feature_pool", pool) if is_vit(model) else "avg (CNN)",
        "img_size": size,
        "mean": mean,
        "std": std,
        "num_features": int(model.num_features),
    }
    return Start(model.eval(), transform, record)
