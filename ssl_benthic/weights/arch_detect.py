"""Which timm architecture a backbone state dict is, read from its keys and tensor shapes only.

ResNets (torchvision and timm share key names): blocks per stage from `layerN.I.*`, BasicBlock or
Bottleneck from `conv3`, width and groups from the first block. ViTs: width, patch size and input
channels from `patch_embed.proj.weight`, depth from `blocks.I.*`, MLP width from `fc1`, class and
register tokens, the grid (so the image size) from `pos_embed`, layer scale, pooling norms.

A ViT's number of attention heads is not in any shape: `vit_num_heads` and the caller decide it,
and `resolve_vit` builds the timm model on the meta device to check that the name and kwargs chosen
give exactly the architecture the weights describe.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import timm
import torch
from torch import Tensor, nn

from ssl_benthic.core.errors import BackboneError

__all__ = ["Arch", "UnknownArchitecture", "detect", "resolve_vit", "vit_signature", "meta_model"]

# (blocks per stage, bottleneck, first block width, groups) -> timm / torchvision name
RESNETS = {
    ((2, 2, 2, 2), False, 64, 1): "resnet18",
    ((3, 4, 6, 3), False, 64, 1): "resnet34",
    ((3, 4, 6, 3), True, 64, 1): "resnet50",
    ((3, 4, 23, 3), True, 64, 1): "resnet101",
    ((3, 8, 36, 3), True, 64, 1): "resnet152",
    ((3, 4, 6, 3), True, 128, 1): "wide_resnet50_2",
    ((3, 4, 23, 3), True, 128, 1): "wide_resnet101_2",
    ((3, 4, 6, 3), True, 128, 32): "resnext50_32x4d",
}
RESNET_LABEL = {"resnet18": "ResNet-18", "resnet34": "ResNet-34", "resnet50": "ResNet-50"}
RESNET_LABEL |= {"resnet101": "ResNet-101", "resnet152": "ResNet-152"}

# (width, depth) -> timm size name
VIT_SIZES = {(192, 12): "tiny", (384, 12): "small", (768, 12): "base", (1024, 24): "large"}
VIT_SIZES |= {(1280, 32): "huge", (1536, 40): "giant"}
VIT_SHORT = {"tiny": "Ti", "small": "S", "base": "B", "large": "L", "huge": "H", "giant": "g"}


@dataclass(frozen=True)
class Arch:
    """An architecture read from a state dict: family, a label to compare with presets, the timm
    names to try, and (ViT) the signature the model must have, heads aside."""

    family: str  # "resnet" or "vit"
    label: str  # "resnet50", "vit_small_patch16", "vit_w512_d8_patch16"
    names: tuple[str, ...]  # timm names to try, best first
    description: str
    kwargs: dict[str, Any] = field(default_factory=dict)  # ResNet: in_chans when not 3
    spec: dict[str, Any] = field(default_factory=dict)  # ViT: what vit_signature must return


class UnknownArchitecture(BackboneError):
    """The keys and shapes match no architecture this module knows; `what` says what they are."""

    def __init__(self, source: str, what: str) -> None:
        super().__init__(
            f"{source}: cannot tell the architecture from the keys: {what}; name the timm model "
            "with --timm-name (and --model-kwargs)"
        )
        self.what = what


def _fail(source: str, what: str) -> UnknownArchitecture:
    """A one-line detection error naming the file and telling what to pass instead."""
    return UnknownArchitecture(source, what)


def _indices(state: dict[str, Tensor], pattern: str) -> list[int]:
    """Sorted distinct integers N of keys matching `pattern` (a regex with one group)."""
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in state if (m := rx.match(k))})


def detect(state: dict[str, Tensor], source: str) -> Arch:
    """The architecture of a backbone state dict (keys without any training prefix)."""
    if "patch_embed.proj.weight" in state:
        return _vit(state, source)
    if "conv1.weight" in state or "conv1.0.weight" in state:
        return _resnet(state, source)
    shown = ", ".join(list(state)[:3]) or "none"
    raise _fail(
        source,
        f"neither a ResNet (conv1.weight) nor a ViT (patch_embed.proj.weight); keys: {shown}",
    )


def _resnet(state: dict[str, Tensor], source: str) -> Arch:
    """ResNet-18 ... 152 (and wide / ResNeXt-50) from blocks per stage and the first block."""
    if "conv1.weight" not in state:
        raise _fail(source, "a ResNet with a deep stem (conv1.0.weight, as timm's resnet*d / *t)")
    stem = state["conv1.weight"]
    if stem.ndim != 4 or tuple(stem.shape[2:]) != (7, 7) or stem.shape[0] != 64:
        raise _fail(
            source, f"conv1.weight is {tuple(stem.shape)}, not a 64 x C x 7 x 7 ResNet stem"
        )
    blocks = tuple(len(_indices(state, rf"layer{i}\.(\d+)\.")) for i in range(1, 5))
    if 0 in blocks:
        raise _fail(source, f"ResNet stages with blocks {blocks}: a stage is missing")
    bottleneck = "layer1.0.conv3.weight" in state
    width = int(state["layer1.0.conv1.weight"].shape[0]) if bottleneck else 64
    groups = width // int(state["layer1.0.conv2.weight"].shape[1])
    name = RESNETS.get((blocks, bottleneck, width, groups))
    kind = "Bottleneck" if bottleneck else "BasicBlock"
    layout = "-".join(map(str, blocks))
    if name is None:
        raise _fail(source, f"a ResNet of {kind} blocks {layout}, width {width}, groups {groups}")
    in_chans = int(stem.shape[1])
    return Arch(
        family="resnet",
        label=name,
        names=(name,),
        description=f"{RESNET_LABEL.get(name, name)} ({kind} blocks {layout})",
        kwargs={"in_chans": in_chans} if in_chans != 3 else {},
    )


def _grid(tokens: int, prefix: int, source: str) -> tuple[int, bool]:
    """(grid side, no_embed_class) from the pos_embed length: grid^2 + prefix tokens, or grid^2
    when the class and register tokens carry no position embedding (DINOv2 with registers)."""
    for n, no_embed_class in ((tokens - prefix, False), (tokens, True)):
        side = math.isqrt(max(n, 0))
        if n > 0 and side * side == n:
            return side, no_embed_class and prefix > 0
    raise _fail(
        source, f"pos_embed has {tokens} tokens: not a square grid plus {prefix} prefix tokens"
    )


def _vit(state: dict[str, Tensor], source: str) -> Arch:
    """ViT width, depth, patch, image size, tokens and norms from the shapes."""
    proj = state["patch_embed.proj.weight"]
    dim, in_chans, ph, pw = (int(s) for s in proj.shape)
    if ph != pw:
        raise _fail(source, f"a non-square patch {ph}x{pw}")
    if any(re.match(r"blocks\.\d+\.\d+\.", k) for k in state):
        raise _fail(source, "chunked blocks (blocks.C.I.*, a DINOv2 FSDP checkpoint)")
    depth = len(_indices(state, r"blocks\.(\d+)\."))
    if "blocks.0.mlp.fc1.weight" not in state or "pos_embed" not in state:
        missing = "blocks.0.mlp.fc1.weight" if "pos_embed" in state else "pos_embed"
        raise _fail(source, f"a ViT without {missing} (a SwiGLU or RoPE variant?)")
    class_token = "cls_token" in state
    reg_tokens = int(state["reg_token"].shape[1]) if "reg_token" in state else 0
    side, no_embed_class = _grid(int(state["pos_embed"].shape[1]), class_token + reg_tokens, source)
    has_norm, has_fc_norm = "norm.weight" in state, "fc_norm.weight" in state
    spec = {
        "img_size": side * ph,
        "patch_size": ph,
        "in_chans": in_chans,
        "embed_dim": dim,
        "depth": depth,
        "mlp_hidden": int(state["blocks.0.mlp.fc1.weight"].shape[0]),
        "qkv_bias": "blocks.0.attn.qkv.bias" in state,
        "class_token": class_token,
        "reg_tokens": reg_tokens,
        "no_embed_class": no_embed_class,
        "layer_scale": "blocks.0.ls1.gamma" in state,
        "global_pool": "avg" if (has_fc_norm and not has_norm) or not class_token else "token",
        "fc_norm": has_fc_norm,
        "pre_norm": "norm_pre.weight" in state,
    }
    size = VIT_SIZES.get((dim, depth))
    label = f"vit_{size}_patch{ph}" if size else f"vit_w{dim}_d{depth}_patch{ph}"
    label += f"_reg{reg_tokens}" if reg_tokens else ""  # a preset with or without registers
    names = [f"vit_{size}_patch{ph}_{side * ph}", f"vit_{size}_patch{ph}_224"] if size else []
    names += [f"vit_{size or 'base'}_patch16_224", "vit_base_patch16_224"]
    tokens = "class token" if class_token else "no class token"
    tokens += f" + {reg_tokens} registers" if reg_tokens else ""
    short = f"ViT-{VIT_SHORT[size]}/{ph}" if size else f"ViT (width {dim}, depth {depth})/{ph}"
    return Arch(
        family="vit",
        label=label,
        names=tuple(dict.fromkeys(names)),
        description=f"{short}, {side * ph} px ({side}x{side} patches, {tokens})",
        spec=spec,
    )


def meta_model(name: str, kwargs: dict[str, Any]) -> nn.Module:
    """`timm.create_model(name, num_classes=0, **kwargs)` on the meta device: shapes, no memory."""
    with torch.device("meta"):
        return timm.create_model(name, pretrained=False, num_classes=0, **kwargs)


def vit_signature(model: nn.Module) -> dict[str, Any]:
    """What a timm VisionTransformer is, in the terms of `Arch.spec`, plus its head count."""
    block = model.blocks[0]
    return {
        "img_size": int(model.patch_embed.img_size[0]),
        "patch_size": int(model.patch_embed.patch_size[0]),
        "in_chans": int(model.patch_embed.proj.in_channels),
        "embed_dim": int(model.embed_dim),
        "depth": len(model.blocks),
        "mlp_hidden": int(block.mlp.fc1.out_features),
        "qkv_bias": block.attn.qkv.bias is not None,
        "class_token": model.cls_token is not None,
        "reg_tokens": int(getattr(model, "num_reg_tokens", 0)),
        "no_embed_class": bool(model.no_embed_class),
        "layer_scale": not isinstance(getattr(block, "ls1", nn.Identity()), nn.Identity),
        "global_pool": model.global_pool,
        "fc_norm": not isinstance(model.fc_norm, nn.Identity),
        "pre_norm": not isinstance(model.norm_pre, nn.Identity),
        "num_heads": int(block.attn.num_heads),
    }


def _kwargs_for(want: dict[str, Any], default: dict[str, Any]) -> dict[str, Any]:
    """timm kwargs that turn a model with signature `default` into one with signature `want`."""
    kwargs: dict[str, Any] = {}
    for key, value in want.items():
        if default.get(key) == value:
            continue
        if key == "layer_scale":
            kwargs["init_values"] = 1e-5 if value else None  # any value: the weights set gamma
        elif key == "mlp_hidden":
            kwargs["mlp_ratio"] = value / want["embed_dim"]
        else:
            kwargs[key] = value
    if "global_pool" in kwargs:  # timm derives fc_norm from the pooling unless told
        kwargs["fc_norm"] = want["fc_norm"]
    return kwargs


def resolve_vit(
    arch: Arch, names: list[str], num_heads: int, extra: dict[str, Any], source: str
) -> tuple[str, dict[str, Any]]:
    """(timm name, kwargs) for a detected ViT: the first existing name, with the kwargs that differ
    from its defaults plus `extra`, checked on the meta device to match the weights exactly."""
    name = next((n for n in names if timm.is_model(n)), None)
    if name is None:
        raise _fail(source, f"no timm model among {', '.join(names)}")
    want = {**arch.spec, "num_heads": num_heads}
    kwargs = {**_kwargs_for(want, vit_signature(meta_model(name, {}))), **extra}
    try:
        got = vit_signature(meta_model(name, kwargs))
    except Exception as exc:  # noqa: BLE001 - timm refuses the kwargs: one message
        raise BackboneError(
            f"{source}: timm cannot build '{name}' with {kwargs} ({type(exc).__name__}: {exc})"
        ) from None
    wrong = {k: (got[k], v) for k, v in want.items() if got[k] != v}
    if wrong:
        shown = ", ".join(f"{k} {g} (weights: {w})" for k, (g, w) in wrong.items())
        raise BackboneError(
            f"{source}: '{name}' with {kwargs} does not fit the weights: {shown}; "
            "fix --model-kwargs / --timm-name"
        )
    return name, kwargs
