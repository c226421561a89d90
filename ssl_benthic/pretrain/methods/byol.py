"""BYOL (Grill et al. 2020): the student predicts the momentum teacher's projection of the other view.

loss = 2 * (negcos(p(z_s(v1)), z_t(v2)) + negcos(p(z_s(v2)), z_t(v1))), i.e. the sum of the two
normalised-L2 terms ||p/|p| - z/|z|||^2 = 2 - 2 cos, as in lightly's ImageNet benchmark.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
from lightly.transforms import BYOLTransform, BYOLView1Transform, BYOLView2Transform
from torch import Tensor, nn

from ssl_benthic.pretrain.config import TransformConfig
from ssl_benthic.pretrain.methods import register_method
from ssl_benthic.pretrain.methods.base import SSLMethod, view_kwargs


def byol_views(t: TransformConfig, method: str) -> BYOLTransform:
    """BYOL's two asymmetric views (view 1 always blurred, view 2 sometimes solarised), which MoCo
    v3 and Barlow Twins use as well."""
    kw = view_kwargs(t, method)
    return BYOLTransform(BYOLView1Transform(**kw), BYOLView2Transform(**kw))


@dataclass
class BYOLParams:
    proj_hidden_dim: int = 4096
    proj_dim: int = 256
    pred_hidden_dim: int = 4096
    momentum_start: float = 0.99
    momentum_end: float = 1.0


@register_method
class BYOL(SSLMethod):
    name = "byol"
    Params = BYOLParams

    @classmethod
    def build_transform(cls, t: TransformConfig) -> Callable:
        return byol_views(t, cls.name)

    def build(self) -> None:
        p = self.params
        self.projection_head = BYOLProjectionHead(self.dim, p.proj_hidden_dim, p.proj_dim)
        self.prediction_head = BYOLPredictionHead(p.proj_dim, p.pred_hidden_dim, p.proj_dim)
        self.teacher_backbone = self.make_teacher_backbone()
        self.teacher_projection_head = self.make_teacher(
            self.projection_head,
            lambda: BYOLProjectionHead(self.dim, p.proj_hidden_dim, p.proj_dim),
        )
        self.criterion = NegativeCosineSimilarity()

    def teacher_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [
            (self.backbone, self.teacher_backbone),
            (self.projection_head, self.teacher_projection_head),
        ]

    def compute_loss(self, views: list[Tensor]) -> Tensor:
        v0, v1 = views[0], views[1]
        with torch.no_grad():
            t0 = self.teacher_projection_head(self.teacher_backbone(v0))
            t1 = self.teacher_projection_head(self.teacher_backbone(v1))
        p0 = self.prediction_head(self.projection_head(self.backbone(v0)))
        p1 = self.prediction_head(self.projection_head(self.backbone(v1)))
        return 2 * self.criterion(p0, t1) + 2 * self.criterion(p1, t0)
