"""Foundation-model releases in their own key layouts, converted by timm's own checkpoint filters.

Layouts, told apart by their keys (after the branch prefix and `module.` are removed):

- `dinov2`: a DINOv2 release (`dinov2_vit{s,b,l,g}14[_reg4]_pretrain.pth`): `mask_token`, optional
  `register_tokens`, layer scale `ls1.gamma`, a position embedding for the class token plus a
  square grid (37x37 at 518 px), SwiGLU `mlp.w12` / `mlp.w3` in ViT-g. timm's
  `vision_transformer.checkpoint_filter_fn` (`_convert_dinov2`) converts it to
  `vit_*_patch14[_reg4]_dinov2`.
- `openclip`: an open_clip / OpenAI CLIP checkpoint (BioCLIP, BioCLIP 2): the image tower under
  `visual.` (`conv1`, `class_embedding`, `positional_embedding`, `ln_pre`,
  `transformer.resblocks.N`, `ln_post`, `proj`) beside a text tower, which is dropped.
  `checkpoint_filter_fn` (`_convert_openai_clip`) converts it to `vit_*_clip_*` (`pre_norm`).
- `dinov3`: a DINOv3 ViT release: `storage_tokens`, `mask_token`, RoPE periods, `ls1.gamma`,
  `qkv.bias` with its `bias_mask`, or none. `eva.checkpoint_filter_fn` converts it to
  `vit_*_patch16_dinov3[_qkvb]` (Eva, RoPE).
- `timm-dinov3`: timm's own `vit_*_patch16_dinov3[_qkvb]` files (`reg_token`, `gamma_1`, no
  `pos_embed`), which timm's generic ViT reading does not cover.
- `dinov3-convnext`: a DINOv3 ConvNeXt release (`downsample_layers.*`, `stages.I.J.dwconv`):
  `convnext.checkpoint_filter_fn` converts it to `convnext_{tiny,small,base,large}`.

Pass 1 renames (without a model) to read the architecture from the shapes; pass 2 runs timm's full
filter against the model built at the image size wanted, which resamples position embeddings there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from timm.models import convnext as timm_convnext
from timm.models import eva as timm_eva
from timm.models import vision_transformer as timm_vit
from torch import Tensor, nn

from ssl_benthic.core.errors import BackboneError
from ssl_benthic.weights.arch_detect import VIT_SHORT, VIT_SIZES, Arch, meta_model
from ssl_benthic.weights.vit_features import token_grid

__all__ = ["Layout", "LAYOUTS", "Prepared", "detect_layout", "prepare", "convert"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP, as open_clip preprocesses
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass(frozen=True)
class Layout:
    """A release's key layout: its name in the output and the normalisation it implies."""

    key: str
    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


LAYOUTS = {
    layout.key: layout
    for layout in (
        Layout("dinov2", "DINOv2 release (facebookresearch/dinov2)", *IMAGENET),
        Layout("openclip", "open_clip / OpenAI CLIP (visual.* image tower)", CLIP_MEAN, CLIP_STD),
        Layout("dinov3", "DINOv3 ViT release (facebookresearch/dinov3)", *IMAGENET),
        Layout("timm-dinov3", "timm DINOv3 ViT (Eva, vit_*_patch16_dinov3)", *IMAGENET),
        Layout("dinov3-convnext", "DINOv3 ConvNeXt release (facebookresearch/dinov3)", *IMAGENET),
    )
}


def detect_layout(state: dict[str, Tensor]) -> Layout | None:
    """The release layout of a backbone state dict, or None (timm / torchvision / solo-learn keys,
    read by `arch_detect`)."""
    if "visual.conv1.weight" in state and "visual.class_embedding" in state:
        return LAYOUTS["openclip"]
    if "storage_tokens" in state and "blocks.0.attn.qkv.weight" in state:
        return LAYOUTS["dinov3"]
    if "blocks.0.gamma_1" in state and "reg_token" in state and "pos_embed" not in state:
        return LAYOUTS["timm-dinov3"]
    if "downsample_layers.0.0.weight" in state and "stages.0.0.dwconv.weight" in state:
        return LAYOUTS["dinov3-convnext"]
    pos = state.get("pos_embed")
    if (
        "patch_embed.proj.weight" in state
        and pos is not None
        and pos.ndim == 3
        and ("mask_token" in state or "register_tokens" in state)
        and token_grid(int(pos.shape[1]), 1) is not None  # the class token has a position
        and "blocks.0.ls1.gamma" in state
    ):
        return LAYOUTS["dinov2"]
    return None


@dataclass
class Prepared:
    """Pass 1: the state in timm's names (ViTs: for `arch_detect`), what is kept or dropped."""

    layout: Layout
    renamed: dict[str, Tensor]  # timm names, at the release's size
    source: dict[str, Tensor]  # what pass 2 converts (the image tower, the heads taken out)
    kept: dict[str, Tensor] = field(default_factory=dict)  # heads, under their original names
    notes: list[str] = field(default_factory=list)
    names: tuple[str, ...] = ()  # timm names to try first
    kwargs: dict[str, Any] = field(default_factory=dict)  # kwargs the layout fixes
    arch: Arch | None = None  # decided here (Eva, ConvNeXt); None: `arch_detect` reads `renamed`
    release_grid: int | None = None  # patches per side of the release's position embedding


def _size(dim: int, depth: int) -> str | None:
    return VIT_SIZES.get((dim, depth))


def prepare(
    layout: Layout,
    state: dict[str, Tensor],
    source: str,
    *,
    clip_projection: bool = False,
    user_kwargs: dict[str, Any] | None = None,
) -> Prepared:
    """Pass 1 for `layout` (see the module docstring)."""
    user_kwargs = dict(user_kwargs or {})
    if layout.key == "dinov2":
        return _prepare_dinov2(layout, state)
    if layout.key == "openclip":
        return _prepare_clip(layout, state, clip_projection)
    if layout.key in ("dinov3", "timm-dinov3"):
        return _prepare_dinov3(layout, state, source, user_kwargs)
    return _prepare_convnext(layout, state, source, user_kwargs)


def _prepare_dinov2(layout: Layout, state: dict[str, Tensor]) -> Prepared:
    kept = {k: state[k] for k in ("mask_token",) if k in state}
    src = {k: v for k, v in state.items() if k not in kept}
    renamed = timm_vit._convert_dinov2(dict(src), None)  # the converter checkpoint_filter_fn runs
    dim, depth = int(src["patch_embed.proj.weight"].shape[0]), _depth(src)
    size = _size(dim, depth)
    reg = "_reg4" if "register_tokens" in src else ""
    patch = int(src["patch_embed.proj.weight"].shape[-1])
    names = (
        (f"vit_{size}_patch{patch}{reg}_dinov2",) if size else (f"vit_small_patch14{reg}_dinov2",)
    )
    grid = token_grid(int(src["pos_embed"].shape[1]), 1)
    return Prepared(layout, renamed, src, kept, [], names, {}, None, grid)


def _prepare_clip(layout: Layout, state: dict[str, Tensor], clip_projection: bool) -> Prepared:
    text = [k for k in state if not k.startswith("visual.")]
    src = {k: v for k, v in state.items() if k.startswith("visual.")}
    notes = []
    if text:
        roots = sorted({k.split(".")[0] for k in text})
        notes.append(
            f"dropped the text tower: {len(text)} tensors ({', '.join(roots)}); only the image "
            "tower (visual.*) is imported"
        )
    kept: dict[str, Tensor] = {}
    if "visual.proj" in src and not clip_projection:
        kept["visual.proj"] = src.pop("visual.proj")
        notes.append(
            "feature: the image trunk's (ln_post of the class token, before the CLIP projection); "
            "visual.proj kept in heads.safetensors (--clip-projection imports the projected "
            "embedding instead)"
        )
    elif "visual.proj" in src:
        width = int(src["visual.proj"].shape[1])
        notes.append(f"feature: the CLIP projection's embedding (width {width}, visual.proj)")
    elif clip_projection:
        raise BackboneError("--clip-projection: the file has no visual.proj")
    renamed = timm_vit._convert_openai_clip(dict(src), None)  # as checkpoint_filter_fn runs it
    dim, depth = int(renamed["patch_embed.proj.weight"].shape[0]), _depth(renamed)
    size, patch = _size(dim, depth), int(renamed["patch_embed.proj.weight"].shape[-1])
    names = (f"vit_{size}_patch{patch}_clip_224",) if size else ("vit_base_patch16_clip_224",)
    kwargs: dict[str, Any] = {}
    if clip_projection:
        kwargs["num_classes"] = int(src["visual.proj"].shape[1])
    else:
        renamed = {k: v for k, v in renamed.items() if not k.startswith("head.")}
    grid = token_grid(int(renamed["pos_embed"].shape[1]), 1)
    notes.append(
        "activation: the weights do not say GELU or QuickGELU; the timm name decides "
        "(OpenAI-initialised towers such as BioCLIP: *_clip_quickgelu_*, --preset bioclip)"
    )
    return Prepared(layout, renamed, src, kept, notes, names, kwargs, None, grid)


def _depth(state: dict[str, Tensor]) -> int:
    return len({k.split(".")[1] for k in state if k.startswith("blocks.")})


# ----- DINOv3 ViT (Eva) -----------------------------------------------------------------------
DINOV3_SIZES = {  # (width, depth) -> timm names (without _qkvb), and heads for other shapes
    (384, 12): ("vit_small_patch16_dinov3", "vit_small_plus_patch16_dinov3"),
    (768, 12): ("vit_base_patch16_dinov3",),
    (1024, 24): ("vit_large_patch16_dinov3",),
    (1280, 32): ("vit_huge_plus_patch16_dinov3",),
    (4096, 40): ("vit_7b_patch16_dinov3",),
}
DINOV3_LABEL = {"vit_small_plus_patch16_dinov3": "vit_small_plus_patch16"}
DINOV3_LABEL |= {"vit_huge_plus_patch16_dinov3": "vit_huge_plus_patch16"}
DINOV3_LABEL |= {"vit_7b_patch16_dinov3": "vit_7b_patch16"}


def _qkv_biases(state: dict[str, Tensor]) -> tuple[bool, str | None]:
    """(whether the model needs q/v biases, a note): a release's `qkv.bias` (masked by `bias_mask`
    where it has one) or timm's `q_bias` / `v_bias`. The k bias is dropped (timm keeps it 0): a
    bias added to every key shifts each query's scores by one constant, which softmax ignores."""
    if "blocks.0.attn.q_bias" in state:
        return True, None
    keys = [k for k in state if k.endswith("attn.qkv.bias")]
    if not keys:
        return False, None
    nonzero = False
    for key in keys:
        bias = state[key].float()
        mask = state.get(key.replace("qkv.bias", "qkv.bias_mask"))
        if mask is not None:
            bias = bias * torch.nan_to_num(mask.float(), nan=0.0)
        q, _, v = bias.chunk(3, dim=-1)
        nonzero |= bool(q.abs().max() > 0 or v.abs().max() > 0)
    if nonzero:
        return True, "qkv biases: q and v kept (timm *_qkvb); the k bias has no effect, dropped"
    note = "qkv biases are all zero: the variant without them computes the same (timm *_dinov3)"
    return False, note


def _prepare_dinov3(
    layout: Layout, state: dict[str, Tensor], source: str, user_kwargs: dict[str, Any]
) -> Prepared:
    proj = state["patch_embed.proj.weight"]
    dim, patch, depth = int(proj.shape[0]), int(proj.shape[-1]), _depth(state)
    qkvb, bias_note = _qkv_biases(state)
    src = dict(state)
    kept = {k: src.pop(k) for k in ("mask_token",) if k in src}
    if not qkvb:
        src = {k: v for k, v in src.items() if not k.endswith(("qkv.bias", "qkv.bias_mask"))}
    suffix = "_qkvb" if qkvb else ""
    base = {"global_pool": "token"}  # DINOv3's own feature is the class token (timm's: avg)
    if patch != 16:
        base["patch_size"] = patch
    candidates = [(n + suffix, dict(base)) for n in DINOV3_SIZES.get((dim, depth), ())]
    if not candidates:  # another width or depth: timm's ViT-S/16 DINOv3 with these shapes
        fc1 = state.get("blocks.0.mlp.fc1.weight")
        if fc1 is None:
            raise BackboneError(
                f"{source}: a DINOv3 ViT of width {dim}, depth {depth} without mlp.fc1 "
                "(SwiGLU): name it with --timm-name"
            )
        shape = {"embed_dim": dim, "depth": depth, "num_heads": max(dim // 64, 1)}
        shape["mlp_ratio"] = int(fc1.shape[0]) / dim
        candidates = [(f"vit_small_patch16_dinov3{suffix}", {**base, **shape})]
    tried = []
    for name, kwargs in candidates:
        kwargs = {**kwargs, **user_kwargs}
        model = meta_model(name, kwargs)
        renamed = timm_eva.checkpoint_filter_fn(dict(src), model)
        wrong = _shape_mismatch(model, renamed)
        if not wrong:
            label = DINOV3_LABEL.get(name.removesuffix(suffix), f"vit_{_size(dim, depth)}_patch16")
            if (dim, depth) not in DINOV3_SIZES:
                label = f"vit_w{dim}_d{depth}_patch{patch}"
            size = VIT_SIZES.get((dim, depth))
            short = f"ViT-{VIT_SHORT[size]}/{patch}" if size else f"ViT (width {dim})/{patch}"
            if "plus" in name:
                short = short.replace("/", "+/")
            regs = int(
                state["storage_tokens" if "storage_tokens" in state else "reg_token"].shape[1]
            )
            heads = int(model.blocks[0].attn.num_heads)
            arch = Arch(
                family="vit",
                label=label,
                names=(name,),
                description=f"{short} DINOv3 (RoPE, class token + {regs} registers), {heads} heads",
                kwargs=kwargs,
            )
            notes = [bias_note] if bias_note else []
            return Prepared(layout, renamed, src, kept, notes, (name,), kwargs, arch, None)
        tried.append(f"{name}: {wrong}")
    raise BackboneError(
        f"{source}: a DINOv3 ViT of width {dim}, depth {depth} fits no timm model "
        f"({'; '.join(tried)}); name it with --timm-name and --model-kwargs"
    )


def _shape_mismatch(model: nn.Module, state: dict[str, Tensor]) -> str:
    """'' when `state` has exactly `model`'s keys and shapes, else what differs (briefly)."""
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} (model {own[k]})"
        for k in own
        if k in state and tuple(state[k].shape) != own[k]
    ]
    parts = [f"missing {', '.join(missing[:3])}"] if missing else []
    parts += [f"unexpected {', '.join(extra[:3])}"] if extra else []
    parts += [f"shape {', '.join(shapes[:2])}"] if shapes else []
    return "; ".join(parts)


# ----- DINOv3 ConvNeXt ------------------------------------------------------------------------
CONVNEXTS = {
    ((3, 3, 9, 3), 96): "convnext_tiny",
    ((3, 3, 27, 3), 96): "convnext_small",
    ((3, 3, 27, 3), 128): "convnext_base",
    ((3, 3, 27, 3), 192): "convnext_large",
}


def _prepare_convnext(
    layout: Layout, state: dict[str, Tensor], source: str, user_kwargs: dict[str, Any]
) -> Prepared:
    depths = tuple(
        len({k.split(".")[2] for k in state if k.startswith(f"stages.{i}.")}) for i in range(4)
    )
    width = int(state["downsample_layers.0.0.weight"].shape[0])
    name = CONVNEXTS.get((depths, width))
    kwargs: dict[str, Any] = {}
    if name is None:
        name = "convnext_tiny"
        dims = tuple(int(state[f"stages.{i}.0.dwconv.weight"].shape[0]) for i in range(4))
        kwargs = {"depths": depths, "dims": dims}
    kwargs |= user_kwargs
    src = {k: v for k, v in state.items() if not k.startswith(("norms.", "projectors."))}
    model = meta_model(name, kwargs)
    renamed = timm_convnext.checkpoint_filter_fn(dict(src), model)
    wrong = _shape_mismatch(model, renamed)
    if wrong:
        raise BackboneError(f"{source}: the ConvNeXt weights do not fit '{name}' {kwargs}: {wrong}")
    label = name if (depths, width) in CONVNEXTS else f"convnext_w{width}"
    arch = Arch(
        family="convnext",
        label=label,
        names=(name,),
        description=f"ConvNeXt (stages {'-'.join(map(str, depths))}, width {width}) DINOv3",
        kwargs=kwargs,
    )
    return Prepared(layout, renamed, src, {}, [], (name,), kwargs, arch, None)


# ----- pass 2 ---------------------------------------------------------------------------------
def convert(prepared: Prepared, model: nn.Module) -> dict[str, Tensor]:
    """Pass 2: timm's checkpoint filter for the layout, against the model to load (position
    embeddings resampled by timm to its grid)."""
    src = dict(prepared.source)
    key = prepared.layout.key
    if key == "dinov2":
        src.setdefault("mask_token", torch.zeros(1))  # timm tells DINOv2 files by their mask_token
        return timm_vit.checkpoint_filter_fn(src, model)
    if key == "openclip":
        out = timm_vit.checkpoint_filter_fn(src, model)
        if isinstance(getattr(model, "head", None), nn.Identity):
            out = {k: v for k, v in out.items() if not k.startswith("head.")}
        return out
    if key in ("dinov3", "timm-dinov3"):
        return timm_eva.checkpoint_filter_fn(src, model)
    return timm_convnext.checkpoint_filter_fn(src, model)
