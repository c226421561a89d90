"""Making shards from a BenthicNet-style CSV or a folder tree (`ssl-benthic make-shards`); the
point exports (CoralNet, SQUIDLE+) live in `point_sources` and write through `write_items` here.

Nothing is dropped silently: a CSV row whose image cell is empty or whose file is missing is found
before any shard is written, an image that does not decode is found while writing; both are skipped,
listed in the manifest's `source.skipped` as {row, file, reason} and printed at the end (with
`strict` a missing file refuses the run, an undecodable one makes the command exit 1). A folder
tree's hidden and non-image files are counted by kind in `source.ignored`. Every sample's metadata
names its source image as `image` (relative to the images root). With `split`, the samples go to
`OUT/{train,val,test}/` by whole groups (`splits`).

Each source turns its items into a `progress.Plan` (the samples in write order, fixed before any
image is decoded) that `shards.write_planned` writes: images are encoded in `workers` processes
(`parallel`), in order, so the files do not depend on the number; finished shards are recorded as
they close, and an interrupted run's are reused by `resume` (`progress`, `atomic`).
"""

from __future__ import annotations

import os
import random
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from ssl_benthic.core.errors import DataError, UserError
from ssl_benthic.data.csv_rows import DEFAULT_ENCODING, read_csv
from ssl_benthic.data.images import CONVERTIBLE_SUFFIXES, SUFFIX_EXT, describe_error, encode_image
from ssl_benthic.data.shards.build import resumable
from ssl_benthic.data.shards.format import ShardSample, check_key
from ssl_benthic.data.shards.parallel import ordered_map
from ssl_benthic.data.shards.progress import Plan, Skipped, file_identity, versions
from ssl_benthic.data.shards.writer import write_planned
from ssl_benthic.data.sources.splits import parse_split, plan_splits, write_split_folders

FILE_CHUNK = 8  # images per task sent to a worker


@dataclass
class Item:
    """One image to shard: its key index, file, metadata, and where it came from (row or path)."""

    index: int
    path: Path
    meta: dict
    row: int | None
    file: str


@dataclass
class Tally:
    """What a run wrote and skipped; filled while the samples are drawn, read for the manifest."""

    skipped: list[dict] = field(default_factory=list)
    written: list[dict] = field(default_factory=list)
    ignored: Counter = field(default_factory=Counter)

    def skip(self, row: int | None, file: str, reason: str) -> None:
        self.skipped.append({"row": row, "file": file, "reason": reason})

    def sorted_skipped(self) -> list[dict]:
        return sorted(self.skipped, key=lambda s: (s["row"] or 0, s["file"]))

    def source(self) -> dict:
        """What goes into the manifest's `source`: the skipped inputs, and ignored files if any."""
        extra = {"ignored": dict(sorted(self.ignored.items()))} if self.ignored else {}
        return {"skipped": self.sorted_skipped(), **extra}


def parse_label_columns(spec: str) -> dict[str, str]:
    """Parse 'col=head,col2=head2' into {col: head}."""
    pairs = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        col, sep, head = item.partition("=")
        if not sep or not col.strip() or not head.strip():
            raise UserError(f"label column {item!r}: expected column=head")
        pairs[col.strip()] = head.strip()
    return pairs


# --- items of a CSV ---------------------------------------------------------------------------


def inside_root(root: Path, rel: str, where: str) -> Path:
    """Resolve `rel` under `root`, refusing paths (.., absolute, symlinks) that land outside it."""
    path = (root / rel).resolve()
    if not path.is_relative_to(root.resolve()):
        raise DataError(f"{where}: image path {rel!r} escapes the images root {root}")
    return path


def stem_key(index: int, path: Path) -> str:
    """Deterministic safe key: zero-padded index + the file stem with unsafe characters as '_'."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", path.stem).strip("_")[:64]
    return check_key(f"{index:08d}_{stem}" if stem else f"{index:08d}")


def _row_meta(row: dict, image_column: str, label_columns: dict[str, str], sep: str) -> dict:
    """Metadata of one CSV row: other columns as strings, `image` (the image cell), and `labels`
    {head: [paths]} where the cell is non-empty (an empty cell leaves that head unannotated)."""
    meta = {k: v for k, v in row.items() if k not in label_columns and k != image_column and k}
    meta["image"] = row.get(image_column) or ""
    labels = {}
    for col, head in label_columns.items():
        cell = (row.get(col) or "").strip()
        paths = [p.strip() for p in cell.split(sep) if p.strip()] if cell else []
        if paths:
            labels[head] = paths
    meta["labels"] = labels
    return meta


def unusable(path: Path, resize: int) -> str | None:
    """Why `path` cannot be sharded before decoding it (missing, not a file, wrong type), or None."""
    if not path.exists():
        return "missing file"
    if not path.is_file():
        return "not a file"
    if not resize and path.suffix.lower() not in SUFFIX_EXT:
        return "not a .jpg/.jpeg/.png/.webp image (use --resize to convert)"
    return None


@dataclass(frozen=True)
class CsvSpec:
    """How to read a CSV: the image column, label columns {column: head}, and the label separator."""

    image_column: str
    label_columns: dict[str, str]
    label_sep: str


def _csv_items(
    csv_path: Path, root: Path, spec: CsvSpec, rows: list, resize: int, tally: Tally
) -> list[Item]:
    """An Item per row whose image file exists; the others are skipped into `tally`."""
    items = []
    for i, (line, row) in enumerate(rows):
        cell = row.get(spec.image_column) or ""
        if not cell.strip():
            tally.skip(line, "", "empty image cell")
            continue
        path = inside_root(root, cell, f"{csv_path} row {line}")
        meta = _row_meta(row, spec.image_column, spec.label_columns, spec.label_sep)
        item = Item(i, path, meta, line, cell)
        if reason := unusable(path, resize):
            tally.skip(line, cell, reason)
        else:
            items.append(item)
    return items


def _checked_label_columns(
    csv_path: Path, header: list[str], label_columns: dict[str, str]
) -> dict:
    """The label columns present in the header; a missing one is warned about and dropped."""
    present = {}
    for col, head in label_columns.items():
        if col in header:
            present[col] = head
        else:
            warnings.warn(f"{csv_path}: label column {col!r} not in the CSV; skipped", stacklevel=3)
    return present


def refuse_strict(where: Path, tally: Tally) -> None:
    """With `strict`, rows without a usable file stop the run before anything is written."""
    raise DataError(
        f"{where}: {len(tally.skipped)} rows have no usable image: {first_skips(tally, 5)}; "
        "nothing written (--strict; without it they are skipped and listed)"
    )


# --- writing ----------------------------------------------------------------------------------


def _label_schema(metas: Iterable[dict], heads: Iterable[str]) -> dict:
    seen: dict[str, set[str]] = {h: set() for h in heads}
    for meta in metas:
        for head, paths in meta.get("labels", {}).items():
            seen.setdefault(head, set()).update(paths)
    return {"heads": {h: sorted(v) for h, v in sorted(seen.items())}}


def _encode_file(resize: int, path: Path) -> tuple[bytes, str] | str:
    """(bytes, ext) of one image for a shard, or why it cannot be read; runs in a worker."""
    try:
        return encode_image(path, resize)
    except Exception as exc:  # any decoder failure is about this one file
        return f"cannot read image: {describe_error(exc)}"


def replay(done: Iterable[tuple[str, Item]], skipped: list[Skipped], tally: Tally) -> None:
    """Note the places that a resumed build reuses in `tally` (skips, written metadata) as an
    uninterrupted build would have while writing them."""
    reasons = {s.key: s for s in skipped}
    for key, item in done:
        if key in reasons:
            tally.skipped.append(reasons[key].entry())
        else:
            tally.written.append(item.meta)


def no_image_read(tally: Tally) -> None:
    """Refuse a run in which not one image could be read."""
    if not tally.written:
        raise DataError(f"no image could be read, nothing written: {first_skips(tally)}")


def _samples(
    items: list[Item], keys: list[str], opts: WriteOptions, tally: Tally
) -> Iterator[ShardSample | Skipped]:
    """Encode each item (in `opts.workers` processes, in order); one that does not decode is
    skipped into `tally`, the rest recorded."""
    encode = partial(_encode_file, opts.resize)
    results = ordered_map(encode, (item.path for item in items), opts.workers, FILE_CHUNK)
    for item, key, result in zip(items, keys, results, strict=True):
        if isinstance(result, str):
            tally.skip(item.row, item.file, result)
            yield Skipped(key, item.row, item.file, result)
            continue
        tally.written.append(item.meta)
        yield ShardSample(key, *result, item.meta)
    no_image_read(tally)


@dataclass(frozen=True)
class WriteOptions:
    """Options common to every source: resizing, shuffling, shard bounds, the output folder, and
    the split (`split`: 'train=0.7,val=0.15,test=0.15' or 'partition'; None writes one folder);
    `workers` processes encode images (the files do not depend on it); `resume` reuses the
    finished shards of an interrupted run (`progress`)."""

    resize: int = 0
    seed: int = 0
    name: str = "shard"
    max_per_shard: int = 10000
    max_shard_bytes: int = 256 * 2**20
    overwrite: bool = False
    split: str | None = None
    group_by: str = "image"
    workers: int = 1
    resume: bool = False

    def __post_init__(self) -> None:
        if self.resize < 0:
            raise UserError(f"resize must be >= 0 (0 keeps the size), got {self.resize}")
        if self.workers < 1:
            raise UserError(f"workers must be >= 1, got {self.workers}")
        if self.split is not None:
            parse_split(self.split)  # refuse a bad spec before any work


Planner = Callable[[list[Item], Tally, dict], Plan]


def item_identity() -> Callable[[str, Item], list]:
    """What decides a planned sample's bytes besides the settings: key, metadata, source file."""
    stat = file_identity()
    return lambda key, item: [key, item.meta, *stat(item.path)]


def _file_planner(opts: WriteOptions) -> Planner:
    """Whole image files: shuffled by seed, encoded in order (`_samples`)."""

    def plan(items: list[Item], tally: Tally, settings: dict) -> Plan:
        order = list(items)
        random.Random(opts.seed).shuffle(order)
        keys = [stem_key(item.index, item.path) for item in order]
        identity = item_identity()

        def stream(start: int, skipped: list[Skipped]) -> Iterator[ShardSample | Skipped]:
            replay(zip(keys[:start], order[:start], strict=True), skipped, tally)
            return _samples(order[start:], keys[start:], opts, tally)

        return Plan(len(order), lambda i: identity(keys[i], order[i]), settings, stream)

    return plan


def _write_one(
    items: list[Item],
    out_dir: str | Path,
    source: dict,
    heads: list[str],
    tally: Tally,
    opts: WriteOptions,
    planner: Planner,
    overwrite: bool,
) -> dict:
    """Write `planner(items)` as one shard folder; its manifest (skips listed in `source`)."""
    plan = planner(items, tally, {"source": source, "versions": versions()})
    return write_planned(
        plan,
        out_dir,
        name=opts.name,
        max_per_shard=opts.max_per_shard,
        max_shard_bytes=opts.max_shard_bytes,
        label_schema=lambda: _label_schema(tally.written, heads),
        source=lambda: {**source, **tally.source()},
        overwrite=overwrite,
    )


def write_items(
    items: list[Item],
    out_dir: str | Path,
    source: dict,
    heads: list[str],
    tally: Tally,
    opts: WriteOptions,
    planner: Planner | None = None,
) -> dict:
    """Write `items` (as `planner` orders and encodes them; default whole files) to one shard
    folder, or with `opts.split` to one per split plus an index manifest; return the (index)
    manifest. A failed run keeps its finished shards for `opts.resume` (`atomic.resumable`)."""
    if not items:
        raise DataError(f"no usable image to write to {out_dir}: {first_skips(tally)}")
    with resumable(opts.resume):
        return _write_items(
            items, out_dir, source, heads, tally, opts, planner or _file_planner(opts)
        )


def _write_items(
    items: list[Item],
    out_dir: str | Path,
    source: dict,
    heads: list[str],
    tally: Tally,
    opts: WriteOptions,
    planner: Planner,
) -> dict:
    """`write_items` inside `resumable`."""
    if opts.split is None:
        return _write_one(items, out_dir, source, heads, tally, opts, planner, opts.overwrite)
    plan = plan_splits(
        [item.meta for item in items],
        [item.row for item in items],
        parse_split(opts.split),
        group_by=opts.group_by,
        seed=opts.seed,
        where=str(source.get("csv") or source.get("root") or out_dir),
    )
    tallies: dict[str, Tally] = {}

    def write_one(part: list[Item], folder: Path, name: str) -> dict:
        tallies[name] = Tally()
        split_source = {**source, "split": name}
        return _write_one(part, folder, split_source, heads, tallies[name], opts, planner, False)

    def top() -> dict:
        for split_tally in tallies.values():
            tally.skipped.extend(split_tally.skipped)
        return {"source": {**source, **tally.source()}, "split": plan.info}

    return write_split_folders(out_dir, plan.parts(items), write_one, top, overwrite=opts.overwrite)


def first_skips(tally: Tally, n: int = 3) -> str:
    skipped = tally.sorted_skipped()
    text = "; ".join(skip_line(s) for s in skipped[:n])
    return text + (f" (and {len(skipped) - n} more)" if len(skipped) > n else "")


def skip_line(entry: dict) -> str:
    """'row 3: a/x.png: missing file' (a folder's images have no row, empty cells no file)."""
    where = [f"row {entry['row']}"] if entry.get("row") else []
    return ": ".join(where + ([entry["file"]] if entry["file"] else []) + [entry["reason"]])


# --- the two sources --------------------------------------------------------------------------


def make_shards_from_csv(
    csv_path: str | Path,
    images_root: str | Path,
    out_dir: str | Path,
    *,
    image_column: str = "image",
    label_columns: dict[str, str] | None = None,
    label_sep: str = "|",
    encoding: str = DEFAULT_ENCODING,
    strict: bool = False,
    **options: object,
) -> dict:
    """Shard the images listed in a BenthicNet-style CSV; return the manifest.

    `options` are `WriteOptions` (resize, seed, name, max_per_shard, max_shard_bytes, overwrite).
    Rows are shuffled by `seed` (images are read lazily, one at a time); keys are the row index +
    file stem, so they do not depend on the seed. Rows with an empty image cell, a missing file or
    an image that does not decode are skipped and listed in `source.skipped` ({row, file, reason},
    row = the CSV's 1-based line); with `strict`, empty cells and missing files raise before
    anything is written. Label columns missing from the CSV header are skipped with a warning.
    """
    opts = WriteOptions(**options)
    csv_path, root = Path(csv_path), Path(images_root)
    header, rows = read_csv(csv_path, encoding)
    if image_column not in header:
        raise DataError(f"{csv_path}: no image column {image_column!r} (columns: {header})")
    spec = CsvSpec(
        image_column, _checked_label_columns(csv_path, header, dict(label_columns or {})), label_sep
    )
    tally = Tally()
    items = _csv_items(csv_path, root, spec, rows, opts.resize, tally)
    if strict and tally.skipped:
        refuse_strict(csv_path, tally)
    source = {
        "kind": "csv",
        "csv": str(csv_path),
        "images_root": str(root),
        "image_column": image_column,
        "label_columns": spec.label_columns,
        "label_sep": label_sep,
        "resize": opts.resize,
        "seed": opts.seed,
    }
    heads = list(spec.label_columns.values())
    return write_items(items, out_dir, source, heads, tally, opts)


def _image_suffixes(resize: int) -> tuple[str, ...]:
    return tuple(SUFFIX_EXT) + (CONVERTIBLE_SUFFIXES if resize else ())


def _walk_class(class_dir: Path, suffixes: tuple[str, ...], ignored: Counter) -> list[Path]:
    """Image files under `class_dir` (symlinked folders not followed); hidden folders and files
    and other files are counted into `ignored` by kind."""
    found = []
    for folder, dirs, files in os.walk(class_dir):
        ignored["hidden folder"] += sum(d.startswith(".") for d in dirs)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            path = Path(folder) / name
            if name.startswith("."):
                ignored["hidden"] += 1
            elif path.suffix.lower() in suffixes:
                found.append(path)
            else:
                ignored[path.suffix.lower() or "no extension"] += 1
    return found


def _folder_items(root: Path, head: str, resize: int, tally: Tally) -> list[Item]:
    """An Item per image under `root/CLASS/...`, sorted by path; the label is the CLASS name."""
    paths = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            tally.ignored["hidden folder" if entry.is_dir() else "hidden"] += 1
        elif entry.is_dir():
            paths += [
                (entry.name, p) for p in _walk_class(entry, _image_suffixes(resize), tally.ignored)
            ]
        else:
            tally.ignored["outside a class folder"] += 1
    paths.sort(key=lambda cp: cp[1].relative_to(root).parts)
    items = []
    for i, (cls, path) in enumerate(paths):
        rel = path.relative_to(root).as_posix()
        inside_root(root, rel, str(root))
        meta = {"image": rel, "path": rel, "labels": {head: [cls]}}
        items.append(Item(i, path, meta, None, rel))
    if not items:
        raise DataError(
            f"{root}: no {'/'.join(_image_suffixes(resize))} images in any class sub-folder"
        )
    return items


def make_shards_from_folder(
    root: str | Path,
    out_dir: str | Path,
    *,
    head: str = "label",
    **options: object,
) -> dict:
    """Shard a folder tree with one class per sub-folder (label = sub-folder name under
    `labels[head]`); images are shuffled by `seed`; return the manifest.

    `options` are `WriteOptions`. Hidden files and folders (`.*`, AppleDouble `._*`), files outside
    a class folder and non-image files are left out and counted in `source.ignored`; images that
    do not decode are skipped and listed in `source.skipped` ({row: null, file, reason}).
    """
    opts = WriteOptions(**options)
    root = Path(root)
    tally = Tally()
    items = _folder_items(root, head, opts.resize, tally)
    source = {
        "kind": "folder",
        "root": str(root),
        "head": head,
        "resize": opts.resize,
        "seed": opts.seed,
    }
    return write_items(items, out_dir, source, [head], tally, opts)
