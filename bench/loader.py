"""Loader images/s per CPU core in each `transform.device` mode, and CPU cores per GPU at 1,400 images/s.

One process, `num_workers` 0, one thread (run with OMP_NUM_THREADS=1), the shard reader as training uses
it (tar reading, shuffle buffer, batches of 32), from shards pre-resized to a short side of 256 / 384 /
512 px (the sample's images drawn once at the largest size, then re-encoded smaller at JPEG quality 90
as `make-shards --resize` does), every method's views at 224 px (DINO: 2 x 224 + 6 x 96):
(a) decode only; (b) `transform.device: accelerator`'s worker half: decode + every view's random
resized crop to uint8; (c) `transform.device: cpu`: decode + the method's full lightly transform.
Each cell is the median of `--repeats` passes over the same images, (b) and (c) alternating, so a busy
machine affects both alike; cores per GPU = 1400 / images/s. Target: (b) >= 3.5x (c) for BYOL at 384 px.

    OMP_NUM_THREADS=1 .venv/bin/python bench/loader.py [--images 192 --repeats 3 --sizes 256 384 512]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ssl_benthic.data.images import resized_jpeg
from ssl_benthic.data.sample.make_sample import make_sample
from ssl_benthic.data.shards.format import ShardSample
from ssl_benthic.data.shards.reader import iter_samples, make_loader
from ssl_benthic.data.shards.writer import write_shards
from ssl_benthic.pretrain.augment import WorkerCrops, make_crop_loader, plan_views
from ssl_benthic.pretrain.config import TransformConfig
from ssl_benthic.pretrain.methods import get_method

METHODS = ["byol", "mocov2", "mocov3", "dino", "barlowtwins", "simclr", "simsiam"]
GPU_RATE = 1400.0  # images/s one GPU trains BYOL ResNet-50 at 224 px (the figure)
BATCH = 32


def make_shards(root: Path, sizes: list[int], images: int) -> dict[int, Path]:
    """Shard folders of the same drawn images at each short side (the largest drawn, the rest re-encoded)."""
    largest = max(sizes)
    make_sample(root / "drawn", n_unlabelled=images, n_labelled=0, size=largest, max_per_shard=32)
    drawn = root / "drawn" / "unlabelled"
    out = {largest: drawn}
    for size in sizes:
        if size != largest:
            samples = (
                ShardSample(key, resized_jpeg(image, size, quality=90), "jpg", {})
                for key, image, _ in iter_samples(drawn)
            )
            write_shards(samples, root / f"s{size}", name="s", max_per_shard=32)
            out[size] = root / f"s{size}"
    return out


def images_per_s(make: Callable[[], object]) -> float:
    """Images/s of one pass over a freshly built loader."""
    loader = make()
    start, n = time.perf_counter(), 0
    for _batch in loader:
        n += BATCH  # the reader's batches are always full
    return n / (time.perf_counter() - start)


def loaders(shards: Path, method: str) -> dict[str, Callable[[], object]]:
    """Loader factories of the three modes for one method (decode-only ignores the method)."""
    transform = get_method(method).build_transform(TransformConfig(input_size=224))
    crops = WorkerCrops(plan_views(transform))
    common = dict(batch_size=BATCH, num_workers=0, shuffle_buffer=64, rank=0, world_size=1)
    return {
        "decode": lambda: make_loader(shards, transform=None, **common),
        "accelerator": lambda: make_crop_loader(shards, crops=crops, **common),
        "cpu": lambda: make_loader(shards, transform=transform, **common),
    }


def measure(shards: dict[int, Path], repeats: int) -> list[dict]:
    """Median images/s of every (size, method, mode); decode-only once per size."""
    rows = []
    for size, folder in sorted(shards.items()):
        images_per_s(loaders(folder, "byol")["decode"])  # warm the page cache
        decode = statistics.median(
            images_per_s(loaders(folder, "byol")["decode"]) for _ in range(repeats)
        )
        for method in METHODS:
            make = loaders(folder, method)
            runs: dict[str, list[float]] = {"accelerator": [], "cpu": []}
            for _ in range(repeats):
                for mode in runs:
                    runs[mode].append(images_per_s(make[mode]))
            row = {"size": size, "method": method, "decode": decode}
            row.update({mode: statistics.median(v) for mode, v in runs.items()})
            rows.append(row)
            print(
                f"{size} px {method:12s} decode {decode:7.1f}  accelerator {row['accelerator']:7.1f}"
                f"  cpu {row['cpu']:7.1f} images/s",
                flush=True,
            )
    return rows


def table(rows: list[dict], images: int, repeats: int) -> str:
    """The markdown table with its command and conditions."""
    lines = [
        "# Loader throughput per CPU core (`bench/loader.py`)",
        "",
        f"`OMP_NUM_THREADS=1 .venv/bin/python bench/loader.py --images {images} --repeats {repeats}`",
        "",
        f"One process, num_workers 0, torch threads {torch.get_num_threads()}, batches of {BATCH}, "
        f"{images} images per pass, median of {repeats} passes. Views at 224 px (DINO: 2 x 224 + 6 x 96). "
        "(a) decode only; (b) `transform.device: accelerator` worker half (decode + random resized "
        "crops to uint8); (c) `transform.device: cpu` (decode + the full lightly transform). "
        f"Cores per GPU = {GPU_RATE:.0f} / images/s. The sample's synthetic JPEGs decode faster "
        "than photographs, so on real shards (a) and (b), which decoding dominates, are lower.",
        "",
        "| short side | method | (a) decode img/s | (b) accelerator img/s | (c) cpu img/s | (b)/(c) "
        "| cores/GPU (b) | cores/GPU (c) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']} | {r['method']} | {r['decode']:.0f} | {r['accelerator']:.0f} | "
            f"{r['cpu']:.0f} | {r['accelerator'] / r['cpu']:.2f}x | "
            f"{GPU_RATE / r['accelerator']:.1f} | {GPU_RATE / r['cpu']:.1f} |"
        )
    byol = next((r for r in rows if r["method"] == "byol" and r["size"] == 384), None)
    if byol is not None:
        ratio = byol["accelerator"] / byol["cpu"]
        verdict = "met" if ratio >= 3.5 else "NOT met"
        lines += ["", f"BYOL at 384 px: (b) / (c) = {ratio:.2f}x (target >= 3.5x: {verdict})."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 384, 512])
    p.add_argument("--images", type=int, default=192, help="images per shard folder (one pass)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="bench/results/loader.md")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        shards = make_shards(Path(tmp), args.sizes, args.images)
        rows = measure(shards, args.repeats)
    text = table(rows, args.images, args.repeats)
    print("\n" + text)
    Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
