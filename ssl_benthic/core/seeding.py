"""Randomness that a resumed run repeats exactly, in both stages.

The data stream's generator is reseeded per epoch (`SeededEpochs`); the model's
own randomness (dropout, drop-path, batch shuffles) draws inside `step_rng`, from a generator seeded
by (seed, step, rank) and set apart from the data's, so a run resumed mid-epoch draws the same.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import numpy as np
import torch

__all__ = ["EpochLoader", "SeededEpochs", "reseed", "step_rng"]


class EpochLoader(Protocol):
    """What `SeededEpochs` needs of a loader (the shard loaders of both stages have it)."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Any]: ...

    def set_epoch(self, epoch: int) -> None: ...


@contextmanager
def step_rng(seed: int, step: int, rank: int, device: torch.device) -> Iterator[None]:
    """Global RNG seeded by (seed, step, rank) inside the block, restored after it."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed * 1_000_003 + step * 101 + rank)
        yield


def reseed(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (what loader-side augmentations draw from)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class SeededEpochs:
    """The shard loader, with every epoch a function of (seed, epoch, rank) only, and resumable.

    Each iteration sets the loader's epoch (its shard and sample permutation) and reseeds the
    augmentation RNGs when the epoch's first batch is drawn. Lightning stores `state_dict()` (epoch and
    batches drawn) in checkpoints; after `load_state_dict` the next iteration redraws and drops the
    batches already trained on, so a resumed run sees exactly the data and augmentations of an
    uninterrupted one (the price: re-reading that part of the epoch once).
    """

    def __init__(self, loader: EpochLoader, seed: int, rank: int) -> None:
        self.loader, self.seed, self.rank = loader, seed, rank
        self.epoch, self.current, self.drawn, self.skip = 0, 0, 0, 0

    def __len__(self) -> int:
        return len(self.loader)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.current, "drawn": self.drawn}

    def set_epoch(self, epoch: int) -> None:
        """Start the next iteration at `epoch` (for users that track epochs themselves)."""
        self.epoch, self.skip = epoch, 0

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue the epoch of `state` after its drawn batches, or start the next (idempotent)."""
        finished = state["drawn"] >= len(self)
        self.epoch = state["epoch"] + 1 if finished else state["epoch"]
        self.skip = 0 if finished else state["drawn"]

    def __iter__(self) -> Iterator[Any]:
        # Lightning stops after len(self) batches without exhausting us: book-keep before yielding
        epoch, skip = self.epoch, self.skip
        self.epoch, self.current, self.drawn, self.skip = epoch + 1, epoch, 0, 0
        self.loader.set_epoch(epoch)
        reseed((self.seed * 100_003 + epoch * 1_009 + self.rank) % 2**31)
        for i, batch in enumerate(self.loader):
            self.drawn = i + 1
            if i >= skip:
                yield batch
