"""MAE (He et al. 2022): a ViT encodes a random quarter of each image's patches; a light decoder
predicts the pixels of the rest.

loss = mean over masked patches i of ||pred_i - norm(x_i)||^2 / (P^2 C), x_i the patch's pixels (of
the normalised view), norm(x) = (x - mean(x)) / sqrt(var(x) + 1e-6) over the patch (normalised-pixel
loss; `norm_pix_loss: false` regresses x_i itself). The encoder is lightly's
`MaskedVisionTransformerTIMM` around the timm ViT `backbone`, the decoder lightly's
`MaskedVisionTransformerDecoderTIMM` (the successor of `MAEDecoderTIMM`) between a linear embedding
and a linear pixel head; masks come from lightly's `random_token_mask`. Only `backbone.*` is
exported: the decoder is dropped. From random weights the encoder takes MAE's initialisation (fixed
sine-cosine position embeddings); from an export or import its weights are kept as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from lightly.models.modules import MaskedVisionTransformerTIMM
from lightly.models.modules.masked_vision_transformer_decoder_timm import (
    MaskedVisionTransformerDecoderTIMM,
)
from lightly.models.modules.masked_vision_transformer_timm import init_weights
from lightly.models.utils import (
    deactivate_requires_grad,
    get_at_index,
    normalize_mean_var,
    patchify,
    random_token_mask,
    repeat_token,
    set_at_index,
)
from lightly.transforms import MAETransform
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from ssl_benthic.pretrain.config import PretrainConfig, TransformConfig
from ssl_benthic.pretrain.methods import register_method
from ssl_benthic.pretrain.methods.base import SSLMethod, backbone_kwargs

# the view is lightly's MAETransform: a random resized crop and a horizontal flip with p 0.5
_FIXED_VIEW = {"hf_prob": 0.5, "vf_prob": 0.0, "rr_prob": 0.0}


@dataclass
class MAEParams:
    mask_ratio: float = 0.75
    decoder_dim: int = 512
    decoder_depth: int = 8
    decoder_num_heads: int = 16
    decoder_mlp_ratio: float = 4.0
    norm_pix_loss: bool = True


@register_method
class MAE(SSLMethod):
    name = "mae"
    Params = MAEParams

    @classmethod
    def check(cls, cfg: PretrainConfig) -> None:
        """As every method; and a timm VisionTransformer, a mask ratio in (0, 1), MAE's own view."""
        super().check(cfg)
        from ssl_benthic.weights.arch_detect import meta_model

        p = cls.parse_params(cfg.method.params)
        if not 0.0 < p.mask_ratio < 1.0:
            raise ValueError(f"method.params.mask_ratio must be in (0, 1), got {p.mask_ratio}")
        if not isinstance(meta_model(cfg.backbone.name, backbone_kwargs(cfg)), VisionTransformer):
            raise ValueError(
                f"backbone.name: MAE masks the patch tokens of a timm VisionTransformer; "
                f"'{cfg.backbone.name}' is not one (e.g. vit_base_patch16_224)"
            )
        for key, value in _FIXED_VIEW.items():
            if getattr(cfg.transform, key) != value:
                raise ValueError(
                    f"transform.{key}: MAE's view (lightly's MAETransform: crop, horizontal flip "
                    f"p 0.5) has {key} {value}, got {getattr(cfg.transform, key)}"
                )

    @classmethod
    def build_transform(cls, t: TransformConfig) -> Callable:
        """lightly's single-view MAETransform; `global_crop_scale` sets its crop's scale range."""
        kw: dict[str, Any] = dict(
            input_size=t.input_size, normalize={"mean": list(t.mean), "std": list(t.std)}
        )
        if t.global_crop_scale is not None:
            lo, hi = t.global_crop_scale
            if hi != 1.0:
                raise ValueError(f"transform.global_crop_scale: MAE views crop up to 1.0, got {hi}")
            kw["min_scale"] = lo
        kw.update(t.extra)
        return MAETransform(**kw)

    def build(self) -> None:
        vit = self.backbone
        self._check_grid(vit)
        # shares the backbone's modules: kept out of the module tree, so the state dict, the
        # optimiser and the export see each weight once, under `backbone.*`
        self.__dict__["encoder"] = self._encoder(vit)
        self.patch = int(vit.patch_embed.patch_size[0])
        self.num_patches = int(vit.patch_embed.num_patches)
        self.prefix = int(vit.num_prefix_tokens)
        self._build_decoder(int(vit.embed_dim), int(vit.patch_embed.proj.in_channels))

    def _encoder(self, vit: VisionTransformer) -> MaskedVisionTransformerTIMM:
        """lightly's masked encoder around `vit`: MAE's initialisation from random weights, the
        weights as they are from an export or import."""
        fresh = self.cfg.backbone.weights == "random"
        encoder = MaskedVisionTransformerTIMM(
            vit,
            weight_initialization="" if fresh else "skip",
            pos_embed_initialization="sincos" if fresh else "skip",
        )
        encoder.mask_token.requires_grad_(False)  # masked tokens are dropped, never replaced
        # what comes after the tokens (pooling norm, attention pool, an import's CLIP projection)
        # is off the loss's path: kept as it is (a trainable parameter without gradient stalls DDP)
        for name in ("fc_norm", "attn_pool", "head"):
            if isinstance(module := getattr(vit, name, None), nn.Module):
                deactivate_requires_grad(module)
        return encoder

    def _build_decoder(self, embed_dim: int, in_chans: int) -> None:
        """Linear embedding -> lightly's decoder (mask tokens, fixed sine-cosine positions) -> pixels."""
        p = self.params
        self.decoder_embed = nn.Linear(embed_dim, p.decoder_dim)
        self.decoder = MaskedVisionTransformerDecoderTIMM(
            num_patches=self.num_patches,
            embed_dim=p.decoder_dim,
            depth=p.decoder_depth,
            num_heads=p.decoder_num_heads,
            num_prefix_tokens=self.prefix,
            mlp_ratio=p.decoder_mlp_ratio,
        )
        self.decoder_pred = nn.Linear(p.decoder_dim, self.patch**2 * in_chans)
        self.decoder_embed.apply(init_weights)
        self.decoder_pred.apply(init_weights)

    def _check_grid(self, vit: nn.Module) -> None:
        """The views must fill the ViT's patch grid, and at least one patch must stay visible."""
        size = self.cfg.transform.input_size
        own = tuple(int(s) for s in vit.patch_embed.img_size)
        if own != (size, size):
            raise ValueError(
                f"transform.input_size {size} differs from the ViT's {own[0]} px: MAE's decoder "
                f"predicts a fixed grid of patches; set backbone.img_size: {size}"
            )
        if int(vit.patch_embed.num_patches * (1 - self.params.mask_ratio)) < 1:
            raise ValueError(
                f"method.params.mask_ratio {self.params.mask_ratio} masks every one of the "
                f"{vit.patch_embed.num_patches} patches"
            )

    def mask(self, batch: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """(idx_keep, idx_mask) into each image's token sequence: the prefix tokens (class,
        registers) always kept, int(N (1 - mask_ratio)) of the N patches kept, the rest masked."""
        keep, masked = random_token_mask(
            (batch, self.num_patches), self.params.mask_ratio, mask_class_token=True, device=device
        )
        prefix = torch.arange(self.prefix, device=device).expand(batch, -1)
        return torch.cat([prefix, keep + self.prefix], dim=1), masked + self.prefix

    def predict_masked(self, encoded: Tensor, idx_keep: Tensor, idx_mask: Tensor) -> Tensor:
        """Pixels of the masked patches (batch, masked, P^2 C) from the kept tokens' encodings."""
        x = self.decoder_embed(encoded)
        tokens = repeat_token(self.decoder.mask_token, (x.shape[0], self.decoder.sequence_length))
        tokens = set_at_index(tokens, idx_keep, x.type_as(tokens))
        return self.decoder_pred(get_at_index(self.decoder(tokens), idx_mask))

    def compute_loss(self, views: list[Tensor]) -> Tensor:
        images = views[0]
        idx_keep, idx_mask = self.mask(images.shape[0], images.device)
        pred = self.predict_masked(
            self.encoder.encode(images, idx_keep=idx_keep), idx_keep, idx_mask
        )
        target = get_at_index(patchify(images, self.patch), idx_mask - self.prefix)
        if self.params.norm_pix_loss:
            target = normalize_mean_var(target, dim=-1)
        return F.mse_loss(pred.float(), target.float())
