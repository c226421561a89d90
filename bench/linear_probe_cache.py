"""Epochs per second of the linear probe on cached features vs on images (uncached), one process.

Both runs train the same heads through the same Trainer on the same split; the cached run first
extracts the features once (reported separately), the uncached one runs the frozen backbone on
every batch. Target: cached / uncached >= 10x.

    OMP_NUM_THREADS=1 .venv/bin/python bench/linear_probe_cache.py [--shards shards/sample]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl

from hml_finetune.finetune.config import FinetuneConfig
from hml_finetune.finetune.train import run_finetune
from ssl_benthic.core.config import apply_overrides, from_dict
from ssl_benthic.data.sample.make_sample import make_sample


class EpochTimer(pl.Callback):
    """Wall time of each training epoch (data loading included, start-up excluded)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.times.append(time.perf_counter() - self.start)


def config(shards: Path, out: Path, args: argparse.Namespace, *overrides: str) -> FinetuneConfig:
    raw = {
        "backbone": {"name": args.backbone},
        "mode": "linear",
        "data": {
            "train": str(shards / "train"),
            "val": str(shards / "val"),
            "test": str(shards / "test"),
            "batch_size": 32,
            "num_workers": 0,
            "img_size": args.img_size,
        },
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "enable_progress_bar": False,
            "checkpoint_every_n_epochs": 1000,
        },
        "output_dir": str(out),
    }
    return from_dict(FinetuneConfig, apply_overrides(FinetuneConfig, raw, overrides))


def timed(cfg: FinetuneConfig) -> tuple[float, float]:
    """(median seconds per epoch, total seconds of the run)."""
    timer = EpochTimer()
    start = time.perf_counter()
    run_finetune(cfg, callbacks=[timer])
    return statistics.median(timer.times[1:] or timer.times), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", default=None, help="sample root with train/val/test")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--n-labelled", type=int, default=600, help="when making a sample")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        shards = Path(args.shards) if args.shards else Path(tmp) / "sample"
        if not args.shards:
            make_sample(
                shards, seed=0, n_unlabelled=0, n_labelled=args.n_labelled, size=args.img_size
            )
        cached, cached_total = timed(config(shards, Path(tmp) / "c", args, "trainer.max_epochs=20"))
        uncached, uncached_total = timed(
            config(shards, Path(tmp) / "u", args, "trainer.max_epochs=3", "cache_features=false")
        )
    print(f"\n{args.backbone} at {args.img_size} px, linear probe, batch 32, CPU")
    print("| probe | s / epoch | epochs / s | whole run (s) |")
    print("|---|---|---|---|")
    print(f"| cached features | {cached:.4f} | {1 / cached:.1f} | {cached_total:.1f} (20 epochs) |")
    print(
        f"| uncached images | {uncached:.4f} | {1 / uncached:.2f} | {uncached_total:.1f} (3 epochs) |"
    )
    print(f"ratio cached / uncached epochs per second: {uncached / cached:.1f}x (target >= 10x)")


if __name__ == "__main__":
    main()
