"""The one shard reader used by pretraining and fine-tuning: a webdataset pipeline of
(transformed image, metadata) with rank/worker splitting, shuffling and equal steps per rank.

Safety: tar members are only read into memory by name (never extracted), and decoding is explicit:
PIL for `.jpg`/`.png`/`.webp`, `json.loads` for `.json`; every other member is ignored, so nothing
is ever unpickled (webdataset's default decoders would unpickle `.pyd`/`.pickle`).
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import IterableDataset, default_collate

from ssl_benthic.core.errors import ConfigError, DataError
from ssl_benthic.core.paths import not_found, require_path
from ssl_benthic.data.images import decode_rgb
from ssl_benthic.data.shards.format import MANIFEST
from ssl_benthic.data.shards.manifest import is_index, load_manifest, manifest_folders

IMAGE_EXTS = ("jpg", "png", "webp")


@dataclass
class DecodeErrors:
    """Samples skipped because they could not be decoded, and shards that could not be read.

    The counts cover THIS process only: with `num_workers=0` they are exact; with loader workers
    each worker process counts its own copy (lost when it exits) and the warnings are the record.
    """

    count: int = 0
    shard_errors: int = 0
    last: list[str] = field(default_factory=list)

    def record(self, what: str) -> None:
        self.last = (self.last + [what])[-20:]
        warnings.warn(what, stacklevel=2)

    def reset(self) -> None:
        self.count = self.shard_errors = 0
        self.last = []


DECODE_ERRORS = DecodeErrors()


def _shard_error(exn: Exception) -> bool:
    """webdataset handler for unreadable shards/members: count, warn, carry on."""
    DECODE_ERRORS.shard_errors += 1
    DECODE_ERRORS.record(f"skipping unreadable shard data: {exn!r}")
    return True


# --- manifests and shard lists ----------------------------------------------------------------


def shard_urls(path: str | Path | Sequence[str | Path]) -> list[str]:
    """Shard paths of a manifest folder (or manifest file), a list of tar paths, or a
    brace pattern such as 'dir/shard-{000000..000009}.tar'."""
    if isinstance(path, list | tuple):
        return [str(p) for p in path]
    p = Path(path)
    if p.is_dir() or p.name == MANIFEST:
        folder = p if p.is_dir() else p.parent
        if not (folder / MANIFEST).is_file() or is_index(folder):
            subs = [str(f) for f in manifest_folders(folder)]
            raise DataError(f"{folder}: no shard {MANIFEST}; pick one of the shard folders {subs}")
        return [str(folder / e["file"]) for e in load_manifest(folder)["shards"]]
    return list(wds.shardlists.expand_urls(str(path)))


def _epoch_samples(shards: Any, epoch_samples: int | None) -> int:
    if epoch_samples is not None:
        return int(epoch_samples)
    p = Path(shards) if isinstance(shards, str | Path) else None
    if p is not None and (p.is_dir() or p.name == MANIFEST):
        return load_manifest(p)["num_samples"]
    raise DataError(f"{shards!r}: no manifest to count samples from; pass epoch_samples")


def resolve_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """(rank, world_size): the arguments, else torch.distributed if initialised, else the
    RANK/WORLD_SIZE environment variables, else (0, 1)."""
    if (rank is None) != (world_size is None):
        raise ValueError("give both rank and world_size, or neither")
    if rank is None:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            rank, world_size = dist.get_rank(), dist.get_world_size()
        elif "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        else:
            rank, world_size = 0, 1
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    return rank, world_size


# --- pipeline stages --------------------------------------------------------------------------


class EpochShardList(IterableDataset):
    """Yields {'url': ...} for each shard, in a permutation fixed by (seed, epoch): every rank
    computes the same order, so the rank split that follows gives disjoint shard sets."""

    def __init__(self, urls: Sequence[str], seed: int = 0, shuffle: bool = True) -> None:
        self.urls, self.seed, self.shuffle, self.epoch = list(urls), seed, shuffle, 0

    def __iter__(self) -> Iterator[dict]:
        urls = list(self.urls)
        if self.shuffle:
            random.Random(f"{self.seed}:{self.epoch}").shuffle(urls)
        for url in urls:
            yield {"url": url}


def split_by_rank(src: Iterator, rank: int, world_size: int) -> Iterator:
    """Every `world_size`-th shard from `rank` on: `wds.split_by_node`'s slicing, but with the
    rank fixed in the main process (inside a spawned loader worker torch.distributed is not
    initialised, so `wds.split_by_node` could silently read all shards on every rank)."""
    yield from islice(src, rank, None, world_size)


class _EpochShuffle:
    """`wds.shuffle` with a seed drawn per (seed, epoch, rank, worker) when iteration starts."""

    def __init__(self, shards: EpochShardList, bufsize: int, rank: int) -> None:
        self.shards, self.bufsize, self.rank = shards, bufsize, rank

    def __call__(self, src: Iterator) -> Iterator:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        seed = f"{self.shards.seed}:{self.shards.epoch}:{self.rank}:{worker}"
        rng_seed = random.Random(seed).getrandbits(63)
        initial = min(self.bufsize, 100)
        return wds.shuffle(self.bufsize, initial=initial, seed=rng_seed)(src)


def open_image(data: bytes) -> Image.Image:
    """Decode image bytes fully to an upright 8-bit RGB PIL image (EXIF orientation applied,
    16-bit scaled by 1/257, as `make-shards` stores them); truncated data and PIL warnings raise."""
    return decode_rgb(data)


def _decode(
    sample: dict, decode: bool, keep_meta: bool, decoder: Callable[[bytes], Any] = open_image
) -> tuple[Any, dict] | None:
    """(image or None, meta) of a raw sample, or None (skipped, counted, warned) on failure."""
    key, url = sample.get("__key__"), sample.get("__url__")
    try:
        exts = [e for e in IMAGE_EXTS if e in sample]
        if len(exts) != 1:
            found = sorted(k for k in sample if not k.startswith("__"))
            raise ValueError(f"expected one image member, found {found}")
        image = decoder(sample[exts[0]]) if decode else None
        meta = json.loads(sample["json"]) if keep_meta and "json" in sample else {}
        if not isinstance(meta, dict):
            raise ValueError("json member is not an object")
    except Exception as exc:
        DECODE_ERRORS.count += 1
        DECODE_ERRORS.record(f"skipping sample {key!r} in shard {url}: {exc!r}")
        return None
    meta["__key__"], meta["__url__"] = key, url
    return image, meta


def _transform(sample: tuple[Any, dict], transform: Callable | None) -> tuple[Any, dict]:
    image, meta = sample
    return (transform(image) if transform is not None else image), meta


class ShardDataset(wds.DataPipeline):
    """The reader's pipeline; `set_epoch(e)` reshuffles shards (and samples) for epoch `e`."""

    shards: EpochShardList

    def set_epoch(self, epoch: int) -> None:
        self.shards.epoch = epoch


def make_dataset(
    urls: str | Path | Sequence[str | Path],
    *,
    transform: Callable[[Image.Image], Any] | None = None,
    shuffle_buffer: int = 1000,
    seed: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
    keep_meta: bool = True,
    decode: bool = True,
    decoder: Callable[[bytes], Any] = open_image,
) -> ShardDataset:
    """webdataset pipeline yielding (transform(image), meta) with meta = JSON + '__key__', '__url__'.

    Shards are permuted by (seed, epoch), split by rank, then by loader worker
    (`wds.split_by_worker`), read, shuffled in a buffer of `shuffle_buffer` samples (0: keep the
    order) and decoded by `decoder` (bytes -> image; the accelerator path's draft-decoding one);
    an undecodable sample is skipped, counted in `DECODE_ERRORS` and warned.
    """
    urls = shard_urls(urls)
    rank, world_size = resolve_world(rank, world_size)
    shards = EpochShardList(urls, seed=seed, shuffle=shuffle_buffer > 0)
    stages = [
        shards,
        partial(split_by_rank, rank=rank, world_size=world_size),
        wds.split_by_worker,
        wds.tarfile_to_samples(handler=_shard_error),
    ]
    if shuffle_buffer > 0:
        stages.append(_EpochShuffle(shards, shuffle_buffer, rank))
    stages += [
        wds.map(partial(_decode, decode=decode, keep_meta=keep_meta, decoder=decoder)),
        wds.map(partial(_transform, transform=transform)),
    ]
    dataset = ShardDataset(*stages)
    dataset.shards = shards
    return dataset


def iter_samples(
    path: str | Path | Sequence[str | Path], decode: bool = True
) -> Iterator[tuple[str, Image.Image | None, dict]]:
    """Every sample once, in shard order, in this process, unaugmented: (key, image or None, meta).
    For feature extraction, evaluation and label counting; corrupt images are skipped and counted."""
    dataset = make_dataset(path, shuffle_buffer=0, rank=0, world_size=1, decode=decode)
    for image, meta in dataset:
        yield meta["__key__"], image, meta


# --- the training loader ----------------------------------------------------------------------


def collate(batch: list[tuple[Any, dict]]) -> tuple[Any, list[dict]]:
    """(default_collate of the images, list of metas): a list-of-views transform gives a list of
    batched tensors; metas stay a list of dicts. PIL images (no transform) stay a list."""
    images = [b[0] for b in batch]
    if not isinstance(images[0], Image.Image):
        images = default_collate(images)
    return images, [b[1] for b in batch]


class _QuietOnSigterm:
    """Loader worker start-up: ignore SIGTERM (SLURM signals every process of a job step; the main
    process stops at a step boundary and ends its workers itself), then the caller's own init."""

    def __init__(self, init: Callable[[int], None] | None) -> None:
        self.init = init

    def __call__(self, worker_id: int) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if self.init is not None:
            self.init(worker_id)


class ShardLoader(wds.WebLoader):
    """A `wds.WebLoader` whose epoch is exactly `steps` batches on every rank, with `len()`.

    Each `iter()` starts a new epoch (new shard permutation). `with_epoch(steps)` sits on the
    loader, so if this rank's shards run dry before `steps` batches the loader starts over on
    them; if it has more, the epoch is cut at `steps`. Every rank therefore runs the same number
    of steps, so DDP's collective calls never wait for a rank that has stopped (no hang). Its
    workers ignore SIGTERM (the run stops them after saving).
    """

    def __init__(self, dataset: ShardDataset, steps: int, **loader_kwargs: Any) -> None:
        init = _QuietOnSigterm(loader_kwargs.pop("worker_init_fn", None))
        super().__init__(
            dataset, batch_size=None, shuffle=False, worker_init_fn=init, **loader_kwargs
        )
        self.steps, self.epoch, self.reader = steps, 0, dataset
        self.with_epoch(steps)

    def __len__(self) -> int:
        return self.steps

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator:
        self.reader.set_epoch(self.epoch)
        self.epoch += 1
        done = 0
        for batch in super().__iter__():
            done += 1
            yield batch
        if done < self.steps:
            raise DataError(
                f"shard loader gave {done} of {self.steps} batches: too few samples per worker "
                "for one batch (fewer workers, a smaller batch or more shards would help)"
            )


def make_loader(
    shards: str | Path | Sequence[str | Path],
    *,
    batch_size: int,
    transform: Callable[[Image.Image], Any] | None,
    num_workers: int = 0,
    shuffle_buffer: int = 1000,
    seed: int = 0,
    epoch_samples: int | None = None,
    drop_last: bool = True,
    decoder: Callable[[bytes], Any] = open_image,
    rank: int | None = None,
    world_size: int | None = None,
    **loader_kwargs: Any,
) -> ShardLoader:
    """Loader of (collated images, metas) batches with the same number of steps on every rank.

    steps per rank = epoch_samples // (world_size * batch_size) (ceil when not `drop_last`);
    epoch_samples defaults to the manifest's num_samples. Batches are formed in the workers,
    always full. With as many equal shards per rank and worker, every sample is read once per
    epoch; otherwise ranks that run dry re-read some of their shards. Keep many more shards than
    world_size * num_workers.
    """
    urls = shard_urls(shards)
    rank, world_size = resolve_world(rank, world_size)
    total = _epoch_samples(shards, epoch_samples)
    per_step = world_size * batch_size
    steps = total // per_step if drop_last else math.ceil(total / per_step)
    if steps < 1:
        raise DataError(f"{total} samples per epoch is less than one step of {per_step}")
    if len(urls) < world_size:
        raise DataError(f"{len(urls)} shards cannot feed {world_size} ranks; make more shards")
    if len(urls) < world_size * max(1, num_workers):
        warnings.warn(
            f"{len(urls)} shards for {world_size} ranks x {max(1, num_workers)} workers: "
            "some workers get no shard; make more, smaller shards",
            stacklevel=2,
        )
    dataset = make_dataset(
        urls,
        transform=transform,
        decoder=decoder,
        shuffle_buffer=shuffle_buffer,
        seed=seed,
        rank=rank,
        world_size=world_size,
    )
    dataset = dataset.compose(wds.batched(batch_size, collation_fn=collate, partial=False))
    return ShardLoader(dataset, steps, num_workers=num_workers, **loader_kwargs)


def require_shards(value: str, key: str) -> None:
    """`value` names readable shards: a folder with a shard manifest.json, a manifest file, or a
    brace pattern / tar path whose every file exists."""
    if "{" not in value:
        require_path(value, key, "shard folder")
    try:
        urls = shard_urls(value)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    missing = [u for u in urls if not Path(u).is_file()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise ConfigError(f"{key}: shard {missing[0]!r}{more} {not_found(missing[0])}")
