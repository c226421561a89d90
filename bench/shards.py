"""Images/s for reading + decoding a shard folder vs the same images as loose files on disk.

Runs the shard reader (`make_loader`) and a plain map-style DataLoader over loose files with 0, 1
and 2 loader workers, in one process, and prints each as a ratio to the loose-file 0-worker run.
Both paths decode to RGB PIL and convert to a uint8 tensor; both read from a warm page cache.

    .venv/bin/python bench/shards.py [--shards shards/sample/unlabelled] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.functional import pil_to_tensor

from ssl_benthic.data.shards.format import check_key
from ssl_benthic.data.shards.reader import (
    IMAGE_EXTS,
    iter_samples,
    load_manifest,
    make_loader,
    open_image,
)


class LooseFiles(Dataset):
    """Map-style dataset of image files: decode with the reader's `open_image`, then to tensor."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return pil_to_tensor(open_image(self.paths[i].read_bytes()))


def write_loose(shards: Path, out: Path) -> list[Path]:
    """Write every image of the shard folder to `out` as KEY.EXT (original bytes)."""
    import tarfile

    paths = []
    for entry in load_manifest(shards)["shards"]:
        with tarfile.open(shards / entry["file"]) as tar:
            for member in tar:
                stem, _, ext = member.name.partition(".")
                if member.isreg() and ext in IMAGE_EXTS:
                    path = out / f"{check_key(stem)}.{ext}"
                    path.write_bytes(tar.extractfile(member).read())
                    paths.append(path)
    return sorted(paths)


def time_loader(loader, epochs: int) -> tuple[int, float]:
    """(images, seconds) over `epochs` passes, worker start-up included."""
    n, start = 0, time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            images = batch[0] if isinstance(batch, tuple | list) else batch
            n += images.shape[0]
    return n, time.perf_counter() - start


def run(shards: Path, batch_size: int, epochs: int, workers: list[int]) -> list[tuple]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_loose(shards, Path(tmp))
        for w in workers:
            loose = DataLoader(
                LooseFiles(paths), batch_size=batch_size, num_workers=w, drop_last=True
            )
            rows.append(("loose files", w, *time_loader(loose, epochs)))
        for w in workers:
            loader = make_loader(
                shards,
                batch_size=batch_size,
                transform=pil_to_tensor,
                num_workers=w,
                rank=0,
                world_size=1,
            )
            rows.append(("shards", w, *time_loader(loader, epochs)))
    return rows


def table(rows: list[tuple], shards: Path) -> str:
    base = rows[0][2] / rows[0][3]
    manifest = load_manifest(shards)
    lines = [
        f"shards: {shards} ({manifest['num_samples']} images in {len(manifest['shards'])} shards); "
        f"cpus: {os.cpu_count()}; torch {torch.__version__}",
        "",
        "| source | workers | images | seconds | images/s | ratio to loose, 0 workers |",
        "|---|---|---|---|---|---|",
    ]
    for source, w, n, s in rows:
        lines.append(f"| {source} | {w} | {n} | {s:.2f} | {n / s:.0f} | {n / s / base:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", default="shards/sample/unlabelled", help="folder with manifest.json")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=2, help="passes per configuration")
    p.add_argument("--workers", default="0,1,2", help="loader worker counts to try")
    p.add_argument("--out", default=None, help="also write the table (markdown) to this file")
    args = p.parse_args(argv)
    shards = Path(args.shards)
    if not (shards / "manifest.json").is_file():
        print(f"no manifest.json in {shards}; run `ssl-benthic make-sample` first", file=sys.stderr)
        return 2
    sum(1 for _ in iter_samples(shards, decode=False))  # warm the page cache
    workers = [int(w) for w in args.workers.split(",")]
    text = table(run(shards, args.batch_size, args.epochs, workers), shards)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
