"""What a ViT backbone's feature is, and ViT weights at another image size.

`backbone.pool` chooses a ViT's pooled feature: `cls` (the class token, timm's `global_pool='token'`),
`mean` (the mean of the patch tokens after the final norm, timm's `global_pool='avg'`, which skips
the class and register tokens) or `cls+mean` (both, concatenated: the feature is twice the width,
as DINOv2's linear evaluation uses it). CNNs have no tokens: their feature is their global average,
so they take `cls` (the default, ignored) or `mean`. A ViT whose architecture pools by average (an
`fc_norm` after the pooling, e.g. MAE) only takes `mean`. The model's state dict never changes.

`fit_pos_embed` resamples a ViT's absolute position embeddings (timm's `resample_abs_pos_embed`)
when weights made at one image size load into a model built for another.
"""

from __future__ import annotations

import logging
import math
import types
from typing import Any

import torch
from timm.layers import resample_abs_pos_embed
from torch import Tensor, nn

from ssl_benthic.core.errors import BackboneError

log = logging.getLogger(__name__)

__all__ = ["POOLS", "apply_pool", "fit_pos_embed", "is_vit", "token_grid"]

POOLS = ("cls", "mean", "cls+mean")
TIMM_POOL = {"cls": "token", "mean": "avg", "cls+mean": "token"}


def is_vit(model: nn.Module) -> bool:
    """A timm token model (VisionTransformer, Eva and kin): blocks over prefix + patch tokens."""
    return isinstance(getattr(model, "global_pool", None), str) and hasattr(
        model, "num_prefix_tokens"
    )


def _cls_mean_head(self: nn.Module, x: Tensor, pre_logits: bool = False) -> Tensor:
    """forward_head of `cls+mean`: [class token, mean of the patch tokens] (both normed)."""
    x = torch.cat([x[:, 0], x[:, self.num_prefix_tokens :].mean(dim=1)], dim=-1)
    return self.head_drop(x)


def apply_pool(model: nn.Module, pool: str | None, source: str = "backbone") -> nn.Module:
    """Set the feature `model` returns (in place; returns it). `pool` None keeps the model's own;
    `model.num_features` becomes the width of what it returns (a CLIP projection's included)."""
    if pool is not None and pool not in POOLS:
        raise BackboneError(
            f"backbone.pool must be one of {', '.join(POOLS)}, got '{pool}' ({source})"
        )
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):  # an import's CLIP projection: the feature is its output
        if pool == "cls+mean":
            raise BackboneError(
                f"{source}: backbone.pool=cls+mean cannot feed the CLIP projection "
                f"(width {head.in_features}): use cls or mean, or import without --clip-projection"
            )
        model.num_features = int(head.out_features)
    if pool is None:
        return model
    if not is_vit(model):
        if pool == "cls+mean":
            raise BackboneError(
                f"{source}: backbone.pool=cls+mean is for ViTs; a CNN's feature is its global "
                "average (pool: mean)"
            )
        return model
    has_cls = getattr(model, "cls_token", None) is not None
    if pool != "mean" and not has_cls:
        raise BackboneError(
            f"{source}: this ViT has no class token: backbone.pool={pool} needs one (use mean)"
        )
    if pool != "mean" and not isinstance(getattr(model, "fc_norm", nn.Identity()), nn.Identity):
        raise BackboneError(
            f"{source}: this ViT's architecture pools by average (fc_norm after the pooling): "
            f"backbone.pool={pool} does not fit it (use mean)"
        )
    if getattr(model, "attn_pool", None) is not None:
        raise BackboneError(f"{source}: this ViT pools by attention: backbone.pool does not apply")
    model.global_pool = TIMM_POOL[pool]
    if pool == "cls+mean":
        model.forward_head = types.MethodType(_cls_mean_head, model)
        model.num_features = 2 * int(model.embed_dim)
    model.feature_pool = pool
    return model


def token_grid(tokens: int, prefix: int) -> int | None:
    """The side of a square grid of `tokens - prefix` patch tokens, or None."""
    side = math.isqrt(max(tokens - prefix, 0))
    return side if side > 0 and side * side == tokens - prefix else None


def fit_pos_embed(
    model: nn.Module, state: dict[str, Tensor], source: str
) -> tuple[dict[str, Tensor], str | None]:
    """(state, note): `state['pos_embed']` resampled to `model`'s patch grid when the weights were
    made for another image size (same patch size); else `state` as it is and no note."""
    pos = state.get("pos_embed")
    own = getattr(model, "pos_embed", None)
    if pos is None or own is None or pos.shape == own.shape or pos.ndim != 3:
        return state, None
    proj = state.get("patch_embed.proj.weight")
    if proj is not None and proj.shape != model.patch_embed.proj.weight.shape:
        return state, None  # another patch size: load_strict names the mismatch
    prefix = 0 if getattr(model, "no_embed_class", False) else int(model.num_prefix_tokens)
    side = token_grid(int(pos.shape[1]), prefix)
    if side is None or pos.shape[2] != own.shape[2]:
        return state, None
    grid = tuple(int(g) for g in model.patch_embed.grid_size)
    resized = resample_abs_pos_embed(
        pos, new_size=list(grid), old_size=[side, side], num_prefix_tokens=prefix
    )
    patch = int(model.patch_embed.patch_size[0])
    note = (
        f"{source}: position embeddings resampled (timm resample_abs_pos_embed, bicubic) from "
        f"{side}x{side} patches ({side * patch} px) to {grid[0]}x{grid[1]} ({grid[0] * patch} px)"
    )
    return {**state, "pos_embed": resized}, note


def export_is_fixed_size_vit(timm_name: str, kwargs: dict[str, Any]) -> bool:
    """Whether the timm model is a ViT with absolute position embeddings and a fixed input size
    (so an image size other than its own needs resampling): built on the meta device."""
    from ssl_benthic.weights.arch_detect import meta_model

    try:
        model = meta_model(timm_name, kwargs)
    except Exception:  # noqa: BLE001 - not buildable here: leave it to the real build's message
        return False
    return getattr(model, "pos_embed", None) is not None and not getattr(
        model, "dynamic_img_size", False
    )


def backbone_img_size(
    weights: str, img_size: int | None, input_size: int
) -> tuple[int | None, str | None]:
    """(backbone.img_size to build with, a note): the input size when `backbone.img_size` is unset
    and `weights` is an export of a fixed-size ViT made for another size (its position embeddings
    are then resampled as it loads), else `img_size` as it is and no note."""
    if img_size is not None or weights in ("random", "imagenet"):
        return img_size, None
    from ssl_benthic.weights.load import read_export

    meta = read_export(weights)[1]
    own, name = meta.get("img_size"), meta.get("timm_name")
    if own is None or name is None or int(own) == int(input_size):
        return img_size, None
    kwargs = {k: v for k, v in (meta.get("model_kwargs") or {}).items() if k != "num_classes"}
    if not export_is_fixed_size_vit(name, kwargs):
        return img_size, None
    note = (
        f"backbone.img_size: {input_size} (data.img_size): {weights} is a ViT made for {own} px, "
        "its position embeddings are resampled to the input size"
    )
    return int(input_size), note
