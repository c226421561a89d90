"""Barlow Twins (Zbontar et al. 2021): the cross-correlation of two views' embeddings is pushed to identity.

With z_a, z_b the two views' projections standardised over the batch and C = z_a^T z_b / N (averaged
over ranks), loss = sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2 (lightly's BarlowTwinsLoss). No
teacher, no negatives; BYOL's asymmetric views, as the paper and lightly's ImageNet benchmark.

`projection_head.layers` has solo-learn's `projector` layout (Linear 0, BN 1, ReLU 2, Linear 3, BN 4,
ReLU 5, Linear 6), but the two Linear layers before a BN have no bias.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lightly.loss import BarlowTwinsLoss
from lightly.models.modules import BarlowTwinsProjectionHead
from torch import Tensor

from ssl_benthic.pretrain.config import TransformConfig
from ssl_benthic.pretrain.methods import register_method
from ssl_benthic.pretrain.methods.base import SSLMethod
from ssl_benthic.pretrain.methods.byol import byol_views


@dataclass
class BarlowTwinsParams:
    proj_hidden_dim: int = 8192
    proj_dim: int = 8192
    lambda_param: float = 5e-3


@register_method
class BarlowTwins(SSLMethod):
    name = "barlowtwins"
    Params = BarlowTwinsParams
    # solo-learn's (BenthicNet's) projector, and this toolkit's own, keep lightly's layer indices
    head_import = {"projector.": "projection_head.layers", "projection_head.": "projection_head"}

    @classmethod
    def build_transform(cls, t: TransformConfig) -> Callable:
        return byol_views(t, cls.name)

    def build(self) -> None:
        p = self.params
        self.projection_head = BarlowTwinsProjectionHead(self.dim, p.proj_hidden_dim, p.proj_dim)
        # gather_distributed: every rank's C (standardised on its own batch) is averaged over ranks
        self.criterion = BarlowTwinsLoss(lambda_param=p.lambda_param, gather_distributed=True)

    def compute_loss(self, views: list[Tensor]) -> Tensor:
        z0 = self.projection_head(self.backbone(views[0]))
        z1 = self.projection_head(self.backbone(views[1]))
        return self.criterion(z0, z1)
