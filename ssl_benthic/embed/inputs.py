"""What `embed` reads, as one ordered stream of views: image files of a folder, the samples of a
shard folder, or the points of a point export (CoralNet, SQUIDLE+, MERMAID) cut as patches (`data.points.patches.cut_patch`,
the rule make-shards and predict use). Each view carries its record (key, image, row, column,
labels per head) and an error instead of an image when it cannot be read.

The order is fixed by the inputs alone (sorted files, shard order, the export's sorted points), so
a resumed run sees the same stream. `identity()` is what `embed.json` records of the inputs: paths
and sha256s (per image file, and their combined digest; the shards' from their manifest).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any

from PIL import Image

from ssl_benthic.core.errors import DataError
from ssl_benthic.core.paths import sha256_file
from ssl_benthic.data.images import CONVERTIBLE_SUFFIXES, SUFFIX_EXT, decode_rgb, describe_error
from ssl_benthic.data.points import point_format
from ssl_benthic.data.points.base import Point
from ssl_benthic.data.points.patches import cut_patch, read_upright
from ssl_benthic.data.shards.format import MANIFEST
from ssl_benthic.data.shards.manifest import load_manifest
from ssl_benthic.data.shards.reader import iter_samples, shard_urls
from ssl_benthic.data.sources.point_shards import point_key
from ssl_benthic.data.sources.tables import inside_root

__all__ = ["Record", "View", "Source", "ImageSource", "ShardSource", "PointSource"]

IMAGE_SUFFIXES = (*SUFFIX_EXT, *CONVERTIBLE_SUFFIXES)


@dataclass
class Record:
    """One row of index.csv: what a feature is of."""

    key: str
    image: str
    row: int | None = None
    column: int | None = None
    labels: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class View:
    """A record with its image (PIL, upright RGB) or, when it cannot be read, why not."""

    record: Record
    image: Image.Image | None
    error: str | None = None


class Source:
    """An input: `views()` streams every view in a fixed order; `identity()` describes the inputs."""

    def views(self) -> Iterator[View]:
        raise NotImplementedError

    def identity(self) -> dict[str, Any]:
        raise NotImplementedError

    def count(self) -> int | None:
        """How many views `views()` gives, when known before reading (for the progress bar)."""
        return None


def _digest(pairs: list[tuple[str, str]]) -> str:
    """sha256 of `name<TAB>sha256` lines: one hash for a set of files."""
    h = hashlib.sha256()
    for name, sha in pairs:
        h.update(f"{name}\t{sha}\n".encode())
    return h.hexdigest()


def _file_sha(path: Path) -> str:
    return sha256_file(path) if path.is_file() else "missing"


def _decode(path: Path) -> tuple[Image.Image | None, str | None]:
    try:
        return decode_rgb(path.read_bytes()), None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is listed, the others go on
        return None, f"cannot read image: {describe_error(exc)}"


@dataclass
class ImageSource(Source):
    """Every image file under a folder (recursively, any case of the suffix, hidden files left
    out), sorted by path; the key is the path relative to the folder."""

    root: Path

    def __post_init__(self) -> None:
        root = Path(self.root)
        if not root.is_dir():
            raise DataError(f"--images {root}: not a folder")
        self.files = [
            p
            for p in sorted(root.rglob("*"))
            if p.is_file()
            and p.suffix.lower() in IMAGE_SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(root).parts)
        ]
        if not self.files:
            raise DataError(f"--images {root}: no {'/'.join(IMAGE_SUFFIXES)} image there")

    def count(self) -> int:
        return len(self.files)

    def views(self) -> Iterator[View]:
        for path in self.files:
            rel = path.relative_to(self.root).as_posix()
            image, error = _decode(path)
            yield View(Record(rel, rel), image, error)

    def identity(self) -> dict[str, Any]:
        pairs = [(p.relative_to(self.root).as_posix(), sha256_file(p)) for p in self.files]
        return {
            "kind": "images",
            "path": str(self.root),
            "files": len(pairs),
            "sha256": _digest(pairs),
        }


def _shard_image(key: str, meta: dict) -> str:
    """The file a shard sample came from, as its metadata records it (else its key)."""
    for name in ("image", "path", "Name"):
        if isinstance(meta.get(name), str) and meta[name]:
            return meta[name]
    return key


@dataclass
class ShardSource(Source):
    """Every sample of one shard folder, in shard order (undecodable samples are skipped by the
    reader, counted and warned about); labels from the samples' metadata."""

    path: Path

    def __post_init__(self) -> None:
        shard_urls(self.path)  # refuses a folder without a shard manifest, naming its sub-folders

    def count(self) -> int:
        return int(load_manifest(self.path)["num_samples"])

    def views(self) -> Iterator[View]:
        for key, image, meta in iter_samples(self.path):
            labels = {h: list(p) for h, p in (meta.get("labels") or {}).items() if p}
            row, column = meta.get("row"), meta.get("column")
            yield View(Record(key, _shard_image(key, meta), row, column, labels), image)

    def identity(self) -> dict[str, Any]:
        manifest = load_manifest(self.path)
        shards = {e["file"]: e["sha256"] for e in manifest["shards"]}
        return {
            "kind": "shards",
            "path": str(self.path),
            "manifest_sha256": sha256_file(Path(self.path) / MANIFEST),
            "shards": shards,
        }


@dataclass
class PointSource(Source):
    """Every point of a point export (any format of `ssl_benthic.data.points`: CoralNet, SQUIDLE+,
    MERMAID) as the patch `make-shards` cuts (a `Patch Size` column overrides `patch` per point; a
    whole-frame point is the whole photograph), each photograph decoded once; labels from the
    format's own labeler (a CoralNet export's codes through `--label-map`, or the codes themselves).
    `options` are the format's flags by dest (None: its default)."""

    kind: str
    csv: Path
    images_root: Path
    patch: int = 224
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.format = point_format(self.kind)
        self.options = self.format.options(self.options)
        self.points, _ = self.format.read(Path(self.csv), self.options)
        if not self.points:
            raise DataError(f"--{self.kind} {self.csv}: no point with an image")
        self.labeler = self.format.labels(self.points, Path(self.csv), self.options).labeler

    def count(self) -> int:
        return len(self.points)

    def views(self) -> Iterator[View]:
        numbered = list(enumerate(self.points))
        for image, group in groupby(numbered, key=lambda ip: ip[1].image):
            try:
                array = read_upright(inside_root(Path(self.images_root), image, str(self.csv)))
            except Exception as exc:  # noqa: BLE001 - missing or unreadable: its points listed
                why = f"cannot read image: {describe_error(exc)}"
                for i, p in group:
                    yield View(self._record(i, p, p.row, p.column), None, why)
                continue
            for i, p in group:
                yield self._view(i, p, array)

    def _record(self, index: int, point: Point, row: int | None, column: int | None) -> Record:
        key = point_key(index, point.image, row, column)
        return Record(key, point.image, row, column, self.labeler(point))

    def _view(self, index: int, point: Point, array: Any) -> View:
        height, width = array.shape[:2]
        where = point.pixel(height, width)
        if where is None:  # a whole-frame label
            return View(self._record(index, point, None, None), Image.fromarray(array))
        record = self._record(index, point, *where)
        row, column = where
        if not (0 <= row < height and 0 <= column < width):
            why = f"point (Row {row}, Column {column}) is outside the {width} x {height} image"
            return View(record, None, why)
        return View(
            record, Image.fromarray(cut_patch(array, row, column, point.patch or self.patch))
        )

    def identity(self) -> dict[str, Any]:
        root = Path(self.images_root)
        names = sorted({p.image for p in self.points})
        pairs = [(n, _file_sha(root / n)) for n in names]
        label_map = self.options.get("label_map")
        return {
            "kind": self.kind,
            "csv": str(self.csv),
            "csv_sha256": sha256_file(self.csv),
            "images_root": str(root),
            "images_sha256": _digest(pairs),
            "patch": self.patch,
            "options": {k: v for k, v in sorted(self.options.items())},
            "label_map_sha256": sha256_file(label_map) if label_map else None,
        }
