"""The device half of `transform.device: accelerator`, and channels-last batches.

`DeviceViews` finishes the worker crops of every view on the training device, batched, with
per-sample parameters. `BatchOnDevice` is what `SSLMethod.on_after_batch_transfer` runs on each
training batch; `ChannelsLast` puts the model in channels-last memory format before the strategy wraps it.

Determinism: a batch's parameters are drawn from a CPU `torch.Generator` seeded by (seed, global
step, rank, micro-batch within the step), never from global RNG state. A resumed run therefore draws
exactly what an uninterrupted one draws at the same step: this replaces storing the generator's state
in the checkpoint, with the same guarantee. The draws are on the CPU, so CPU and CUDA runs of one
recipe draw the same parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as F

from ssl_benthic.pretrain.augment.ops import DeviceOp, Params
from ssl_benthic.pretrain.augment.translate import ViewPlan, plan_views

__all__ = ["DeviceViews", "BatchOnDevice", "ChannelsLast", "augment_generator"]

_STREAM = (
    0x5EED_A06  # sets these draws apart from the model's (`ssl_benthic.core.seeding.step_rng`)
)


def augment_generator(seed: int, step: int, rank: int, micro: int = 0) -> torch.Generator:
    """CPU generator seeded by (seed, step, rank, micro-batch), well mixed by numpy's SeedSequence."""
    words = [v % 2**64 for v in (seed, step, rank, micro, _STREAM)]
    state = np.random.SeedSequence(words).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


class DeviceView:
    """One view's device ops: uint8 crops -> float32 in [0, 1] -> the ops in the Compose's order."""

    def __init__(self, plan: ViewPlan) -> None:
        self.size = plan.size
        self.ops: tuple[DeviceOp, ...] = plan.ops

    def draw(self, n: int, gen: torch.Generator) -> list[Params]:
        """Per-op parameters of n samples."""
        return [op.draw(n, gen) for op in self.ops]

    def apply(self, crops: Tensor, params: list[Params]) -> Tensor:
        """The view of uint8 crops (n, C, H, W) with drawn parameters, as float32."""
        if crops.dtype != torch.uint8 or tuple(crops.shape[-2:]) != self.size:
            raise ValueError(
                f"expected uint8 crops of size {self.size}, got {crops.dtype} {tuple(crops.shape)}"
            )
        x = F.to_dtype(crops, torch.float32, scale=True)
        with torch.autocast(device_type=x.device.type, enabled=False):
            for op, p in zip(self.ops, params, strict=True):
                x = op.apply(x, p)
        return x


class DeviceViews:
    """Every view of a method's lightly transform, finished batched on the device."""

    def __init__(self, plans: Sequence[ViewPlan]) -> None:
        self.views = [DeviceView(p) for p in plans]

    @classmethod
    def from_transform(cls, transform: Any) -> DeviceViews:
        """Read the device ops out of a constructed lightly (multi- or single-view) transform."""
        return cls(plan_views(transform))

    def draw(self, n: int, gen: torch.Generator) -> list[list[Params]]:
        """Parameters of every view for n samples, view by view."""
        return [v.draw(n, gen) for v in self.views]

    def __call__(self, crops: Sequence[Tensor], gen: torch.Generator) -> list[Tensor]:
        if len(crops) != len(self.views):
            raise ValueError(f"expected {len(self.views)} views, got {len(crops)}")
        params = self.draw(crops[0].shape[0], gen)
        return [v.apply(c, p) for v, c, p in zip(self.views, crops, params, strict=True)]


class BatchOnDevice:
    """A training batch (views, metas) once on the device: worker crops finished by `views` (None:
    the CPU path finished them), then channels-last memory format if asked for."""

    def __init__(self, views: DeviceViews | None, channels_last: bool, seed: int) -> None:
        self.views, self.channels_last, self.seed = views, channels_last, seed
        self._step, self._micro = -1, 0

    def _micro_batch(self, step: int) -> int:
        """Batches already seen at this optimiser step (gradient accumulation), from 0."""
        self._micro = self._micro + 1 if step == self._step else 0
        self._step = step
        return self._micro

    def __call__(self, batch: Any, step: int, rank: int) -> Any:
        views, metas = batch
        views = list(views)
        if self.views is not None:
            gen = augment_generator(self.seed, step, rank, self._micro_batch(step))
            views = self.views(views, gen)
        if self.channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        return views, metas


class ChannelsLast(pl.Callback):
    """The model in channels-last memory format (a GPU speed-up for convolutions), set in `setup`:
    before a checkpoint is restored into it and before the strategy moves and wraps it (DDP)."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        pl_module.to(memory_format=torch.channels_last)
