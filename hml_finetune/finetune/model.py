"""A timm backbone plus one HML ensemble head per hierarchy root; linear (frozen) or finetune mode.

Flat multi-label heads (e.g. colour) are depth-1 hierarchies, so they are ordinary HML heads here;
single-label heads (one class per image) are one `MLPHead` each, scored by softmax.

Linear mode freezes the encoder: no gradients AND batch-norm statistics frozen (the backbone stays in
eval() even while the heads train), so its features are a fixed function of the image and can be
computed once per split and cached (`features.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import timm
import torch
from torch import nn
from torchvision.transforms import v2 as T

from hml_finetune.finetune.config import (
    BackboneConfig,
    FinetuneConfig,
    HeadsConfig,
)
from hml_finetune.hml.heads import EnsembleHeads, MLPHead
from hml_finetune.hml.hierarchy import Hierarchy
from ssl_benthic.core.normalization import BENTHICNET_LABELLED_MEAN, BENTHICNET_LABELLED_STD
from ssl_benthic.weights.backbones import create_backbone, feature_dim, read_export

__all__ = [
    "HMLModel",
    "backbone_kwargs",
    "build_backbone",
    "mix_random_weights",
    "resolve_norm",
    "image_transform",
    "autocast",
]

NOISE_STREAM = 104_729  # offsets the seed of the fresh weights mixed in by encoder_noise


def backbone_kwargs(cfg: BackboneConfig) -> dict[str, Any]:
    """timm kwargs the architecture needs: img_size, plus an export's `model_kwargs` (e.g. ViT patch)."""
    kwargs: dict[str, Any] = {}
    if cfg.weights not in ("random", "imagenet"):
        kwargs.update(read_export(cfg.weights)[1].get("model_kwargs") or {})
    if cfg.img_size is not None:
        kwargs["img_size"] = cfg.img_size
    return kwargs


@torch.no_grad()
def mix_random_weights(model: nn.Module, fresh: nn.Module, alpha: float) -> None:
    """In place, every floating tensor of the state: w = (1 - alpha) w + alpha w_fresh.

    Parameters and buffers (BN running statistics) alike; integer buffers (BN step counts) are kept.
    alpha = 0 leaves the model untouched; alpha = 1 copies `fresh` exactly.
    """
    if alpha == 0.0:
        return
    new = fresh.state_dict()
    for key, value in model.state_dict().items():
        if not value.is_floating_point():
            continue
        if alpha == 1.0:
            value.copy_(new[key])
        else:
            value.mul_(1.0 - alpha).add_(new[key].to(value), alpha=alpha)


def build_backbone(cfg: BackboneConfig, encoder_noise: float = 0.0, seed: int = 0) -> nn.Module:
    """`create_backbone` from the config, then `encoder_noise` of fresh weights (seeded) mixed in."""
    kwargs = {"img_size": cfg.img_size} if cfg.img_size is not None else {}
    model = create_backbone(
        cfg.name, weights=cfg.weights, weights_file=cfg.weights_file, pool=cfg.pool, **kwargs
    )
    if encoder_noise > 0.0:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + NOISE_STREAM)
            fresh = timm.create_model(
                cfg.name, pretrained=False, **{"num_classes": 0, **backbone_kwargs(cfg)}
            )
        mix_random_weights(model, fresh, encoder_noise)
    return model


def resolve_norm(cfg: FinetuneConfig, backbone: nn.Module | None = None) -> tuple[list, list]:
    """(mean, std): the config's, else the export JSON's, else timm's ImageNet statistics for
    imagenet weights, else the BenthicNet labelled-subset statistics."""
    mean, std = cfg.data.mean, cfg.data.std
    weights = cfg.backbone.weights
    if mean is None or std is None:
        if weights not in ("random", "imagenet"):
            meta = read_export(weights)[1]
            src_mean, src_std = (
                meta.get("mean", BENTHICNET_LABELLED_MEAN),
                meta.get("std", BENTHICNET_LABELLED_STD),
            )
        elif weights == "imagenet" and backbone is not None:
            pcfg = getattr(backbone, "pretrained_cfg", {}) or {}
            src_mean, src_std = (
                pcfg.get("mean", BENTHICNET_LABELLED_MEAN),
                pcfg.get("std", BENTHICNET_LABELLED_STD),
            )
        else:
            src_mean, src_std = BENTHICNET_LABELLED_MEAN, BENTHICNET_LABELLED_STD
        mean = mean if mean is not None else src_mean
        std = std if std is not None else src_std
    return [float(v) for v in mean], [float(v) for v in std]


def image_transform(
    img_size: int, mean: Sequence[float], std: Sequence[float], augment: bool
) -> Callable:
    """PIL -> normalised tensor. Eval: resize short side + centre crop. Augment: random resized
    crop (scale 0.5-1) and horizontal/vertical flips (seafloor images have no up)."""
    if augment:
        geometry = [
            T.RandomResizedCrop(img_size, scale=(0.5, 1.0), antialias=True),
            T.RandomHorizontalFlip(),
            T.RandomVerticalFlip(),
        ]
    else:
        geometry = [T.Resize(img_size, antialias=True), T.CenterCrop(img_size)]
    tail = [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(mean, std)]
    return T.Compose([*geometry, *tail])


class HMLModel(nn.Module):
    """Backbone -> pooled features -> {head: logits}: (H, B, K) per HML head (`heads`), (B, C) per
    single-label head (`single_heads`, classes in `single`); `frozen` = linear-probe mode."""

    def __init__(
        self,
        backbone: nn.Module,
        hierarchies: dict[str, Hierarchy],
        heads: HeadsConfig,
        frozen: bool,
        single: dict[str, list[str]] | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.frozen = frozen
        self.temperatures: dict[
            str, float
        ] = {}  # per HML head, fitted after training (calibration)
        self.encoder_paused = False  # finetune mode, first epochs: heads only (see HMLModule)
        dim = feature_dim(backbone)
        self.heads = nn.ModuleDict(
            {
                name: EnsembleHeads(
                    dim, h, heads.n_heads, heads.hidden, heads.dropout, heads.activation
                )
                for name, h in hierarchies.items()
            }
        )
        self.single = {name: list(classes) for name, classes in (single or {}).items()}
        self.single_heads = nn.ModuleDict(
            {
                name: MLPHead(dim, len(classes), heads.hidden, heads.dropout, heads.activation)
                for name, classes in self.single.items()
            }
        )
        if frozen:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    def train(self, mode: bool = True) -> HMLModel:
        """As nn.Module.train, but a frozen or paused backbone stays in eval (BN statistics never
        update)."""
        super().train(mode)
        if self.frozen or self.encoder_paused:
            self.backbone.eval()
        return self

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features (B, D); no autograd graph when frozen or paused."""
        trainable = not (self.frozen or self.encoder_paused)
        with torch.set_grad_enabled(torch.is_grad_enabled() and trainable):
            return self.backbone(images)

    def head_modules(self) -> nn.ModuleList:
        """Every trainable head (HML and single-label), for the optimiser."""
        return nn.ModuleList([self.heads, self.single_heads])

    def head_logits(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {name: head(features) for name, head in self.heads.items()}
        out.update({name: head(features) for name, head in self.single_heads.items()})
        return out

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head_logits(self.encode(images))

    @torch.no_grad()
    def predict_features(
        self, features: torch.Tensor, calibrated: bool = True
    ) -> dict[str, torch.Tensor]:
        """Per HML head the ensemble's constrained probabilities (B, K) of logits / T (T from
        `temperatures`, 1 when absent or `calibrated` is False); per single-label head the softmax
        class probabilities (B, C)."""
        logits = self.head_logits(features)
        temps = self.temperatures if calibrated else {}
        return {
            n: self.heads[n].predict_from_logits(z.float() / temps.get(n, 1.0))
            if n in self.heads
            else torch.softmax(z.float(), dim=-1)
            for n, z in logits.items()
        }


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """Mixed precision as the recipe's `trainer.precision` says (bf16 / 16), else a no-op."""
    dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float16
    enabled = precision.startswith(("bf16", "16"))
    return torch.autocast(device.type, dtype=dtype, enabled=enabled)
