"""Linear-probe features: one pass of a frozen backbone over a split, kept on disk between runs.

A frozen encoder in eval mode is a fixed function of the image, so the features of a split are
computed once (`extract_features`) and, when `data.feature_cache_dir` is set, saved as safetensors
named by a hash of everything that changes them (`cached_features`); `compare` shares one cache
between its cells.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from hml_finetune.finetune.config import BackboneConfig, FinetuneConfig
from hml_finetune.finetune.model import autocast, image_transform
from ssl_benthic.core.errors import DataError
from ssl_benthic.core.files import write_atomic
from ssl_benthic.data.shards.reader import iter_samples
from ssl_benthic.weights.backbones import read_export

__all__ = ["cached_features", "extract_features"]


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    shards: str | Path,
    transform: Callable,
    batch_size: int,
    device: torch.device | str = "cpu",
    precision: str = "32-true",
) -> tuple[torch.Tensor, list[str]]:
    """(features (N, D) float32 on CPU, keys) of every sample of `shards`, in shard order, with the
    backbone in eval mode (the caller's train/eval state is restored)."""
    device = torch.device(device)
    was_training = backbone.training
    backbone.eval()
    feats, keys, batch = [], [], []

    def flush() -> None:
        x = torch.stack(batch).to(device)
        with autocast(device, precision):
            feats.append(backbone(x).float().cpu())
        batch.clear()

    for key, image, _ in iter_samples(shards):
        keys.append(key)
        batch.append(transform(image))
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    backbone.train(was_training)
    if not feats:
        raise DataError(f"{shards}: no readable samples")
    return torch.cat(feats), keys


def _weights_stamp(cfg: BackboneConfig) -> list[int] | None:
    """(size, mtime) of the weights file, so an export re-made at the same path is not mistaken
    for the old one."""
    if cfg.weights == "random" or (cfg.weights == "imagenet" and cfg.weights_file is None):
        return None
    path = Path(cfg.weights_file) if cfg.weights == "imagenet" else read_export(cfg.weights)[0]
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _cache_name(cfg: FinetuneConfig, shards: str, mean: list, std: list) -> str:
    """Hash of everything that changes the features of a split."""
    manifest = Path(shards) / "manifest.json"
    ident = {
        "backbone": [cfg.backbone.name, cfg.backbone.weights, cfg.backbone.img_size]
        + ([cfg.backbone.pool] if cfg.backbone.pool != "cls" else []),
        "weights_stamp": _weights_stamp(cfg.backbone),
        "noise": cfg.encoder_noise,
        "seed": cfg.seed if cfg.encoder_noise or cfg.backbone.weights == "random" else None,
        "img_size": cfg.data.img_size,
        "norm": [mean, std],
        "shards": str(Path(shards).resolve()),
        "manifest": manifest.read_text() if manifest.is_file() else "",
        "batch": cfg.data.batch_size,
        "precision": cfg.trainer.precision,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]


def cached_features(
    cfg: FinetuneConfig,
    backbone: nn.Module,
    shards: str,
    mean: list,
    std: list,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, list[str]]:
    """`extract_features` with the eval transform, kept under data.feature_cache_dir when set
    (safetensors named by a hash of backbone, weights, noise, size, statistics and shards)."""
    transform = image_transform(cfg.data.img_size, mean, std, augment=False)
    args = (backbone, shards, transform, cfg.data.batch_size, device, cfg.trainer.precision)
    if cfg.data.feature_cache_dir is None:
        return extract_features(*args)
    path = Path(cfg.data.feature_cache_dir) / f"{_cache_name(cfg, shards, mean, std)}.safetensors"
    if path.is_file():
        keys = json.loads(path.with_suffix(".json").read_text())
        return load_file(str(path))["features"], keys
    feats, keys = extract_features(*args)
    path.parent.mkdir(parents=True, exist_ok=True)
    # each file written whole then renamed: processes sharing the cache (a job array) never read
    # a half-written one; the features file last, as it marks the entry complete
    write_atomic(path.with_suffix(".json"), json.dumps(keys))
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp")
    save_file({"features": feats.contiguous()}, str(tmp))
    os.replace(tmp, path)
    return feats, keys
