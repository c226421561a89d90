"""Images/s of `make-shards --resize` with several `--workers` on the same input, and their sha256.

Draws its own input: N JPEG photographs (512 x 384 px, quality 90; smooth colour fields from a
small random image upscaled, plus grain, so they compress like photographs), listed in a CSV. Then
runs `make_shards_from_csv(..., resize=PX, workers=W)` for each W, `--repeat` times in turns
(1, 2, 1, 2, ...) in this one process, and keeps each W's fastest run (the least disturbed by other
jobs on the machine). Every run's files must be byte-identical (sha256 of the shards and the
manifest); the table says so. The time is the writing (decode, resize, encode, tar); `make-shards`
then verifies what it wrote (with as many workers), timed once per worker count.

    .venv/bin/python bench/sharding.py [--images 800] [--resize 256] [--workers 1,2] [--repeat 3]
        [--out bench/results/sharding.md]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ssl_benthic.data.shards.verify import verify_shards
from ssl_benthic.data.sources.tables import make_shards_from_csv


def draw_photo(i: int, size: tuple[int, int] = (512, 384)) -> bytes:
    """A JPEG that compresses like a photograph: a 6 x 8 random colour field upscaled, plus grain."""
    rng = np.random.default_rng(i)
    field = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    smooth = np.asarray(field.resize(size, Image.Resampling.BICUBIC), dtype=np.int16)
    grain = rng.integers(-12, 13, smooth.shape, dtype=np.int16)
    pixels = np.clip(smooth + grain, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def write_input(root: Path, n: int) -> Path:
    """`n` photographs under `root/images/` and `root/images.csv` listing them with a label."""
    (root / "images").mkdir(parents=True)
    lines = ["image,catami_biota"]
    for i in range(n):
        (root / "images" / f"photo{i:05d}.jpg").write_bytes(draw_photo(i))
        lines.append(f"photo{i:05d}.jpg,[BIOTA] > Biota > C{i % 7}")
    (root / "images.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root / "images.csv"


def digest(folder: Path) -> str:
    """One sha256 over every file of a shard folder (names and bytes, in name order)."""
    h = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def run_once(csv_path: Path, out: Path, resize: int, workers: int) -> tuple[int, float]:
    """(samples written, seconds) of one `make_shards_from_csv` run into a fresh `out`."""
    start = time.perf_counter()
    manifest = make_shards_from_csv(
        csv_path,
        csv_path.parent / "images",
        out,
        label_columns={"catami_biota": "biota"},
        resize=resize,
        workers=workers,
        max_per_shard=200,
        overwrite=True,
    )
    return manifest["num_samples"], time.perf_counter() - start


def bench(root: Path, n: int, resize: int, workers: list[int], repeat: int) -> dict:
    """Best seconds and the digests per worker count, and the verify time of one output."""
    csv_path = write_input(root, n)
    best: dict[int, float] = {}
    digests: dict[int, set[str]] = {w: set() for w in workers}
    for _ in range(repeat):
        for w in workers:
            count, seconds = run_once(csv_path, root / f"out{w}", resize, w)
            assert count == n, f"{count} of {n} images written"
            best[w] = min(best.get(w, seconds), seconds)
            digests[w].add(digest(root / f"out{w}"))
    verify = {}
    for w in workers:
        start = time.perf_counter()
        assert verify_shards(root / f"out{w}", workers=w).ok
        verify[w] = time.perf_counter() - start
    return {"best": best, "digests": digests, "verify": verify}


def table(result: dict, n: int, resize: int, repeat: int) -> str:
    """The markdown table: images/s per worker count, ratio to the first, identical sha256."""
    best, digests = result["best"], result["digests"]
    first = next(iter(best))
    every = set().union(*digests.values())
    lines = [
        f"input: {n} JPEG photographs 512 x 384 px, `--resize {resize}`; best of {repeat} runs "
        f"each, in turns; cpus: {os.cpu_count()}",
        "",
        "| workers | images | seconds | images/s | ratio to first | verify seconds | sha256 |",
        "|---|---|---|---|---|---|---|",
    ]
    for w, seconds in best.items():
        shown = ", ".join(sorted(d[:12] for d in digests[w]))
        lines.append(
            f"| {w} | {n} | {seconds:.2f} | {n / seconds:.0f} | "
            f"{best[first] / seconds:.2f} | {result['verify'][w]:.2f} | {shown} |"
        )
    lines += [
        "",
        f"seconds: writing (decode, resize, encode, tar); verify seconds: `verify_shards` of that "
        f"output with as many workers, once (`make-shards` verifies after writing). "
        f"sha256 of every run's shards and manifest: {'identical' if len(every) == 1 else 'DIFFERENT'}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=800)
    p.add_argument("--resize", type=int, default=256)
    p.add_argument("--workers", default="1,2", help="worker counts, the first is the baseline")
    p.add_argument("--repeat", type=int, default=3, help="runs per worker count (best kept)")
    p.add_argument("--out", default=None, help="also write the table (markdown) to this file")
    args = p.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",")]
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        result = bench(Path(tmp), args.images, args.resize, workers, args.repeat)
    load = f"load average (1 min) {load:.2f} before, {os.getloadavg()[0]:.2f} after"
    text = table(result, args.images, args.resize, args.repeat) + f"; {load}"
    print(text)
    if args.out:
        command = " ".join(["python bench/sharding.py", *(sys.argv[1:] if argv is None else argv)])
        Path(args.out).write_text(f"Command: `{command}`\n\n{text}\n")
    return 0 if len(set().union(*result["digests"].values())) == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
