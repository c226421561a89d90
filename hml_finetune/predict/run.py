"""`hml-finetune predict`: a fine-tuned model labels new images, in a file that benthic tools read.

Preprocessing, hierarchies, temperatures and thresholds come from the checkpoint, through the
inference path that `evaluate` uses, so the same images get the same probabilities. The label of each
head follows `--label-rule` (default: the recipe's `predict.label_rule`; see `label_rules`), written
into every row or record with the full coherent predicted set. Exit status 0 when every image was
predicted, 1 when some could not be read (every other row is still written).
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from hml_finetune.finetune.inference import Finetuned, load_for_inference, predict_batch
from hml_finetune.hml.label_rules import DEFAULT_MIN_PROBABILITY, LABEL_RULES, effective_rule
from hml_finetune.predict.cover import CoverCounts, cover_groups, write_cover
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
from hml_finetune.predict.outputs import open_writer, writer_class
from hml_finetune.predict.points import point_batches, read_points
from hml_finetune.predict.writers import Export, WriteContext, Writer
from ssl_benthic.core.errors import ConfigError
from ssl_benthic.data.points import (
    chosen_format,
    format_flags,
    point_formats,
    refuse_unused_flags,
)
from ssl_benthic.data.shards.manifest import load_manifest

DEFAULT_PATCH = 224  # make-shards' default patch side

__all__ = [
    "PredictSummary",
    "patch_defaults",
    "LabelChoice",
    "label_choice",
    "run_predict",
    "item_predictions",
    "cli_predict",
]


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


@dataclass
class LabelChoice:
    """The label rule applied to each HML head (threshold on a DAG) and the min-probability."""

    rules: dict[str, str]
    min_probability: float = DEFAULT_MIN_PROBABILITY


def label_choice(f: Finetuned, rule: str | None, min_probability: float | None) -> LabelChoice:
    """`rule` / `min_probability`, or the recipe's `predict` ones, as applied to each head (a DAG
    head falls back to `threshold` with a warning)."""
    wanted = rule or f.cfg.predict.label_rule
    p_min = f.cfg.predict.min_probability if min_probability is None else min_probability
    rules = {head: effective_rule(wanted, h, head) for head, h in f.hierarchies.items()}
    return LabelChoice(rules, p_min)


def item_predictions(
    f: Finetuned, probs: dict[str, torch.Tensor], b: int, choice: LabelChoice | None = None
) -> dict[str, HeadPrediction]:
    """Every head's prediction for row `b` of a batch's probabilities (`choice` None: the
    threshold rule)."""
    c = choice or LabelChoice({h: "threshold" for h in f.hierarchies})
    out = {
        head: head_prediction(
            probs[head][b], h, f.thresholds[head], f.schemes[head], c.rules[head], c.min_probability
        )
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
    f: Finetuned,
    writer: Writer,
    items: list[Item],
    images: torch.Tensor | None,
    k: int,
    choice: LabelChoice,
    cover: CoverCounts | None = None,
) -> int:
    """Predict the readable items of a batch and write every item (counted in `cover`); the number
    of failures."""
    probs = predict_batch(f, images) if images is not None else {}
    b = 0
    for item in items:
        heads = {}
        if item.error is None:
            heads = item_predictions(f, probs, b, choice)
            b += 1
        writer.write(item, heads, _top(f, heads, k))
        if cover is not None:
            cover.add(item.image, {h: p.node for h, p in heads.items()} if heads else None)
    return sum(item.error is not None for item in items)


def _export(args: argparse.Namespace) -> Export | None:
    """The point export the command line names (format, file, the format's options), or None."""
    fmt = chosen_format(args)
    if fmt is None:
        return None
    given = {dest: getattr(args, dest, None) for dest in format_flags(reads_only=True)}
    return Export(fmt, Path(getattr(args, fmt.name)), fmt.options(given))


def _read_export(export: Export) -> list:
    return read_points(export.format.name, str(export.path), export.options)


def _images_root(args: argparse.Namespace, export: Export) -> str:
    """Where the export's photographs are: --images-root, else the export's folder (as make-shards)."""
    return args.images_root or str(export.path.parent)


def _batches(args: argparse.Namespace, f: Finetuned) -> tuple[int | None, Iterator]:
    """(number of items when known, batches) of the input `args` names."""
    if args.images is not None:
        found = image_items(args.images)
        return len(found), file_batches(found, f.transform, args.batch_size, args.num_workers)
    if args.shards is not None:
        return None, shard_batches(args.shards, f.transform, args.batch_size)
    export = _export(args)
    points = _read_export(export)
    batches = point_batches(
        points, _images_root(args, export), f.transform, args.batch_size, args.patch, args.resize
    )
    return len(points), batches


def _points(args: argparse.Namespace) -> bool:
    """Whether the inputs are points (rows get `row`, `column`): a point export, or shards made
    from one."""
    if chosen_format(args) is not None:
        return True
    if args.shards is not None and (Path(args.shards) / "manifest.json").is_file():
        source = load_manifest(args.shards).get("source") or {}
        return isinstance(source, dict) and source.get("kind") in point_formats()
    return False


def _writer(args: argparse.Namespace, f: Finetuned, choice: LabelChoice) -> Writer:
    ctx = WriteContext(
        Path(args.out),
        _points(args),
        top_k=args.top_k,
        rule=",".join(sorted(set(choice.rules.values()))) or "argmax",
        model=f,
        export=_export(args),
    )
    return open_writer(args.format, ctx)


def _cover_counts(args: argparse.Namespace, f: Finetuned) -> CoverCounts | None:
    """The percent-cover counter of `--cover` (None without it), grouped by `--cover-by`."""
    if args.cover is None:
        return None
    groups = None
    if args.cover_by is not None:
        groups = cover_groups(_read_export(_export(args)), args.cover_by)
    singles = {head: None for head in f.model.single}
    return CoverCounts({**f.hierarchies, **singles}, dict(f.schemes), groups)


def _cover_depths(args: argparse.Namespace) -> list[int] | None:
    return list(args.cover_depth) if args.cover_depth else None


def run_predict(args: argparse.Namespace) -> PredictSummary:
    """Predict every input of `args` into `args.out`; the counts."""
    out = Path(args.out)
    for flag, path in (("--out", out), ("--cover", args.cover)):
        if path is not None and Path(path).exists() and not args.overwrite:
            raise ConfigError(f"{flag} {path} exists: pass --overwrite to replace it")
    f = load_for_inference(args.checkpoint, args.device)
    args.patch, args.resize = patch_defaults(f.meta.get("patch"), args.patch, args.resize)
    choice = label_choice(f, args.label_rule, args.min_probability)
    total, batches = _batches(args, f)
    summary, start, skipped = PredictSummary(), time.perf_counter(), decode_errors()
    cover = _cover_counts(args, f)
    writer = _writer(args, f, choice)
    try:
        with tqdm(total=total, unit="img", desc="predict", dynamic_ncols=True) as bar:
            for items, images in batches:
                summary.failures += _write_batch(
                    f, writer, items, images, args.top_k, choice, cover
                )
                summary.images += len(items)
                bar.update(len(items))
        writer.close()
        if cover is not None:
            write_cover(args.cover, cover.rows(_cover_depths(args)))
    except BaseException:
        writer.abort()
        raise
    unread = decode_errors() - skipped  # shard samples the reader could not decode
    summary.images += unread
    summary.failures += unread
    summary.seconds = time.perf_counter() - start
    return summary


def patch_defaults(trained: dict | None, patch: int | None, resize: int | None) -> tuple[int, int]:
    """(patch, resize) for point inputs: the user's, else the training patches' (`trained`, from
    model.ckpt), else 224 and none; a warning when the user's differ from the training ones."""
    trained = trained or {}
    for flag, given, used in (("--patch", patch, "patch"), ("--resize", resize, "resize")):
        if given is not None and used in trained and given != trained[used]:
            warnings.warn(
                f"{flag} {given}: the model was trained on patches with {used} "
                f"{trained[used]} (its training shards' manifest); predicting with {given}",
                stacklevel=2,
            )
    patch = patch if patch is not None else trained.get("patch", DEFAULT_PATCH)
    return patch, resize if resize is not None else trained.get("resize", 0)


def _check_args(args: argparse.Namespace) -> None:
    small = args.patch is not None and args.patch < 1
    if args.batch_size < 1 or args.top_k < 1 or args.num_workers < 0 or small:
        raise ConfigError("--batch-size, --top-k and --patch must be >= 1, --num-workers >= 0")
    fmt = chosen_format(args)
    refuse_unused_flags(args, fmt, frozenset(), "--images / --shards")
    if args.images_root is not None and fmt is None:
        raise ConfigError("--images-root is where a point export's photographs are: it needs one")
    writer_class(args.format).check(args)
    if args.label_rule is not None and args.label_rule not in LABEL_RULES:
        raise ConfigError(f"--label-rule {args.label_rule!r} is not one of {LABEL_RULES}")
    if args.min_probability is not None and not 0.0 < args.min_probability <= 1.0:
        raise ConfigError(f"--min-probability {args.min_probability} must be in (0, 1]")
    if (args.cover_by is not None or args.cover_depth) and args.cover is None:
        raise ConfigError("--cover-by and --cover-depth need --cover COVER.csv")
    if args.cover is not None and not _points(args):
        raise ConfigError("--cover needs point inputs (a point export or point shards)")
    if args.cover_by is not None and fmt is None:
        raise ConfigError("--cover-by reads a column of the export: it needs a point export")


def cli_predict(args: argparse.Namespace) -> int:
    """`hml-finetune predict --checkpoint C (--images X | --shards D | --coralnet CSV |
    --squidle CSV | --mermaid CSV | any point format) --out F [...]`."""
    _check_args(args)
    summary = run_predict(args)
    print(summary.line(args.out, "points" if _points(args) else "images"))
    return 1 if summary.failures else 0
