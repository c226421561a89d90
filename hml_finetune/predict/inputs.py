"""What `hml-finetune predict` reads: image files (a folder, searched recursively, or a glob) or a
shard folder, as items with a key and the source image they trace back to, decoded in loader workers.

A file (or a shard sample) that cannot be read or decoded is not fatal: it becomes an item with an
`error`, counted and written as an error row, while the others are predicted.
"""

from __future__ import annotations

import glob
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ssl_benthic.core.errors import DataError
from ssl_benthic.data.images import CONVERTIBLE_SUFFIXES, SUFFIX_EXT, decode_rgb
from ssl_benthic.data.shards.reader import DECODE_ERRORS, make_dataset, open_image

__all__ = ["Item", "image_items", "shard_batches", "file_batches", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (*SUFFIX_EXT, *CONVERTIBLE_SUFFIXES)  # what make-shards reads


@dataclass
class Item:
    """One image (or point) to predict: `key` names it in the output, `image` is its source file
    (from the sample's metadata for shards); `row`/`column` place a point in it."""

    key: str
    image: str
    row: int | None = None
    column: int | None = None
    error: str | None = None


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def image_items(spec: str) -> list[tuple[Item, Path]]:
    """(item, path) of every image under a folder (recursively, any case of the suffix, hidden
    files left out) or matching a glob pattern, sorted by path; none is an error."""
    root = Path(spec)
    if root.is_dir():
        paths = [
            p
            for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not _hidden(p, root)
        ]
        found = [(Item(p.relative_to(root).as_posix(), str(p)), p) for p in paths]
    elif root.is_file():
        found = [(Item(root.name, str(root)), root)]
    else:
        paths = [Path(p) for p in sorted(glob.glob(spec, recursive=True))]
        paths = [p for p in paths if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        found = [(Item(str(p), str(p)), p) for p in paths]
    if not found:
        raise DataError(f"--images {spec}: no {'/'.join(IMAGE_SUFFIXES)} image found there")
    return found


class _Files(Dataset):
    """Decodes and transforms one file per item in a loader worker; a failure is returned, not
    raised, so one bad file never stops the others."""

    def __init__(self, found: list[tuple[Item, Path]], transform: Callable) -> None:
        self.found, self.transform = found, transform

    def __len__(self) -> int:
        return len(self.found)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            image = decode_rgb(self.found[i][1].read_bytes())
            return i, self.transform(image), None
        except Exception as exc:  # noqa: BLE001 - any unreadable file becomes an error row
            return i, None, f"{type(exc).__name__}: {exc}"


def _collate(batch: list[tuple[int, torch.Tensor | None, str | None]]) -> list:
    return batch


def file_batches(
    found: list[tuple[Item, Path]], transform: Callable, batch_size: int, num_workers: int
) -> Iterator[tuple[list[Item], torch.Tensor | None]]:
    """(items, images) batches in input order; failed items carry their `error` and no image."""
    loader = DataLoader(
        _Files(found, transform),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate,
    )
    for batch in loader:
        items, images = [], []
        for i, image, error in batch:
            item = found[i][0]
            item.error = error
            items.append(item)
            if image is not None:
                images.append(image)
        yield items, torch.stack(images) if images else None


def _source_image(key: str, meta: dict[str, Any]) -> str:
    """The file a shard sample came from, as its metadata records it (else its key)."""
    for name in ("image", "path", "Name"):
        if isinstance(meta.get(name), str) and meta[name]:
            return meta[name]
    return key


def _try_open(data: bytes) -> tuple[Any, str | None]:
    """(image, None), or (None, why) for image bytes that do not decode: an error row, not a skip."""
    try:
        return open_image(data), None
    except Exception as exc:  # noqa: BLE001 - any undecodable image becomes an error row
        return None, f"{type(exc).__name__}: {exc}"


def shard_batches(
    shards: str, transform: Callable, batch_size: int
) -> Iterator[tuple[list[Item], torch.Tensor | None]]:
    """(items, images) batches of every sample of a shard folder, in shard order; a sample whose
    image does not decode is an item with its `error`, as an unreadable file is (a sample without
    an image member or readable JSON is skipped by the reader and counted, see `decode_errors`)."""
    dataset = make_dataset(shards, shuffle_buffer=0, rank=0, world_size=1, decoder=_try_open)
    items: list[Item] = []
    images: list[torch.Tensor] = []
    for (image, error), meta in dataset:
        key = meta["__key__"]
        items.append(
            Item(key, _source_image(key, meta), meta.get("row"), meta.get("column"), error)
        )
        if image is not None:
            images.append(transform(image))
        if len(items) == batch_size:
            yield items, torch.stack(images) if images else None
            items, images = [], []
    if items:
        yield items, torch.stack(images) if images else None


def decode_errors() -> int:
    """Samples the shard reader skipped so far in this process (undecodable images)."""
    return DECODE_ERRORS.count
