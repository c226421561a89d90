"""The embedded synthetic sample: seafloor images with CATAMI labels, written as webdataset shards.

`make_sample` writes `unlabelled/`, `train/`, `val/`, `test/` (one folder of shards + manifest.json per
split) and a top-level `manifest.json` listing the splits. Every image has its own generators, seeded
from (seed, split, index), one for its labels and one for its pixels, so the same seed gives
byte-identical shards and labels can be drawn without drawing pixels. Each labelled sample's JSON also
keeps `true_labels`, the full-depth paths before any annotation was cut or left out (for checks only;
a model must train on `labels`).
"""

from __future__ import annotations

import argparse
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssl_benthic.data.sample.camera import N_SITES, render_scene
from ssl_benthic.data.sample.labels import Scene, annotate, draw_scene
from ssl_benthic.data.shards.build import atomic_folder
from ssl_benthic.data.shards.format import ShardSample
from ssl_benthic.data.shards.writer import write_shards

SPLIT_CODES = {"unlabelled": 0, "train": 1, "val": 2, "test": 3, "survey": 4}
LABELLED_FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}
MIN_SHARDS = {
    "unlabelled": 8,
    "train": 4,
    "val": 4,
    "test": 4,
}  # >= 2 ranks x 2 workers (x2 unlabelled)
GENERATOR = "ssl_benthic.data.sample"


@dataclass(frozen=True)
class DrawnLabels:
    """What one sample shows and how it is annotated (`labels` is None for the unlabelled split)."""

    scene: Scene
    site: str
    true_labels: dict[str, list[str]]
    labels: dict[str, list[str]] | None


def split_sizes(n_unlabelled: int, n_labelled: int) -> dict[str, int]:
    """Images per split: all of `n_unlabelled`, and `n_labelled` cut 60/20/20 into train/val/test."""
    train = round(n_labelled * LABELLED_FRACTIONS["train"])
    val = round(n_labelled * LABELLED_FRACTIONS["val"])
    return {
        "unlabelled": n_unlabelled,
        "train": train,
        "val": val,
        "test": n_labelled - train - val,
    }


def _rng(seed: int, split: str, index: int, stream: int) -> np.random.Generator:
    """The generator of one image: stream 0 draws its labels, stream 1 its pixels."""
    return np.random.default_rng([seed, SPLIT_CODES[split], index, stream])


def draw_labels(
    seed: int,
    split: str,
    index: int,
    shallow_fraction: float = 0.2,
    unannotated_fraction: float = 0.1,
) -> DrawnLabels:
    """The labels of image `index` of `split`, exactly as `make_sample` writes them, without pixels."""
    rng = _rng(seed, split, index, 0)
    scene = draw_scene(rng)
    site = f"syn-site-{int(rng.integers(N_SITES)):02d}"
    true = scene.true_labels()
    labels = None
    if split != "unlabelled":
        labels = annotate(rng, true, shallow_fraction, unannotated_fraction)
    return DrawnLabels(scene, site, true, labels)


def encode_jpeg(image, quality: int) -> bytes:
    """Baseline JPEG at a fixed quality, no EXIF or other metadata, so the bytes are reproducible."""
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality, optimize=False)
    return buf.getvalue()


def draw_sample(
    seed: int,
    split: str,
    index: int,
    *,
    size: int = 64,
    shallow_fraction: float = 0.2,
    unannotated_fraction: float = 0.1,
    jpeg_quality: int = 90,
) -> ShardSample:
    """One sample of the synthetic set: its JPEG and its metadata (labels only for labelled splits)."""
    drawn = draw_labels(seed, split, index, shallow_fraction, unannotated_fraction)
    site_index = int(drawn.site.rsplit("-", 1)[1])
    image = render_scene(_rng(seed, split, index, 1), drawn.scene, size, site_index)
    meta: dict = {"dataset": "synthetic", "site": drawn.site, "partition": split}
    if drawn.labels is not None:
        meta["labels"] = drawn.labels
        meta["true_labels"] = drawn.true_labels
    return ShardSample(f"{split}-{index:06d}", encode_jpeg(image, jpeg_quality), "jpg", meta)


def _label_schema(samples: list[ShardSample]) -> dict | None:
    heads: dict[str, set[str]] = {}
    for s in samples:
        for head, paths in s.meta.get("labels", {}).items():
            heads.setdefault(head, set()).update(paths)
    if not heads:
        return None
    return {"scheme": "catami", "heads": {h: sorted(p) for h, p in sorted(heads.items())}}


def _samples(seed: int, split: str, n: int, **kw) -> Iterator[ShardSample]:
    for i in range(n):
        yield draw_sample(seed, split, i, **kw)


def make_sample(
    out_dir: str | Path,
    *,
    seed: int = 0,
    n_unlabelled: int = 2000,
    n_labelled: int = 1200,
    size: int = 64,
    shallow_fraction: float = 0.2,
    unannotated_fraction: float = 0.1,
    jpeg_quality: int = 90,
    max_per_shard: int = 200,
    overwrite: bool = False,
) -> dict:
    """Draw the sample and write one shard folder per split plus a top-level manifest.json; return
    that manifest with the run time added. Each split gets at least MIN_SHARDS shards where it can.

    The whole sample is built beside `out_dir` and moved into place only when complete, so a
    failed run leaves `out_dir` as it was; a non-empty `out_dir` is refused unless `overwrite`.
    """
    params = {
        "size": size,
        "shallow_fraction": shallow_fraction,
        "unannotated_fraction": unannotated_fraction,
        "jpeg_quality": jpeg_quality,
    }
    start = time.perf_counter()
    with atomic_folder(out_dir, overwrite=overwrite) as tmp:
        splits = {}
        for split, n in split_sizes(n_unlabelled, n_labelled).items():
            if n > 0:
                splits[split] = _write_split(tmp, split, n, seed, max_per_shard, params)
        top = {"generator": GENERATOR, "seed": seed, **params, "splits": splits}
        (tmp / "manifest.json").write_text(
            json.dumps(top, indent=2, sort_keys=True) + "\n", "utf-8"
        )
    return {**top, "seconds": time.perf_counter() - start}


def _write_split(
    out: Path, split: str, n: int, seed: int, max_per_shard: int, params: dict
) -> dict:
    """Draw and write the `n` images of one split into `out/split`; its entry of the top manifest."""
    per_shard = max(1, min(max_per_shard, n // MIN_SHARDS[split]))
    samples = list(_samples(seed, split, n, **params))
    source = {"generator": GENERATOR, "seed": seed, "split": split, **params}
    manifest = write_shards(
        samples,
        out / split,
        name=split,
        max_per_shard=per_shard,
        label_schema=_label_schema(samples),
        source=source,
    )
    return {
        "dir": split,
        "num_samples": manifest["num_samples"],
        "num_shards": len(manifest["shards"]),
        "bytes": sum(s["bytes"] for s in manifest["shards"]),
    }


def cli_make_sample(args: argparse.Namespace) -> int:
    """`ssl-benthic make-sample`: write the sample and print one line per split."""
    summary = make_sample(
        args.out,
        seed=args.seed,
        n_unlabelled=args.n_unlabelled,
        n_labelled=args.n_labelled,
        size=args.size,
        shallow_fraction=args.shallow_fraction,
        unannotated_fraction=args.unannotated_fraction,
        overwrite=args.overwrite,
    )
    total = 0
    for split, info in summary["splits"].items():
        total += info["bytes"]
        print(
            f"{split:<11} {info['num_samples']:>6} images  {info['num_shards']:>3} shards  "
            f"{info['bytes'] / 2**20:6.2f} MiB"
        )
    print(
        f"wrote {args.out} ({total / 2**20:.2f} MiB, {args.size}px, seed {args.seed}) "
        f"in {summary['seconds']:.1f} s"
    )
    return 0
