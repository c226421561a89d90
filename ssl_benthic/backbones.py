"""Image backbones from `timm`: random init, ImageNet weights (hub or local file) or a stage-1 export.

Every backbone is `timm.create_model(name, num_classes=0)`, so it returns pooled features of size
`backbone.num_features` and its state dict uses timm's key naming (what `export.py` writes).
"""

from __future__ import annotations

import difflib
import json
import logging
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import load_file
from torch import nn

from ssl_benthic.errors import UserError

log = logging.getLogger(__name__)

__all__ = [
    "BackboneError",
    "create_backbone",
    "feature_dim",
    "check_model_name",
    "read_export",
    "load_backbone_weights",
]

EXPORT_WEIGHTS = "backbone.safetensors"
EXPORT_META = "backbone.json"


class BackboneError(UserError):
    """A backbone name, weights source or weights file is wrong; the message names it."""


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


def read_export(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """Resolve a stage-1 export (folder, or .safetensors with a sibling .json) to (weights, metadata)."""
    path = Path(path)
    if path.is_dir():
        weights, meta_path = path / EXPORT_WEIGHTS, path / EXPORT_META
    else:
        weights, meta_path = path, path.with_suffix(".json")
    if not weights.is_file():
        raise BackboneError(f"weights file not found: {weights}")
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return weights, meta


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise BackboneError(f"{path}: expected a state dict of tensors")
    return state


def load_backbone_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load `state` into `model`: fail on a shape mismatch (naming the key), warn on missing/extra keys."""
    own = model.state_dict()
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            raise BackboneError(
                f"{source}: shape mismatch at '{key}': file has {tuple(value.shape)}, "
                f"model has {tuple(own[key].shape)}"
            )
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys:
        log.warning("%s: missing keys (left at init): %s", source, ", ".join(result.missing_keys))
    if result.unexpected_keys:
        log.warning("%s: unexpected keys (ignored): %s", source, ", ".join(result.unexpected_keys))


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
    **kw: Any,
) -> nn.Module:
    """A timm backbone without classifier; `weights` is "random", "imagenet" or a path.

    A path is a stage-1 export (folder or .safetensors + JSON) or a plain state dict file; ViT options
    (img_size, patch_size) come from the export's JSON unless given here.
    """
    check_model_name(name)
    kwargs = dict(kw)
    if drop_path_rate:
        kwargs["drop_path_rate"] = drop_path_rate
    if img_size is not None:
        kwargs["img_size"] = img_size
    weights = str(weights)
    if weights == "random":
        return timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    if weights == "imagenet":
        return _imagenet(name, weights_file, kwargs)
    path, meta = read_export(weights)
    if meta.get("timm_name", name) != name:
        raise BackboneError(
            f"{path}: export was trained as '{meta['timm_name']}', not '{name}' (set backbone name)"
        )
    for key, value in (meta.get("model_kwargs") or {}).items():
        kwargs.setdefault(key, value)
    model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    load_backbone_weights(model, _load_state_dict(path), str(path))
    return model
