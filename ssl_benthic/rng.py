"""Randomness that a resumed run repeats exactly, in both stages.

The data stream's generator is reseeded per epoch (see `ssl_benthic.train.SeededEpochs`); the model's
own randomness (dropout, drop-path, batch shuffles) draws inside `step_rng`, from a generator seeded
by (seed, step, rank) and set apart from the data's, so a run resumed mid-epoch draws the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["step_rng"]


@contextmanager
def step_rng(seed: int, step: int, rank: int, device: torch.device) -> Iterator[None]:
    """Global RNG seeded by (seed, step, rank) inside the block, restored after it."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed * 1_000_003 + step * 101 + rank)
        yield
