"""SimSiam (Chen & He 2021): each view's prediction matches the other view's projection, stop-gradient.

loss = 0.5 * (negcos(h(z0), sg(z1)) + negcos(h(z1), sg(z0))), z = projection(backbone(view)), h the
prediction MLP, sg the stop-gradient that prevents collapse without negatives or a momentum teacher
(lightly's NegativeCosineSimilarity; the loss is -1 at best). SimSiam's views (colour jitter 0.4, blur 0.5).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import SimSiamPredictionHead, SimSiamProjectionHead
from lightly.transforms import SimSiamTransform
from torch import Tensor

from ssl_benthic.pretrain.config import TransformConfig
from ssl_benthic.pretrain.methods import register_method
from ssl_benthic.pretrain.methods.base import SSLMethod, view_kwargs


@dataclass
class SimSiamParams:
    proj_hidden_dim: int = 2048
    proj_dim: int = 2048
    pred_hidden_dim: int = 512


@register_method
class SimSiam(SSLMethod):
    name = "simsiam"
    Params = SimSiamParams

    @classmethod
    def build_transform(cls, t: TransformConfig) -> Callable:
        return SimSiamTransform(**view_kwargs(t, cls.name))

    def build(self) -> None:
        p = self.params
        self.projection_head = SimSiamProjectionHead(self.dim, p.proj_hidden_dim, p.proj_dim)
        self.prediction_head = SimSiamPredictionHead(p.proj_dim, p.pred_hidden_dim, p.proj_dim)
        self.criterion = NegativeCosineSimilarity()

    def compute_loss(self, views: list[Tensor]) -> Tensor:
        z0 = self.projection_head(self.backbone(views[0]))
        z1 = self.projection_head(self.backbone(views[1]))
        p0, p1 = self.prediction_head(z0), self.prediction_head(z1)
        return 0.5 * (self.criterion(p0, z1.detach()) + self.criterion(p1, z0.detach()))
