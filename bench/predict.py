"""How much of `hml-finetune predict`'s time is spent outside the model: images/s of `predict` on a
folder of JPEGs against the same model's forward pass on pre-decoded, pre-transformed tensors, in one
process (CPU here, the GPU when there is one).

    OMP_NUM_THREADS=1 python bench/predict.py --images 256 --size 384 --num-workers 0
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from argparse import Namespace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hml_finetune.finetune.config import FinetuneConfig
from hml_finetune.finetune.inference import load_for_inference, predict_batch
from hml_finetune.finetune.train import run_finetune
from hml_finetune.predict.run import run_predict
from ssl_benthic.core.config import apply_overrides, from_dict
from ssl_benthic.data.sample.make_sample import make_sample


def tiny_model(root: Path, backbone: str, img_size: int) -> Path:
    """A linear probe on the sample (the weights do not matter for speed); its model.ckpt."""
    make_sample(root / "sample", n_unlabelled=0, n_labelled=120, size=64)
    raw = {
        "backbone": {"name": backbone},
        "data": {
            "train": str(root / "sample" / "train"),
            "val": str(root / "sample" / "val"),
            "test": str(root / "sample" / "test"),
            "batch_size": 16,
            "num_workers": 0,
            "img_size": img_size,
        },
        "trainer": {"accelerator": "cpu", "max_epochs": 1, "enable_progress_bar": False},
        "output_dir": str(root / "run"),
    }
    run_finetune(from_dict(FinetuneConfig, apply_overrides(FinetuneConfig, raw, [])))
    return root / "run" / "model.ckpt"


def write_images(folder: Path, n: int, size: int) -> None:
    """`n` JPEG photographs of `size` px (noise with structure, quality 90)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    base = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
    for i in range(n):
        tile = np.roll(base, i, axis=0).repeat(8, 0).repeat(8, 1)
        noise = rng.integers(0, 32, tile.shape, dtype=np.uint8)
        Image.fromarray(tile + noise).save(folder / f"img{i:05d}.jpg", quality=90)


def forward_only(ckpt: Path, folder: Path, batch_size: int, device: str) -> float:
    """Images/s of the model alone: the same images decoded and transformed beforehand."""
    f = load_for_inference(ckpt, device)
    tensors = [f.transform(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.jpg"))]
    batches = [torch.stack(tensors[i : i + batch_size]) for i in range(0, len(tensors), batch_size)]
    predict_batch(f, batches[0])  # warm-up
    start = time.perf_counter()
    for x in batches:
        predict_batch(f, x)
    return len(tensors) / (time.perf_counter() - start)


def end_to_end(ckpt: Path, folder: Path, out: Path, args: argparse.Namespace) -> float:
    """Images/s of `predict` itself: read, decode, transform, predict, write a CSV."""
    ns = Namespace(
        checkpoint=str(ckpt), images=str(folder), shards=None, coralnet=None, squidle=None,
        images_root=None, image_column=None, patch=224, resize=0, out=str(out), format="csv",
        top_k=5, batch_size=args.batch_size, num_workers=args.num_workers, device=args.device,
        overwrite=True,
    )  # fmt: skip
    summary = run_predict(ns)
    return summary.images / summary.seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--size", type=int, default=384, help="side of the JPEGs")
    p.add_argument("--img-size", type=int, default=224, help="the model's input size")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ckpt = tiny_model(root, args.backbone, args.img_size)
        write_images(root / "images", args.images, args.size)
        model, full = [], []
        for _ in range(args.repeats):
            model.append(forward_only(ckpt, root / "images", args.batch_size, args.device))
            full.append(end_to_end(ckpt, root / "images", root / "p.csv", args))
    m, e = max(model), max(full)
    device = "cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu"
    print(f"\n{args.backbone} at {args.img_size} px from {args.size} px JPEGs, {device}, batch "
          f"{args.batch_size}, {args.num_workers} loader workers, best of {args.repeats}")  # fmt: skip
    print("| path | images/s |\n|---|---|")
    print(f"| model forward on pre-decoded tensors | {m:.1f} |")
    print(f"| `predict` end to end (decode, transform, predict, write) | {e:.1f} |")
    print(f"share of time outside the model: {1 - e / m:.0%} (ratio {e / m:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
