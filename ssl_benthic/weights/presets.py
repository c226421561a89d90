"""Named sources of published encoders for `ssl-benthic import-weights --preset NAME`.

A preset says what the weights file cannot: the normalisation the encoder was pretrained with, the
branch of a training checkpoint to import, and the choices that shapes cannot decide (a ViT's number
of attention heads). The architecture is still read from the file's keys and shapes; a preset that
names another architecture fails rather than loading the wrong model.

The five BenthicNet encoders (Lowe et al. 2025, Sci. Data 12:230; BSD-3-Clause) are solo-learn
checkpoints under Lightning. For Barlow Twins `backbone.*` is the only encoder. For MoCo v3
`backbone.*` is the online (query) encoder, the one MoCo v3 and BenthicNet evaluate and transfer;
`momentum_backbone.*` is its exponential-moving-average key encoder (`--branch momentum_backbone`).
"""

from __future__ import annotations

import difflib
from types import MappingProxyType

from ssl_benthic.core.errors import BackboneError
from ssl_benthic.core.normalization import (
    BENTHICNET_UNLABELLED_MEAN,
    BENTHICNET_UNLABELLED_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
)
from ssl_benthic.weights.preset_record import Preset

__all__ = [
    "PRESETS",
    "STANDARD_VIT_HEADS",
    "get_preset",
    "format_presets",
]


# attention heads per ViT width in timm, DeiT, DINO and DINOv2 (MoCo v3's ViT-Ti and ViT-S: 12)
STANDARD_VIT_HEADS = MappingProxyType({192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16, 1536: 24})


def _benthicnet(repo: str, method: str, arch: str, epochs: int, prod: bool) -> Preset:
    """A BenthicNet release on Hugging Face (`MLIsaac/<repo>`)."""
    is_vit = arch.startswith("vit")
    size = {"vit_small_patch16": "ViT-S/16", "vit_base_patch16": "ViT-B/16"}.get(arch, "ResNet-50")
    timm_name = f"{arch}_224" if is_vit else arch
    kwargs = (("num_heads", 12),) if is_vit else ()  # MoCo v3's ViTs: 12 heads at every size
    online = "the online query encoder; momentum_backbone is the EMA key encoder"
    return Preset(
        name=repo,
        description=(
            f"BenthicNet {method} {size}, {epochs} epochs"
            + (" (the _prod release)" if prod else "")
        ),
        mean=BENTHICNET_UNLABELLED_MEAN,
        std=BENTHICNET_UNLABELLED_STD,
        architecture=arch,
        family="vit" if is_vit else "resnet",
        timm_name=timm_name,
        model_kwargs=kwargs,
        branch="backbone",
        method=method,
        epochs=epochs,
        url=f"https://huggingface.co/MLIsaac/{repo}",
        license="BSD-3-Clause",
        branch_note=online if method == "MoCo v3" else "the only encoder",
    )


def _registry() -> dict[str, Preset]:
    """Every preset by name."""
    presets = [
        _benthicnet("benthicnet_bt_rn50_e400", "Barlow Twins", "resnet50", 400, False),
        _benthicnet("benthicnet_bt_rn50_e600_prod", "Barlow Twins", "resnet50", 600, True),
        _benthicnet("benthicnet_mcv3_vit-b_e100", "MoCo v3", "vit_base_patch16", 100, False),
        _benthicnet("benthicnet_mcv3_vit-b_e100_prod", "MoCo v3", "vit_base_patch16", 100, True),
        _benthicnet("benthicnet_mcv3_vit-s_e200_prod", "MoCo v3", "vit_small_patch16", 200, True),
        Preset(
            name="torchvision-resnet",
            description="a torchvision ResNet state dict (fc.* kept as a head), ImageNet statistics",
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            family="resnet",
        ),
        Preset(
            name="timm",
            description="a timm state dict with timm's defaults (ViT-S: 6 heads), ImageNet statistics",
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            standard_heads=True,
        ),
        Preset(
            name="dino",
            description="a DINO / DINOv2 checkpoint (teacher; timm head counts), ImageNet statistics",
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            standard_heads=True,
            branch="teacher",
            method="DINO",
            branch_note="the EMA teacher, the encoder DINO evaluates",
        ),
    ]
    from ssl_benthic.weights.presets_foundation import foundation_presets  # DINOv2, DINOv3, BioCLIP

    presets += foundation_presets()
    return {p.name: p for p in presets}


PRESETS: MappingProxyType = MappingProxyType(_registry())


def get_preset(name: str) -> Preset:
    """The preset called `name` (a Hugging Face id `MLIsaac/<name>` also works); else fail with
    the nearest names."""
    key = name.removeprefix("MLIsaac/")
    if key in PRESETS:
        return PRESETS[key]
    close = difflib.get_close_matches(key, list(PRESETS), n=3, cutoff=0.5)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    raise BackboneError(
        f"unknown preset '{name}'{hint}; `ssl-benthic import-weights --list-presets` lists them"
    )


def format_presets() -> str:
    """The registry as text, one block per preset, for `--list-presets`."""
    blocks = []
    for p in PRESETS.values():
        arch = p.timm_name or p.family or "any (from the keys)"
        kwargs = f" {p.kwargs()}" if p.model_kwargs else ""
        lines = [
            f"{p.name}: {p.description}",
            f"  architecture: {arch}{kwargs}; {p.img_size} px",
            f"  mean {list(p.mean)}, std {list(p.std)}",
        ]
        if p.branch:
            note = f" ({p.branch_note})" if p.branch_note else ""
            lines.append(f"  branch: {p.branch}{note}")
        if p.url:
            lines.append(f"  download: {p.url} ({p.license})")
        blocks.append("\n".join(lines))
    return "\n".join(blocks)
