"""What `embed` reads, as one ordered stream of views: image files of a folder, the samples of a
shard folder, or the points of a CoralNet export cut as patches (`data.points.patches.cut_patch`,
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
from ssl_benthic.data.csv_rows import DEFAULT_ENCODING
from ssl_benthic.data.images import CONVERTIBLE_SUFFIXES, SUFFIX_EXT, decode_rgb, describe_error
from ssl_benthic.data.points.base import (
    CORALNET_IMAGE_COLUMN,
    Point,
    label_counts,
    read_coralnet,
)
from ssl_benthic.data.points.label_map import read_label_map
from ssl_benthic.data.points.patches import cut_patch, read_upright
from ssl_benthic.data.shards.format import MANIFEST
from ssl_benthic.data.shards.manifest import load_manifest
from ssl_benthic.data.shards.reader import iter_samples, shard_urls
from ssl_benthic.data.sources.point_shards import point_key
from ssl_benthic.data.sources.tables import inside_root

__all__ = ["Record", "View", "Source", "ImageSource", "ShardSource", "CoralnetSource"]

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
class CoralnetSource(Source):
    """Every point of a CoralNet export as the patch `make-shards --coralnet` cuts (a `Patch Size`
    column overrides `patch` per point), each photograph decoded once; labels are the point's codes
    through `label_map` (without one, each code is a label of the head `label`)."""

    csv: Path
    images_root: Path
    patch: int = 224
    label_map: Path | None = None
    image_column: str = CORALNET_IMAGE_COLUMN
    encoding: str = DEFAULT_ENCODING

    def __post_init__(self) -> None:
        self.points, _ = read_coralnet(
            Path(self.csv), image_column=self.image_column, encoding=self.encoding
        )
        if not self.points:
            raise DataError(f"--coralnet {self.csv}: no point with an image")
        self.codes = read_label_map(self.label_map, self.encoding)
        self.codes.check_codes(label_counts(self.points), Path(self.csv))

    def _record(self, index: int, point: Point) -> Record:
        labels: dict[str, list[str]] = {}
        for code in point.labels:
            head, path = self.codes.label(code)
            if path not in labels.setdefault(head, []):
                labels[head].append(path)
        key = point_key(index, point.image, point.row, point.column)
        return Record(key, point.image, point.row, point.column, labels)

    def count(self) -> int:
        return len(self.points)

    def views(self) -> Iterator[View]:
        numbered = list(enumerate(self.points))
        for image, group in groupby(numbered, key=lambda ip: ip[1].image):
            try:
                array = read_upright(inside_root(Path(self.images_root), image, str(self.csv)))
            except Exception as exc:  # noqa: BLE001 - missing or unreadable: its points listed
                for i, p in group:
                    yield View(
                        self._record(i, p), None, f"cannot read image: {describe_error(exc)}"
                    )
                continue
            for i, p in group:
                yield self._patch(self._record(i, p), p, array)

    def _patch(self, record: Record, point: Point, array: Any) -> View:
        height, width = array.shape[:2]
        if not (0 <= point.row < height and 0 <= point.column < width):
            why = f"point (Row {point.row}, Column {point.column}) is outside the {width} x {height} image"
            return View(record, None, why)
        cut = cut_patch(array, point.row, point.column, point.patch or self.patch)
        return View(record, Image.fromarray(cut))

    def identity(self) -> dict[str, Any]:
        root = Path(self.images_root)
        names = sorted({p.image for p in self.points})
        pairs = [(n, _file_sha(root / n)) for n in names]
        out = {
            "kind": "coralnet",
            "csv": str(self.csv),
            "csv_sha256": sha256_file(self.csv),
            "images_root": str(root),
            "images_sha256": _digest(pairs),
            "patch": self.patch,
            "label_map": None,
        }
        if self.label_map is not None:
            out["label_map"] = {"file": str(self.label_map), "sha256": sha256_file(self.label_map)}
        return out
