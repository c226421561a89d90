"""DINO (Caron et al. 2021): self-distillation of a centred, sharpened teacher into a multi-crop student.

loss = mean over (teacher global view t, student view s != t) of H(softmax((g_t - c) / T_t), softmax(g_s / T_s)),
with centre c an EMA of teacher outputs (all-reduced over ranks) and T_t warmed up linearly over epochs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from lightly.loss import DINOLoss
from lightly.models.modules import DINOProjectionHead
from lightly.transforms import DINOTransform
from torch import Tensor, nn

from ssl_benthic.pretrain.config import PretrainConfig, TransformConfig
from ssl_benthic.pretrain.methods import register_method
from ssl_benthic.pretrain.methods.base import SSLMethod


@dataclass
class DINOParams:
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    output_dim: int = 65536
    batch_norm: bool = False
    norm_last_layer: bool = True
    freeze_last_layer_epochs: int = 1
    warmup_teacher_temp: float = 0.04
    teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: int = 30
    student_temp: float = 0.1
    center_momentum: float = 0.9
    momentum_start: float = 0.996
    momentum_end: float = 1.0


@register_method
class DINO(SSLMethod):
    name = "dino"
    Params = DINOParams

    @classmethod
    def check(cls, cfg: PretrainConfig) -> None:
        """As every method, and refuse spawn strategies: the weight-normalised head cannot be pickled."""
        super().check(cfg)
        if "spawn" in cfg.trainer.strategy:
            raise ValueError(
                "trainer.strategy: DINO's weight-normalised head cannot be pickled for "
                f"'{cfg.trainer.strategy}'; use strategy: ddp"
            )

    @classmethod
    def build_transform(cls, t: TransformConfig) -> Callable:
        kw: dict[str, Any] = dict(
            global_crop_size=t.input_size,
            local_crop_size=t.local_crop_size,
            n_local_views=t.n_local_views,
            cj_prob=t.cj_prob,
            hf_prob=t.hf_prob,
            vf_prob=t.vf_prob,
            rr_prob=t.rr_prob,
            normalize={"mean": list(t.mean), "std": list(t.std)},
        )
        if t.global_crop_scale is not None:
            kw["global_crop_scale"] = tuple(t.global_crop_scale)
        if t.local_crop_scale is not None:
            kw["local_crop_scale"] = tuple(t.local_crop_scale)
        if t.cj_strength is not None:
            kw["cj_strength"] = t.cj_strength
        kw.update(t.extra)
        return DINOTransform(**kw)

    def extra_backbone_kwargs(self) -> dict[str, Any]:
        """ViTs must accept the smaller local crops: timm's dynamic_img_size."""
        probe = self.cfg.backbone.name
        from timm.models import model_entrypoint

        module = model_entrypoint(probe).__module__
        vit_like = any(k in module for k in ("vision_transformer", "deit", "eva", "beit"))
        return {"dynamic_img_size": True} if vit_like else {}

    def _head(self, freeze_last_layer: int = -1) -> nn.Module:
        p = self.params
        return DINOProjectionHead(
            self.dim,
            p.hidden_dim,
            p.bottleneck_dim,
            p.output_dim,
            batch_norm=p.batch_norm,
            freeze_last_layer=freeze_last_layer,
            norm_last_layer=p.norm_last_layer,
        )

    def build(self) -> None:
        p = self.params
        self.projection_head = self._head(p.freeze_last_layer_epochs)
        self.teacher_backbone = self.make_teacher_backbone()
        self.teacher_projection_head = self.make_teacher(self.projection_head, self._head)
        self.criterion = DINOLoss(
            output_dim=p.output_dim,
            warmup_teacher_temp=p.warmup_teacher_temp,
            teacher_temp=p.teacher_temp,
            warmup_teacher_temp_epochs=p.warmup_teacher_temp_epochs,
            student_temp=p.student_temp,
            center_momentum=p.center_momentum,
        )

    def teacher_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [
            (self.backbone, self.teacher_backbone),
            (self.projection_head, self.teacher_projection_head),
        ]

    def compute_loss(self, views: list[Tensor]) -> Tensor:
        global_views = torch.cat(views[:2])
        with torch.no_grad():
            teacher = self.teacher_projection_head(self.teacher_backbone(global_views))
        student = [self.projection_head(self.backbone(global_views))]
        # local crops share one size, so they go through the student as one batch
        if len(views) > 2:
            student.append(self.projection_head(self.backbone(torch.cat(views[2:]))))
        student_out = torch.cat(student).chunk(len(views))
        epoch = self.current_epoch if self._trainer is not None else 0
        return self.criterion(teacher.chunk(2), list(student_out), epoch=epoch)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.projection_head.cancel_last_layer_gradients(self.current_epoch)
        super().on_before_optimizer_step(optimizer)
