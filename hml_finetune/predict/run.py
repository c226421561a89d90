"""`hml-finetune predict`: a fine-tuned model labels new images, in a file that benthic tools read.

Preprocessing, hierarchies and thresholds come from the checkpoint, through the inference path that
`evaluate` uses, so the same images get the same probabilities. Exit status 0 when every image was
predicted, 1 when some could not be read (every other row is still written).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from hml_finetune.finetune.inference import Finetuned, load_for_inference, predict_batch
from hml_finetune.predict.inputs import (
    Item,
    decode_errors,
    file_batches,
    image_items,
    shard_batches,
)
from hml_finetune.predict.labels import (
    HeadPrediction,
    head_prediction,
    single_prediction,
    top_leaves,
)
from hml_finetune.predict.points import point_batches, read_points
from hml_finetune.predict.writers import Writer, code_ranking, open_writer
from ssl_benthic.core.errors import ConfigError
from ssl_benthic.data.shards.manifest import load_manifest

__all__ = ["PredictSummary", "run_predict", "item_predictions", "cli_predict"]


@dataclass
class PredictSummary:
    images: int = 0
    failures: int = 0
    seconds: float = 0.0

    def line(self, out: str | Path, what: str = "images") -> str:
        rate = self.images / self.seconds if self.seconds else 0.0
        return (
            f"predicted {self.images - self.failures} of {self.images} {what}, "
            f"{self.failures} failures, in {self.seconds:.1f} s ({rate:.1f} {what}/s): {out}"
        )


def item_predictions(
    f: Finetuned, probs: dict[str, torch.Tensor], b: int
) -> dict[str, HeadPrediction]:
    """Every head's prediction for row `b` of a batch's probabilities."""
    out = {
        head: head_prediction(probs[head][b], h, f.thresholds[head], f.schemes[head])
        for head, h in f.hierarchies.items()
    }
    for head, classes in f.model.single.items():
        out[head] = single_prediction(probs[head][b], classes)
    return out


def _top(f: Finetuned, heads: dict[str, HeadPrediction], k: int) -> dict[str, str]:
    out = {}
    for head, p in heads.items():
        leaves = top_leaves(p, f.hierarchies.get(head), f.schemes.get(head), k)
        out[head] = "|".join(f"{name}:{prob:.4f}" for name, prob in leaves)
    return out


def _write_batch(
    f: Finetuned, writer: Writer, items: list[Item], images: torch.Tensor | None, k: int
) -> int:
    """Predict the readable items of a batch and write every item; the number of failures."""
    probs = predict_batch(f, images) if images is not None else {}
    b = 0
    for item in items:
        heads = {}
        if item.error is None:
            heads = item_predictions(f, probs, b)
            b += 1
        writer.write(item, heads, _top(f, heads, k))
    return sum(item.error is not None for item in items)


def _batches(args: argparse.Namespace, f: Finetuned) -> tuple[int | None, Iterator]:
    """(number of items when known, batches) of the input `args` names."""
    if args.images is not None:
        found = image_items(args.images)
        return len(found), file_batches(found, f.transform, args.batch_size, args.num_workers)
    if args.shards is not None:
        return None, shard_batches(args.shards, f.transform, args.batch_size)
    kind = "coralnet" if args.coralnet else "squidle"
    points = read_points(kind, args.coralnet or args.squidle, args.image_column)
    batches = point_batches(
        points, args.images_root, f.transform, args.batch_size, args.patch, args.resize
    )
    return len(points), batches


def _points(args: argparse.Namespace) -> bool:
    """Whether the inputs are points (rows get `row`, `column`): a point export, or shards made
    from one."""
    if args.coralnet is not None or args.squidle is not None:
        return True
    if args.shards is not None and (Path(args.shards) / "manifest.json").is_file():
        source = load_manifest(args.shards).get("source") or {}
        return isinstance(source, dict) and source.get("kind") in ("coralnet", "squidle")
    return False


def _writer(args: argparse.Namespace, f: Finetuned) -> Writer:
    points = _points(args)
    if args.format != "coralnet":
        return open_writer(args.out, args.format, points)
    label_map = f.meta.get("label_map")
    return open_writer(
        args.out,
        "coralnet",
        points,
        source=args.coralnet,
        k=args.top_k,
        codes=lambda heads: code_ranking(heads, label_map, f.schemes),
    )


def run_predict(args: argparse.Namespace) -> PredictSummary:
    """Predict every input of `args` into `args.out`; the counts."""
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise ConfigError(f"--out {out} exists: pass --overwrite to replace it")
    f = load_for_inference(args.checkpoint, args.device)
    total, batches = _batches(args, f)
    summary, start, skipped = PredictSummary(), time.perf_counter(), decode_errors()
    writer = _writer(args, f)
    try:
        with tqdm(total=total, unit="img", desc="predict", dynamic_ncols=True) as bar:
            for items, images in batches:
                summary.failures += _write_batch(f, writer, items, images, args.top_k)
                summary.images += len(items)
                bar.update(len(items))
        writer.close()
    except BaseException:
        writer.abort()
        raise
    unread = decode_errors() - skipped  # shard samples the reader could not decode
    summary.images += unread
    summary.failures += unread
    summary.seconds = time.perf_counter() - start
    return summary


def _check_args(args: argparse.Namespace) -> None:
    if args.batch_size < 1 or args.top_k < 1 or args.num_workers < 0 or args.patch < 1:
        raise ConfigError("--batch-size, --top-k and --patch must be >= 1, --num-workers >= 0")
    points = args.coralnet is not None or args.squidle is not None
    if points and args.images_root is None:
        raise ConfigError("--coralnet / --squidle need --images-root (where the photographs are)")
    if args.format == "coralnet" and args.coralnet is None:
        raise ConfigError("--format coralnet writes a CoralNet export back: it needs --coralnet")


def cli_predict(args: argparse.Namespace) -> int:
    """`hml-finetune predict --checkpoint C (--images X | --shards D | --coralnet CSV |
    --squidle CSV) --out F [...]`."""
    _check_args(args)
    summary = run_predict(args)
    print(summary.line(args.out, "points" if _points(args) else "images"))
    return 1 if summary.failures else 0
