"""Embedding a stream of views: batches through the start's backbone (eval mode, no gradients),
chunks of whole batches written as they finish (`chunks.ChunkStore`), then one assembly.

Batches and chunks are cut from the input stream by position (a chunk is `chunk_batches` batches
of `batch_size` views, unreadable views included), so a resumed run forms the same batches as an
uninterrupted one and computes the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ssl_benthic.core.devices import pick_device
from ssl_benthic.embed.chunks import ChunkStore
from ssl_benthic.embed.inputs import Record, Source, View
from ssl_benthic.embed.start import Start

__all__ = ["embed", "batch_features", "features_of"]

FORMAT = 1


def _batches(views: Iterator[View], size: int) -> Iterator[list[View]]:
    while batch := list(islice(views, size)):
        yield batch


@torch.inference_mode()
def batch_features(start: Start, batch: list[View], device: torch.device) -> np.ndarray:
    """(n, D) float32 features of the readable views of `batch`, in order."""
    images = [start.transform(v.image) for v in batch if v.image is not None]
    if not images:
        return np.zeros((0, start.record["num_features"]), np.float32)
    out = start.backbone(torch.stack(images).to(device))
    return out.float().cpu().numpy()


def _skip(view: View) -> dict[str, Any]:
    return {"key": view.record.key, "image": view.record.image, "reason": view.error}


def features_of(
    source: Source, start: Start, batch_size: int, device: torch.device, what: str = "embed"
) -> tuple[np.ndarray, list[Record], list[dict]]:
    """(features, records, skipped views) of a whole source, in memory (e.g. a kNN bank)."""
    start.backbone.to(device)
    feats, records, skipped = [], [], []
    bar = tqdm(total=source.count(), desc=what, unit="img", leave=False)
    for batch in _batches(source.views(), batch_size):
        feats.append(batch_features(start, batch, device))
        records += [v.record for v in batch if v.image is not None]
        skipped += [_skip(v) for v in batch if v.image is None]
        bar.update(len(batch))
    bar.close()
    width = start.record["num_features"]
    return (np.concatenate(feats) if feats else np.zeros((0, width), np.float32)), records, skipped


def embed(
    source: Source,
    start: Start,
    out: str | Path,
    *,
    batch_size: int = 64,
    chunk_batches: int = 16,
    dtype: str = "float32",
    device: str = "auto",
    overwrite: bool = False,
    on_chunk: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write `out`/features.npy, index.csv and embed.json for every view of `source`; return the
    embed.json record. Resumes the finished chunks of an interrupted run of the same settings;
    `on_chunk(n)` is called after chunk n is written (progress hooks, tests)."""
    inputs = source.identity()
    settings = {
        "format": FORMAT,
        "start": start.record,
        "inputs": inputs,
        "batch_size": batch_size,
        "chunk_batches": chunk_batches,
    }
    store = ChunkStore(out, settings, overwrite)
    where = pick_device(device)
    start.backbone.to(where)
    per_chunk = batch_size * chunk_batches
    views = islice(source.views(), store.done * per_chunk, None)
    bar = tqdm(total=source.count(), initial=store.done * per_chunk, desc="embed", unit="img")
    if store.done:
        bar.write(f"resuming: {store.done} chunks of {per_chunk} views done in {store.partial}")
    for n, chunk in enumerate(_batches(views, per_chunk), start=store.done):
        feats, rows, skipped = [], [], []
        for batch in _batches(iter(chunk), batch_size):
            feats.append(batch_features(start, batch, where))
            rows += [asdict(v.record) for v in batch if v.image is not None]
            skipped += [_skip(v) for v in batch if v.image is None]
            bar.update(len(batch))
        store.write(n, np.concatenate(feats), rows, skipped)
        if on_chunk is not None:
            on_chunk(n)
    bar.close()
    record = {**settings, "pool": start.record["pool"], "img_size": start.record["img_size"]}
    record.update(mean=start.record["mean"], std=start.record["std"], device=where.type)
    return store.assemble(dtype, record)
