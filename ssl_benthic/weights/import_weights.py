"""`ssl-benthic import-weights`: a published or foreign encoder as this toolkit's backbone export.

Reads (with `torch.load(weights_only=True)`, or safetensors) solo-learn / Lightning checkpoints
(`state_dict` with `backbone.*`, `momentum_backbone.*`, `projector.*` ...: the BenthicNet releases),
DINO / DINOv2 checkpoints (`teacher` / `student` dicts, `module.` and `backbone.` prefixes), MoCo
checkpoints (`base_encoder.*` / `momentum_encoder.*`, `encoder_q.*` / `encoder_k.*`), plain
torchvision or timm state dicts, and this toolkit's own pretraining checkpoints. One branch (one
encoder) is imported; the architecture comes from its keys and shapes (`arch_detect.py`), never from
the file name, and the weights load strictly into the timm model.

Writes `backbone.safetensors` + `backbone.json` (the `export` format, so `backbone.weights: DIR`
works in both stages) and, when the file has projector / predictor / classifier tensors, keeps them
in `heads.safetensors` (original key names) + `heads.json` (prefix -> number of tensors).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from torch import Tensor, nn

from ssl_benthic.core.errors import BackboneError, UserError
from ssl_benthic.core.normalization import IMAGENET_MEAN, IMAGENET_STD
from ssl_benthic.core.paths import sha256_file
from ssl_benthic.weights.arch_detect import Arch, UnknownArchitecture, detect, resolve_vit
from ssl_benthic.weights.backbones import check_model_name
from ssl_benthic.weights.export import FORMAT
from ssl_benthic.weights.foreign import (
    BRANCHES,
    DINO_RENAMES,
    NOT_BACKBONE,
    Source,
    read_source,
    split_branch,
)
from ssl_benthic.weights.load import EXPORT_META, EXPORT_WEIGHTS, load_strict, write_export_files
from ssl_benthic.weights.preset_record import Preset
from ssl_benthic.weights.presets import STANDARD_VIT_HEADS, format_presets, get_preset
from ssl_benthic.weights.release_layouts import Layout, convert, detect_layout, prepare
from ssl_benthic.weights.vit_features import fit_pos_embed

__all__ = ["HEADS_WEIGHTS", "HEADS_META", "ImportResult", "import_weights", "cli_import_weights"]

HEADS_WEIGHTS = "heads.safetensors"
HEADS_META = "heads.json"
HEADS_FORMAT = "ssl-benthic-heads/1"
# ViT widths whose head count differs between published conventions
AMBIGUOUS_HEADS = {
    192: "timm and DeiT use 3 heads, MoCo v3 and MAE as solo-learn builds them 12",
    384: "timm, DeiT and DINO use 6 heads, MoCo v3 (so BenthicNet) and solo-learn's MAE 12",
}


@dataclass
class ImportResult:
    """What an import wrote and what it says about it."""

    out: Path
    meta: dict[str, Any]
    heads: dict[str, int]
    notes: list[str]


# ----- architecture ---------------------------------------------------------------------------
@dataclass
class Resolved:
    """The timm model to build and how it was decided."""

    timm_name: str
    kwargs: dict[str, Any]
    description: str


def _check_preset(arch: Arch, preset: Preset | None, source: str) -> None:
    """Fail when the preset names another architecture than the keys say."""
    if preset is None:
        return
    wrong_family = preset.family is not None and preset.family != arch.family
    if wrong_family or (preset.architecture is not None and preset.architecture != arch.label):
        expects = preset.architecture or f"a {preset.family}"
        raise BackboneError(
            f"{source}: preset '{preset.name}' is {expects}, but the keys say {arch.label} "
            f"({arch.description}): wrong file or wrong preset"
        )


def _num_heads(
    arch: Arch, preset: Preset | None, kwargs: dict[str, Any], source: str, standard: bool = False
) -> int:
    """A ViT's head count: --model-kwargs, else the preset's, else the one standard for its width;
    an ambiguous width (ViT-S) without either fails, because a wrong count loads and computes
    other features."""
    dim = arch.spec["embed_dim"]
    if "num_heads" in kwargs:
        heads = int(kwargs["num_heads"])
    elif dim in STANDARD_VIT_HEADS and (
        dim not in AMBIGUOUS_HEADS or standard or (preset is not None and preset.standard_heads)
    ):
        heads = STANDARD_VIT_HEADS[dim]
    else:
        why = AMBIGUOUS_HEADS.get(dim, f"no standard head count for width {dim}")
        raise BackboneError(
            f"{source}: the number of attention heads of this {arch.description} is not in the "
            f"weights ({why}; a wrong count loads but computes other features): pass --preset "
            "(e.g. benthicnet_mcv3_vit-s_e200_prod, or timm / dino for the timm count) or "
            "--model-kwargs '{\"num_heads\": N}'"
        )
    if heads < 1 or dim % heads:
        raise BackboneError(f"{source}: num_heads {heads} does not divide the width {dim}")
    return heads


def resolve_architecture(
    state: dict[str, Tensor],
    source: Source,
    preset: Preset | None,
    timm_name: str | None,
    user_kwargs: dict[str, Any],
    prefer: tuple[str, ...] = (),
    standard_heads: bool = False,
) -> Resolved:
    """The timm name and kwargs for a backbone state dict, from its keys and shapes (or the
    checkpoint's recipe for this toolkit's own checkpoints)."""
    where = str(source.path)
    if timm_name is not None:
        check_model_name(timm_name)
    base = {**(preset.kwargs() if preset else {}), **user_kwargs}
    if source.ssl_meta is not None and timm_name is None:
        kwargs = {**source.ssl_meta.get("model_kwargs", {}), **base}
        name = source.ssl_meta["timm_name"]
        return Resolved(name, kwargs, f"{name} (from the checkpoint's recipe)")
    try:
        arch = detect(state, where)
    except UnknownArchitecture as exc:
        if timm_name is None:
            raise
        return Resolved(timm_name, base, f"{timm_name} (as named; not detected: {exc.what})")
    _check_preset(arch, preset, where)
    if arch.family == "resnet":
        name = timm_name or arch.names[0]
        return Resolved(name, {**arch.kwargs, **base}, arch.description)
    heads = _num_heads(arch, preset, base, where, standard_heads)
    names = [n for n in (timm_name, preset.timm_name if preset else None) if n]
    names += [*prefer, *arch.names]
    name, kwargs = resolve_vit(arch, names, heads, base, where)
    return Resolved(name, kwargs, f"{arch.description}, {heads} heads")


# ----- importing ------------------------------------------------------------------------------
def _build(arch: Resolved, source: str) -> nn.Module:
    """The timm backbone to load into; kwargs timm refuses fail naming them."""
    try:
        return timm.create_model(
            arch.timm_name, pretrained=False, **{"num_classes": 0, **arch.kwargs}
        )
    except Exception as exc:  # noqa: BLE001 - a wrong --model-kwargs key or value: one message
        raise BackboneError(
            f"{source}: timm cannot build '{arch.timm_name}' with {arch.kwargs} "
            f"({type(exc).__name__}: {exc}); fix --model-kwargs"
        ) from None


def _split_off(
    model: nn.Module, state: dict[str, Tensor]
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(backbone tensors, tensors the backbone does not have by design: a classifier such as
    fc.* / head.*, DINOv2's mask_token)."""
    own = model.state_dict()
    names = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    drop = [
        k
        for k in state
        if k not in own and (k in NOT_BACKBONE or any(k.startswith(f"{n}.") for n in names))
    ]
    kept = {k: v for k, v in state.items() if k not in drop}
    return kept, {k: state[k] for k in drop}


def _fill_bn_counters(model: nn.Module, state: dict[str, Tensor]) -> list[str]:
    """Add BatchNorm's `num_batches_tracked` (a step counter, not a weight) when the file has none
    at all, as files saved before PyTorch 0.4.1 do; returns a note, or nothing."""
    counters = [k for k in model.state_dict() if k.endswith("num_batches_tracked")]
    if not counters or any(k.endswith("num_batches_tracked") for k in state):
        return []
    for key in counters:
        state[key] = torch.tensor(0, dtype=torch.long)
    return [f"the file has no BatchNorm step counters: set {len(counters)} to 0"]


def _heads_prefix(key: str, nested: bool) -> str:
    """The module a head tensor belongs to: `projector`, or `teacher.head` in a DINO file."""
    parts = key.split(".")
    return ".".join(parts[:2]) if nested and len(parts) > 2 else parts[0]


def _heads(
    rest: dict[str, Tensor], inner: dict[str, Tensor], prefix: str, nested: bool
) -> tuple[dict[str, Tensor], dict[str, int]]:
    """(every tensor of no backbone under its original key, prefix -> number of tensors): the
    file's other modules plus what the branch held beyond the backbone (a classifier)."""
    heads = {**rest, **{prefix + k: v for k, v in inner.items()}}
    labels = [_heads_prefix(k, nested) for k in rest] + [prefix + k.split(".")[0] for k in inner]
    return heads, dict(Counter(labels))


def _normalisation(
    mean: list[float] | None,
    std: list[float] | None,
    preset: Preset | None,
    source: Source,
    layout: Any = None,
) -> tuple[list[float], list[float], list[str]]:
    """(mean, std, notes): the command line's, else the preset's, else the checkpoint recipe's,
    else ImageNet's (said in a note)."""
    if (mean is None) != (std is None):
        raise BackboneError("pass --mean and --std together (3 numbers each)")
    if mean is not None and std is not None:
        return [float(v) for v in mean], [float(v) for v in std], []
    if preset is not None:
        return list(preset.mean), list(preset.std), []
    if source.ssl_meta is not None:
        return list(source.ssl_meta["mean"]), list(source.ssl_meta["std"]), []
    if layout is not None:
        note = f"no --preset or --mean/--std: the mean/std of a {layout.name} recorded"
        return list(layout.mean), list(layout.std), [note]
    note = "no --preset or --mean/--std: ImageNet mean/std recorded in backbone.json"
    return list(IMAGENET_MEAN), list(IMAGENET_STD), [note]


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse to replace an export in `out` unless `overwrite`."""
    held = [
        n for n in (EXPORT_WEIGHTS, EXPORT_META, HEADS_WEIGHTS, HEADS_META) if (out / n).exists()
    ]
    if held and not overwrite:
        raise BackboneError(
            f"{out} already holds an export ({held[0]}): pass --overwrite to replace it"
        )


def _write(
    out: Path,
    backbone: dict[str, Tensor],
    meta: dict[str, Any],
    heads: dict[str, Tensor],
    heads_meta: dict[str, Any],
) -> None:
    """Write the export (and the heads, or remove stale ones)."""
    write_export_files(out, backbone, meta)
    if heads:  # a file's tensors may share storage, which safetensors refuses: copy them
        cloned = {k: v.detach().clone() for k, v in heads.items()}
        write_export_files(out, cloned, heads_meta, weights=HEADS_WEIGHTS)
    else:
        (out / HEADS_WEIGHTS).unlink(missing_ok=True)
        (out / HEADS_META).unlink(missing_ok=True)


def import_weights(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    branch: str | None = None,
    preset: str | None = None,
    timm_name: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    overwrite: bool = False,
    img_size: int | None = None,
    clip_projection: bool = False,
) -> ImportResult:
    """Import one encoder of `checkpoint` into `out_dir` as a backbone export (+ its heads)."""
    out = Path(out_dir)
    if branch is not None and branch not in BRANCHES:
        raise BackboneError(f"--branch must be one of {', '.join(BRANCHES)}, got '{branch}'")
    chosen = get_preset(preset) if preset else None
    _check_out(out, overwrite)
    source = read_source(checkpoint)
    where = str(source.path)
    branch, prefix, state, rest, notes = split_branch(source, branch, chosen)
    if not state:
        raise BackboneError(f"{where}: the branch '{branch}' holds no tensors")
    user = dict(model_kwargs or {})
    release = import_release(state, source, chosen, timm_name, user, img_size, clip_projection)
    if release is None:  # timm / torchvision / solo-learn keys
        state = {DINO_RENAMES.get(k, k): v for k, v in state.items()}
        arch = resolve_architecture(state, source, chosen, timm_name, user)
        model = _build(arch, where)
        state, inner = _split_off(model, state)
        notes += _fill_bn_counters(model, state)
        arch, model, state, more = resize_vit(arch, model, state, img_size, where)
        layout = None
    else:
        arch, model, state, inner, more, layout = release
    notes += more
    load_strict(model, state, where)
    n_loaded, state = len(state), {}
    source.tensors = {}  # the model holds the weights now: free the file's copy (heads kept)
    heads, counts = _heads(rest, inner, prefix, source.nested)
    if counts:
        listed = ", ".join(f"{p} ({n})" for p, n in counts.items())
        notes.append(f"not part of the backbone, kept in {HEADS_WEIGHTS}: {listed}")
    norm_mean, norm_std, more = _normalisation(mean, std, chosen, source, layout)
    notes += more
    sha = sha256_file(source.path)
    meta = _metadata(source, arch, model, branch, chosen, norm_mean, norm_std, sha)
    if layout is not None:
        meta["layout"] = layout.name
    heads_meta = {"format": HEADS_FORMAT, "source": source.path.name, "source_sha256": sha}
    heads_meta |= {"branch": branch, "prefixes": counts}
    _write(out, model.state_dict(), meta, heads, heads_meta)
    if branch is not None:
        notes.insert(0, f"branch: {branch} ({prefix}*, {n_loaded} tensors)")
    return ImportResult(out, meta, counts, notes)


def _metadata(
    source: Source,
    arch: Resolved,
    model: nn.Module,
    branch: str | None,
    preset: Preset | None,
    mean: list[float],
    std: list[float],
    sha: str,
) -> dict[str, Any]:
    """backbone.json: the export's keys plus where the weights came from."""
    if hasattr(model, "patch_embed"):  # a ViT: the size it is built for
        img_size = int(model.patch_embed.img_size[0])
    elif source.ssl_meta is not None:
        img_size = int(source.ssl_meta["img_size"])
    else:
        img_size = preset.img_size if preset else 224
    method = preset.method if preset else None
    if source.ssl_meta is not None:
        method = source.ssl_meta["method"]
    return {
        "format": FORMAT,
        "timm_name": arch.timm_name,
        "model_kwargs": arch.kwargs,
        "img_size": img_size,
        "mean": mean,
        "std": std,
        "num_features": int(model.num_features),
        "architecture": arch.description,
        "source": source.path.name,
        "source_sha256": sha,
        "source_format": source.kind,
        "source_url": preset.url if preset else None,
        "branch": branch,
        "preset": preset.name if preset else None,
        "method": method,
        **{k: source.info[k] for k in ("epoch", "global_step") if k in source.info},
    }


# ----- command line ---------------------------------------------------------------------------
def _parse_kwargs(text: str | None) -> dict[str, Any]:
    """--model-kwargs: a JSON object."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BackboneError(
            f"--model-kwargs: not JSON ({exc}): e.g. '{{\"num_heads\": 12}}'"
        ) from None
    if not isinstance(value, dict):
        raise BackboneError(f"--model-kwargs: expected a JSON object, got {text}")
    return value


def cli_import_weights(args: argparse.Namespace) -> int:
    """`ssl-benthic import-weights CKPT --out DIR [...]` (or `--list-presets`)."""
    if args.list_presets or args.preset == "help":
        print(format_presets())
        return 0
    if not args.checkpoint or not args.out:
        raise UserError("import-weights needs CKPT and --out DIR (or --list-presets)")
    result = import_weights(
        args.checkpoint,
        args.out,
        branch=args.branch,
        preset=args.preset,
        timm_name=args.timm_name,
        model_kwargs=_parse_kwargs(args.model_kwargs),
        mean=args.mean,
        std=args.std,
        overwrite=args.overwrite,
        img_size=getattr(args, "img_size", None),
        clip_projection=getattr(args, "clip_projection", False),
    )
    meta = result.meta
    print(f"source: {meta['source']} ({meta['source_format']})")
    if meta.get("layout"):
        print(f"layout: {meta['layout']}")
    for note in result.notes:
        print(note)
    print(
        f"architecture: {meta['architecture']} -> timm '{meta['timm_name']}' {meta['model_kwargs']}"
    )
    print(f"normalisation: mean {meta['mean']}, std {meta['std']}; {meta['img_size']} px")
    extra = f", {HEADS_WEIGHTS}" if result.heads else ""
    print(f"wrote {result.out / EXPORT_WEIGHTS} (+ {EXPORT_META}{extra})")
    print(f"use it as: backbone.name={meta['timm_name']} backbone.weights={result.out}")
    return 0


def resize_vit(
    arch: Resolved, model: nn.Module, state: dict[str, Tensor], img_size: int | None, source: str
) -> tuple[Resolved, nn.Module, dict[str, Tensor], list[str]]:
    """The model rebuilt for `img_size` (a ViT at another size), its position embeddings resampled
    by timm; unchanged when `img_size` is None or the model's own."""
    if img_size is None or not hasattr(model, "patch_embed"):
        return arch, model, state, []
    if int(model.patch_embed.img_size[0]) == img_size:
        return arch, model, state, []
    arch = Resolved(arch.timm_name, {**arch.kwargs, "img_size": img_size}, arch.description)
    model = _build(arch, source)
    state, note = fit_pos_embed(model, state, source)
    return arch, model, state, [note] if note else []


def import_release(
    state: dict[str, Tensor],
    source: Source,
    preset: Preset | None,
    timm_name: str | None,
    user_kwargs: dict[str, Any],
    img_size: int | None,
    clip_projection: bool,
) -> tuple[Resolved, nn.Module, dict[str, Tensor], dict[str, Tensor], list[str], Layout] | None:
    """(architecture, model, converted state, kept heads, notes, layout) for a release layout, or
    None when `state` is in none (timm / torchvision / solo-learn keys)."""
    layout = detect_layout(state)
    if layout is None:
        if clip_projection:
            from ssl_benthic.core.errors import BackboneError

            raise BackboneError(f"{source.path}: --clip-projection: not an open_clip checkpoint")
        return None
    where = str(source.path)
    vit_layout = layout.key in ("dinov2", "openclip")
    prep = prepare(
        layout,
        state,
        where,
        clip_projection=clip_projection,
        user_kwargs=None if vit_layout else user_kwargs,
    )
    notes = list(prep.notes)
    if prep.arch is None:  # a VisionTransformer: arch_detect reads the renamed keys
        extra = {k: v for k, v in prep.kwargs.items() if k != "num_classes"}
        dim = int(prep.renamed["patch_embed.proj.weight"].shape[0])
        if "num_heads" not in user_kwargs and dim not in STANDARD_VIT_HEADS:
            extra["num_heads"] = max(dim // 64, 1)  # DINOv2 and CLIP heads are 64 wide
        renamed = {k: v for k, v in prep.renamed.items() if not k.startswith("head.")}
        arch = resolve_architecture(
            renamed,
            source,
            preset,
            timm_name,
            {**extra, **user_kwargs},
            prefer=prep.names,
            standard_heads=True,
        )
        kwargs = dict(arch.kwargs)
        if "num_classes" in prep.kwargs:
            kwargs["num_classes"] = prep.kwargs["num_classes"]
        arch = Resolved(arch.timm_name, kwargs, arch.description)
    else:
        _check_preset(prep.arch, preset, where)
        name = timm_name or (preset.timm_name if preset and preset.timm_name else prep.names[0])
        arch = Resolved(name, dict(prep.kwargs), prep.arch.description)
    if img_size is not None and layout.key != "dinov3-convnext":
        arch = Resolved(arch.timm_name, {**arch.kwargs, "img_size": img_size}, arch.description)
    elif layout.key in ("dinov3", "timm-dinov3") and preset is not None:
        arch = Resolved(
            arch.timm_name, {**arch.kwargs, "img_size": preset.img_size}, arch.description
        )
    model = _build(arch, where)
    converted = convert(prep, model)
    grid = prep.release_grid
    if grid is not None and hasattr(model, "patch_embed"):
        new = tuple(int(g) for g in model.patch_embed.grid_size)
        patch = int(model.patch_embed.patch_size[0])
        if new != (grid, grid):
            notes.append(
                f"position embeddings resampled by timm (bicubic) from the release's {grid}x{grid} "
                f"patches ({grid * patch} px) to {new[0]}x{new[1]} ({new[0] * patch} px)"
            )
    return arch, model, converted, dict(prep.kept), notes, layout
