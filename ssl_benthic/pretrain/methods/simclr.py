"""SimCLR (Chen et al. 2020): each view's positive is the other view of its image, negatives the rest.

loss = NT-Xent: mean over the 2N embeddings z_i of -log(exp(s(z_i, z_j+) / tau) / sum_{k != i} exp(s(z_i, z_k)
/ tau)), s the cosine similarity, j+ the other view of i's image, k over both views of the batch gathered
from all ranks (lightly's NTXentLoss with gather_distributed), tau = 0.1. SimCLR's views (strong colour
jitter 0.8, blur with probability 0.5).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from lightly.transforms import SimCLRTransform
from torch import Tensor

from ssl_benthic.pretrain.config import TransformConfig
from ssl_benthic.pretrain.methods import register_method
from ssl_benthic.pretrain.methods.base import SSLMethod, view_kwargs


@dataclass
class SimCLRParams:
    proj_hidden_dim: int = 2048
    proj_dim: int = 128
    proj_layers: int = 2
    temperature: float = 0.1


@register_method
class SimCLR(SSLMethod):
    name = "simclr"
    Params = SimCLRParams

    @classmethod
    def build_transform(cls, t: TransformConfig) -> Callable:
        return SimCLRTransform(**view_kwargs(t, cls.name))

    def build(self) -> None:
        p = self.params
        self.projection_head = SimCLRProjectionHead(
            self.dim, p.proj_hidden_dim, p.proj_dim, num_layers=p.proj_layers
        )
        self.criterion = NTXentLoss(temperature=p.temperature, gather_distributed=True)

    def compute_loss(self, views: list[Tensor]) -> Tensor:
        z0 = self.projection_head(self.backbone(views[0]))
        z1 = self.projection_head(self.backbone(views[1]))
        return self.criterion(z0, z1)
