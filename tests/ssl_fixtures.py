"""Shared helpers of the pretraining tests: tiny random JPEG shards and tiny recipes."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from PIL import Image

from ssl_benthic.config import from_dict
from ssl_benthic.data.shards import ShardSample, write_shards
from ssl_benthic.pretrain_config import PretrainConfig

TINY_PARAMS: dict[str, dict[str, Any]] = {
    "byol": dict(proj_hidden_dim=32, proj_dim=16, pred_hidden_dim=32),
    "mocov2": dict(proj_hidden_dim=32, proj_dim=16, memory_bank_size=32),
    "mocov3": dict(proj_hidden_dim=32, proj_dim=16, pred_hidden_dim=32),
    "dino": dict(hidden_dim=32, bottleneck_dim=16, output_dim=64, warmup_teacher_temp_epochs=0),
    "barlowtwins": dict(proj_hidden_dim=32, proj_dim=32),
    "simclr": dict(proj_hidden_dim=32, proj_dim=16),
    "simsiam": dict(proj_hidden_dim=32, proj_dim=16, pred_hidden_dim=8),
}
SUBSTRATES = [
    "[SUBSTRATE] > Substrate > Unconsolidated (soft) > Sand / mud (<2mm)",
    "[SUBSTRATE] > Substrate > Consolidated (hard) > Rock",
]


def jpeg(rng: np.random.Generator, size: int = 32, tint: int | None = None) -> bytes:
    pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    if tint is not None:  # a class-dependent colour, so features can separate classes
        pixels[..., tint] = 255
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG")
    return buf.getvalue()


def make_shards(
    out: Path, n: int = 32, per_shard: int = 4, seed: int = 0, labelled: bool = False
) -> Path:
    """`n` random 32x32 JPEGs in shards of `per_shard`; labelled ones get a substrate path (2 classes)."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        meta: dict[str, Any] = {"dataset": "test", "index": i}
        if labelled:
            meta["labels"] = {"substrate": [SUBSTRATES[i % 2]]}
        samples.append(
            ShardSample(
                f"s{seed}_{i:05d}", jpeg(rng, tint=i % 2 if labelled else None), "jpg", meta
            )
        )
    write_shards(samples, out, name="t", max_per_shard=per_shard)
    return out


def tiny_config(name: str, shards: Path, out: Path, **sections: dict[str, Any]) -> PretrainConfig:
    """A CPU recipe: resnet10t at 32 px, batch 4, 2 steps per epoch."""
    data: dict[str, Any] = {
        "method": {"name": name, "params": TINY_PARAMS[name]},
        "backbone": {"name": "resnet10t"},
        "data": {
            "shards": str(shards),
            "batch_size": 4,
            "num_workers": 0,
            "shuffle_buffer": 8,
            "epoch_samples": 8,
        },
        "transform": {"input_size": 32, "local_crop_size": 16, "n_local_views": 2},
        "optimizer": {"name": "sgd", "lr": 0.1, "warmup_steps": 1},
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "max_epochs": 2,
            "log_every_n_steps": 1,
            "checkpoint_every_n_steps": 2,
            "keep_last_k": 2,
            "deterministic": True,
        },
        "logger": {"csv": True, "tensorboard": False},
        "output_dir": str(out),
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return from_dict(PretrainConfig, data)


class Crash(pl.Callback):
    """Kills training when step `k + 1` is about to start (the checkpoint of step k is on disk)."""

    def __init__(self, k: int) -> None:
        self.k = k

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.k:
            raise RuntimeError("simulated crash")
