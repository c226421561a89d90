"""Image backbones from `timm`: random init, ImageNet weights (hub or local file) or a stage-1 export.

Every backbone is `timm.create_model(name, num_classes=0)`, so it returns pooled features of size
`backbone.num_features` and its state dict uses timm's key naming (what `export.py` writes).
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path
from typing import Any

import timm
from torch import nn

from ssl_benthic.core.errors import BackboneError
from ssl_benthic.weights.load import (
    EXPORT_META,
    EXPORT_WEIGHTS,
    load_strict,
    read_export,
    read_state,
)
from ssl_benthic.weights.vit_features import apply_pool, fit_pos_embed

log = logging.getLogger(__name__)

__all__ = [
    "BackboneError",
    "EXPORT_META",
    "EXPORT_WEIGHTS",
    "create_backbone",
    "feature_dim",
    "check_model_name",
    "read_export",
]


def check_model_name(name: str) -> None:
    """Fail with near-miss suggestions when `name` is not a timm architecture."""
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    raise BackboneError(f"unknown timm model '{name}'{hint}; see timm.list_models()")


def feature_dim(backbone: nn.Module) -> int:
    """Size of the pooled feature vector a `num_classes=0` timm backbone returns."""
    return int(backbone.num_features)


def _imagenet(name: str, weights_file: str | Path | None, kwargs: dict[str, Any]) -> nn.Module:
    if weights_file is not None:
        if not Path(weights_file).is_file():
            raise BackboneError(f"backbone weights_file not found: {weights_file}")
        overlay = dict(file=str(weights_file))
        return timm.create_model(
            name, pretrained=True, pretrained_cfg_overlay=overlay, num_classes=0, **kwargs
        )
    try:
        return timm.create_model(name, pretrained=True, num_classes=0, **kwargs)
    except Exception as exc:  # noqa: BLE001 - any hub/network failure gets the same advice
        raise BackboneError(
            f"could not fetch ImageNet weights for '{name}' from the hub ({type(exc).__name__}: "
            f"{exc}). Download the timm weights file (e.g. from https://huggingface.co/timm, "
            f"'model.safetensors') on a machine with internet and pass it as "
            f"backbone.weights_file=PATH (create_backbone(..., weights_file=PATH))"
        ) from exc


def create_backbone(
    name: str,
    *,
    weights: str | Path = "random",
    img_size: int | None = None,
    drop_path_rate: float = 0.0,
    weights_file: str | Path | None = None,
    pool: str | None = None,
    **kw: Any,
) -> nn.Module:
    """A timm backbone without classifier; `weights` is "random", "imagenet" or a path.

    A path is a stage-1 export (folder or .safetensors + JSON), a pretraining checkpoint or a plain
    state dict file, loaded strictly (see `ssl_benthic.weights.load`); ViT options (img_size,
    patch_size) come from the export's JSON unless given here; an export's ViT position embeddings
    are resampled to another `img_size` (timm's resampling). `pool` sets a ViT's feature (cls,
    mean, cls+mean; see `ssl_benthic.weights.vit_features`), None keeps the model's own.
    """
    check_model_name(name)
    kwargs = dict(kw)
    if drop_path_rate:
        kwargs["drop_path_rate"] = drop_path_rate
    if img_size is not None:
        kwargs["img_size"] = img_size
    weights = str(weights)
    if weights == "random":
        model = timm.create_model(name, pretrained=False, **{"num_classes": 0, **kwargs})
        return apply_pool(model, pool, name)
    if weights == "imagenet":
        return apply_pool(_imagenet(name, weights_file, kwargs), pool, name)
    path, meta = read_export(weights)
    if meta.get("timm_name", name) != name:
        raise BackboneError(
            f"{path}: export was trained as '{meta['timm_name']}', not '{name}' (set backbone name)"
        )
    for key, value in (meta.get("model_kwargs") or {}).items():
        kwargs.setdefault(key, value)
    model = timm.create_model(name, pretrained=False, **{"num_classes": 0, **kwargs})
    state, resampled = fit_pos_embed(model, read_state(path), str(path))
    if resampled:
        log.info(resampled)
    load_strict(model, state, str(path))
    return apply_pool(model, pool, str(path))
