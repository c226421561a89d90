"""Inference with a fine-tuned checkpoint, the one path `evaluate` and `predict` share: load the model
with the preprocessing, hierarchies, temperatures and thresholds stored in it, then turn images into
constrained (calibrated) probabilities per head, in batches, on the GPU when there is one. A
checkpoint written before calibration existed has no temperatures: T = 1.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from hml_finetune.finetune.config import FinetuneConfig
from hml_finetune.finetune.labels import hierarchy_from_dict
from hml_finetune.finetune.model import HMLModel, autocast, image_transform
from hml_finetune.hml.hierarchy import Hierarchy
from hml_finetune.hml.schemes import Scheme, scheme_from_record
from ssl_benthic.core.config import from_dict
from ssl_benthic.core.devices import pick_device
from ssl_benthic.core.errors import ConfigError
from ssl_benthic.weights.backbones import create_backbone

__all__ = [
    "Finetuned",
    "load_finetuned",
    "load_for_inference",
    "predict_batch",
    "batch_features",
    "features",
    "probabilities",
    "concat",
]

Probs = dict[str, torch.Tensor]


def _read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's dict, or a ConfigError saying what the file is and what is expected."""
    if not path.is_file():
        raise ConfigError(f"checkpoint not found: {path}")
    expected = "a model.ckpt written by `hml-finetune train` (or its checkpoints/last.ckpt)"
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - not a torch file, or a pickled object: same answer
        raise ConfigError(
            f"{path}: not a PyTorch checkpoint that loads with weights_only=True "
            f"({type(exc).__name__}); expected {expected}"
        ) from None
    if isinstance(ckpt, dict) and "hml_finetune" in ckpt:
        return ckpt
    if isinstance(ckpt, dict) and "ssl_benthic" in ckpt:
        what = "an ssl-benthic pretraining checkpoint (a backbone without heads)"
    else:
        what = "a checkpoint without an 'hml_finetune' entry"
    raise ConfigError(f"{path}: {what}; expected {expected}")


def load_finetuned(path: str | Path) -> tuple[HMLModel, dict[str, Hierarchy], dict[str, Any]]:
    """(model in eval mode, hierarchies, meta) from model.ckpt or a Lightning checkpoint of
    `run_finetune`; the hierarchies come from the checkpoint, never from a scheme file."""
    path = Path(path)
    ckpt = _read_checkpoint(path)
    meta = ckpt["hml_finetune"]
    cfg = from_dict(FinetuneConfig, meta["config"], source=f"{path} [hml_finetune.config]")
    hierarchies = {h: hierarchy_from_dict(d) for h, d in meta["hierarchies"].items()}
    backbone = create_backbone(
        cfg.backbone.name, weights="random", pool=cfg.backbone.pool, **meta["backbone_kwargs"]
    )
    model = HMLModel(backbone, hierarchies, cfg.heads, True, meta.get("single") or {})
    state = ckpt["state_dict"]
    if any(k.startswith("model.") for k in state):
        state = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    model.load_state_dict(state)
    model.temperatures = {h: float(t) for h, t in (meta.get("temperatures") or {}).items()}
    return model.eval(), hierarchies, meta


@dataclass
class Finetuned:
    """A loaded model with what inference needs from its checkpoint: the eval transform (the
    training normalisation), the decision threshold of each head and the rule that set it."""

    model: HMLModel
    hierarchies: dict[str, Hierarchy]
    meta: dict[str, Any]
    cfg: FinetuneConfig
    transform: Callable[[Image.Image], torch.Tensor]
    thresholds: dict[str, float | torch.Tensor]
    rules: dict[str, str]
    device: torch.device
    schemes: dict[str, Scheme]


def _stored_thresholds(
    meta: dict[str, Any], cfg: FinetuneConfig, hierarchies: dict[str, Hierarchy], source: str
) -> tuple[dict[str, float | torch.Tensor], dict[str, str]]:
    """Thresholds and rules stored by training; a training checkpoint has none: the recipe's fixed
    threshold, or 0.5, with a warning."""
    stored = meta.get("thresholds") or {}
    fixed = float(cfg.threshold) if cfg.threshold not in ("global", "per-node") else 0.5
    if not stored:
        warnings.warn(
            f"{source}: no tuned thresholds stored (a training checkpoint): using {fixed:g}",
            stacklevel=3,
        )
    known = meta.get("threshold_rules") or {}
    thresholds: dict[str, float | torch.Tensor] = {}
    rules = {}
    for h in hierarchies:
        value = stored.get(h, fixed)
        thresholds[h] = torch.tensor(value) if isinstance(value, list) else float(value)
        rules[h] = known.get(h) or ("stored" if h in stored else f"fixed {fixed:g}")
    return thresholds, rules


def load_for_inference(path: str | Path, device: str = "auto") -> Finetuned:
    """A checkpoint ready to predict: model on `device`, transform, thresholds."""
    model, hierarchies, meta = load_finetuned(path)
    cfg = from_dict(FinetuneConfig, meta["config"], source=str(path))
    thresholds, rules = _stored_thresholds(meta, cfg, hierarchies, str(path))
    transform = image_transform(cfg.data.img_size, meta["mean"], meta["std"], augment=False)
    where = pick_device(device)
    schemes = _schemes(meta, cfg, hierarchies)
    return Finetuned(
        model.to(where), hierarchies, meta, cfg, transform, thresholds, rules, where, schemes
    )


def _schemes(
    meta: dict[str, Any], cfg: FinetuneConfig, hierarchies: dict[str, Hierarchy]
) -> dict[str, Scheme]:
    """Each head's scheme as the checkpoint recorded it (older checkpoints: CATAMI paths as they
    are, flat heads as class names)."""
    records = meta.get("schemes") or {}
    out = {}
    for head in hierarchies:
        default = {"name": "data", "flat": True} if head in cfg.heads.flat else None
        out[head] = scheme_from_record(head, records.get(head, default))
    return out


@torch.no_grad()
def batch_features(f: Finetuned, x: torch.Tensor) -> torch.Tensor:
    """Backbone features (B, D) float32 on the model's device of transformed images (B, 3, H, W)."""
    x = x.to(f.device, non_blocking=True)
    with autocast(f.device, f.cfg.trainer.precision):
        return f.model.backbone(x).float()


@torch.no_grad()
def predict_batch(f: Finetuned, x: torch.Tensor) -> Probs:
    """Calibrated probabilities per head (on the CPU) of a batch of transformed images."""
    return {h: p.cpu() for h, p in f.model.predict_features(batch_features(f, x)).items()}


def features(
    f: Finetuned, images: Iterable[tuple[Any, Image.Image]], batch_size: int
) -> tuple[list[Any], torch.Tensor]:
    """(items, backbone features (N, D) on the CPU) of every (item, image) pair, in order: for
    scoring the same images with and without calibration."""
    items, batch, parts = [], [], []
    for item, image in images:
        items.append(item)
        batch.append(f.transform(image))
        if len(batch) == batch_size:
            parts.append(batch_features(f, torch.stack(batch)).cpu())
            batch = []
    if batch:
        parts.append(batch_features(f, torch.stack(batch)).cpu())
    return items, torch.cat(parts) if parts else torch.zeros(0, 0)


def probabilities(
    f: Finetuned, images: Iterable[tuple[Any, Image.Image]], batch_size: int
) -> Iterator[tuple[list[Any], Probs]]:
    """(items, probabilities per head) for each batch of `batch_size` (item, image) pairs, in
    order: per HML head the constrained probabilities (B, K), per single-label head the softmax."""
    items, batch = [], []
    for item, image in images:
        items.append(item)
        batch.append(f.transform(image))
        if len(batch) == batch_size:
            yield items, predict_batch(f, torch.stack(batch))
            items, batch = [], []
    if batch:
        yield items, predict_batch(f, torch.stack(batch))


def concat(batches: Iterable[tuple[list[Any], Probs]]) -> tuple[list[Any], Probs]:
    """All batches of `probabilities` joined: (items, probabilities (N, K) per head)."""
    items: list[Any] = []
    parts: dict[str, list[torch.Tensor]] = {}
    for batch_items, probs in batches:
        items += batch_items
        for head, p in probs.items():
            parts.setdefault(head, []).append(p)
    return items, {h: torch.cat(p) for h, p in parts.items()}
