"""MoCo v2 (Chen et al. 2020): InfoNCE of queries against momentum-encoder keys and a queue of keys.

loss = CE([q.k+, q.K_queue] / tau, 0) via lightly's NTXentLoss with a memory bank; the queue is saved in
checkpoints (lightly keeps it out of the state dict) so a resumed run carries on with the same negatives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import MoCoProjectionHead
from lightly.models.utils import batch_shuffle, batch_unshuffle
from lightly.transforms import MoCoV2Transform
from torch import Tensor, nn

from ssl_benthic.pretrain.config import TransformConfig
from ssl_benthic.pretrain.methods import register_method
from ssl_benthic.pretrain.methods.base import SSLMethod, view_kwargs


@dataclass
class MoCoV2Params:
    proj_hidden_dim: int = 2048
    proj_dim: int = 128
    temperature: float = 0.2
    memory_bank_size: int = 65536
    momentum_start: float = 0.999
    momentum_end: float = 0.999
    shuffle_bn: bool = True
    symmetric: bool = False


@register_method
class MoCoV2(SSLMethod):
    name = "mocov2"
    Params = MoCoV2Params

    @classmethod
    def build_transform(cls, t: TransformConfig) -> Callable:
        return MoCoV2Transform(**view_kwargs(t, cls.name))

    def _head(self) -> nn.Module:
        p = self.params
        return MoCoProjectionHead(self.dim, p.proj_hidden_dim, p.proj_dim)

    def build(self) -> None:
        p = self.params
        self.projection_head = self._head()
        self.teacher_backbone = self.make_teacher_backbone()
        self.teacher_projection_head = self.make_teacher(self.projection_head, self._head)
        # gather_distributed: every rank enqueues the keys of all ranks, so queues stay identical.
        self.criterion = NTXentLoss(
            temperature=p.temperature,
            memory_bank_size=(p.memory_bank_size, p.proj_dim),
            gather_distributed=True,
        )

    def teacher_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [
            (self.backbone, self.teacher_backbone),
            (self.projection_head, self.teacher_projection_head),
        ]

    @torch.no_grad()
    def keys(self, x: Tensor) -> Tensor:
        """Teacher projections, with batch shuffling so BN statistics cannot leak the positive."""
        shuffle = self.params.shuffle_bn
        if shuffle:
            x, idx = batch_shuffle(x, distributed=self._world_size() > 1)
        k = self.teacher_projection_head(self.teacher_backbone(x))
        return batch_unshuffle(k, idx, distributed=self._world_size() > 1) if shuffle else k

    def _world_size(self) -> int:
        return self.trainer.world_size if self._trainer is not None else 1

    def compute_loss(self, views: list[Tensor]) -> Tensor:
        q0 = self.projection_head(self.backbone(views[0]))
        loss = self.criterion(q0, self.keys(views[1]))
        if self.params.symmetric:
            q1 = self.projection_head(self.backbone(views[1]))
            loss = 0.5 * (loss + self.criterion(q1, self.keys(views[0])))
        return loss

    def extra_state(self) -> dict[str, Tensor]:
        bank = self.criterion.memory_bank
        return {"memory_bank": bank.bank, "memory_bank_ptr": bank.bank_ptr}

    def load_extra_state(self, state: dict[str, Tensor]) -> None:
        bank = self.criterion.memory_bank
        if "memory_bank" in state:
            bank.bank.copy_(state["memory_bank"])
            bank.bank_ptr.copy_(state["memory_bank_ptr"])
