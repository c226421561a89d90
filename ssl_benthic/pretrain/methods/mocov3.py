"""MoCo v3 (Chen, Xie & He 2021): symmetric contrastive loss between predicted queries and momentum keys.

loss = ntxent(pred(q(v1)), k(v2)) + ntxent(pred(q(v2)), k(v1)) with in-batch negatives gathered over
ranks (lightly's NTXentLoss, which also counts same-view negatives); BN in both MLPs; BYOL-style views.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import MoCoProjectionHead
from lightly.models.utils import deactivate_requires_grad
from torch import Tensor, nn

from ssl_benthic.pretrain.config import TransformConfig
from ssl_benthic.pretrain.methods import register_method
from ssl_benthic.pretrain.methods.base import SSLMethod
from ssl_benthic.pretrain.methods.byol import byol_views


@dataclass
class MoCoV3Params:
    proj_hidden_dim: int = 4096
    proj_dim: int = 256
    proj_layers: int = 3
    pred_hidden_dim: int = 4096
    temperature: float = 0.2
    momentum_start: float = 0.99
    momentum_end: float = 1.0
    freeze_patch_embed: bool = False


@register_method
class MoCoV3(SSLMethod):
    name = "mocov3"
    Params = MoCoV3Params

    @classmethod
    def build_transform(cls, t: TransformConfig) -> Callable:
        return byol_views(t, cls.name)

    def _projection(self) -> nn.Module:
        p = self.params
        return MoCoProjectionHead(
            self.dim, p.proj_hidden_dim, p.proj_dim, num_layers=p.proj_layers, batch_norm=True
        )

    def build(self) -> None:
        p = self.params
        if p.freeze_patch_embed:
            if not hasattr(self.backbone, "patch_embed"):
                raise ValueError("method.params.freeze_patch_embed needs a ViT backbone")
            deactivate_requires_grad(self.backbone.patch_embed)
        self.projection_head = self._projection()
        self.prediction_head = MoCoProjectionHead(
            p.proj_dim, p.pred_hidden_dim, p.proj_dim, num_layers=2, batch_norm=True
        )
        self.teacher_backbone = self.make_teacher_backbone()
        self.teacher_projection_head = self.make_teacher(self.projection_head, self._projection)
        self.criterion = NTXentLoss(temperature=p.temperature, gather_distributed=True)

    def teacher_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [
            (self.backbone, self.teacher_backbone),
            (self.projection_head, self.teacher_projection_head),
        ]

    def compute_loss(self, views: list[Tensor]) -> Tensor:
        v0, v1 = views[0], views[1]
        q0 = self.prediction_head(self.projection_head(self.backbone(v0)))
        q1 = self.prediction_head(self.projection_head(self.backbone(v1)))
        with torch.no_grad():
            k0 = self.teacher_projection_head(self.teacher_backbone(v0))
            k1 = self.teacher_projection_head(self.teacher_backbone(v1))
        return self.criterion(q0, k1) + self.criterion(q1, k0)
