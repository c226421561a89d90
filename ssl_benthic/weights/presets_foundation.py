"""Presets for foundation-model releases (`import-weights --preset NAME`): DINOv2, DINOv3, BioCLIP.

Licences as their publishers state them: DINOv2 code and weights Apache-2.0; DINOv3 weights under
Meta's own DINOv3 License (not an open-source licence: it has terms on redistribution and use; read
it before sharing exports or features); BioCLIP and BioCLIP 2 MIT (their model cards). The
download pages are where a user gets each file; nothing here fetches anything.
"""

from __future__ import annotations

from ssl_benthic.core.normalization import IMAGENET_MEAN, IMAGENET_STD
from ssl_benthic.weights.preset_record import Preset

__all__ = ["CLIP_MEAN", "CLIP_STD", "foundation_presets"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP (open_clip's default)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DINOV3_LICENSE = (
    "DINOv3 License (Meta; https://ai.meta.com/resources/models-and-libraries/dinov3-license/)"
)
DINOV3_DOWNLOAD = "https://ai.meta.com/resources/models-and-libraries/dinov3-downloads/ (or timm's"
DINOV2_SIZES = {"s": "small", "b": "base", "l": "large", "g": "giant"}


def _dinov2(size: str, reg: bool) -> Preset:
    name = f"dinov2_vit{size}14" + ("_reg4" if reg else "")
    full = DINOV2_SIZES[size]
    return Preset(
        name=name,
        description=f"DINOv2 ViT-{size.upper()}/14{' with 4 registers' if reg else ''} (LVD-142M), "
        "the release file (518 px position embeddings) or timm's safetensors",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        img_size=518,
        architecture=f"vit_{full}_patch14" + ("_reg4" if reg else ""),
        family="vit",
        timm_name=f"vit_{full}_patch14{'_reg4' if reg else ''}_dinov2",
        standard_heads=True,
        method="DINOv2",
        url=f"https://dl.fbaipublicfiles.com/dinov2/dinov2_vit{size}14/{name}_pretrain.pth",
        license="Apache-2.0",
    )


def _dinov3(name: str, label: str, timm: str, what: str, sat: bool = False) -> Preset:
    mean, std = (
        ((0.430, 0.411, 0.296), (0.213, 0.156, 0.143)) if sat else (IMAGENET_MEAN, IMAGENET_STD)
    )
    data = "SAT-493M" if sat else "LVD-1689M"
    return Preset(
        name=name,
        description=f"DINOv3 {what} ({data}), Meta's release file or timm's {timm}",
        mean=mean,
        std=std,
        img_size=256 if label.startswith("vit") else 224,
        architecture=label,
        family="convnext" if label.startswith("convnext") else "vit",
        standard_heads=True,
        method="DINOv3",
        url=f"{DINOV3_DOWNLOAD} {timm}.{'sat493m' if sat else 'lvd1689m'} on Hugging Face)",
        license=DINOV3_LICENSE,
    )


def foundation_presets() -> list[Preset]:
    """Every foundation-model preset."""
    presets = [_dinov2(s, reg) for s in DINOV2_SIZES for reg in (False, True)]
    presets += [
        _dinov3("dinov3_vits16", "vit_small_patch16", "vit_small_patch16_dinov3", "ViT-S/16"),
        _dinov3(
            "dinov3_vits16plus",
            "vit_small_plus_patch16",
            "vit_small_plus_patch16_dinov3",
            "ViT-S+/16",
        ),
        _dinov3("dinov3_vitb16", "vit_base_patch16", "vit_base_patch16_dinov3", "ViT-B/16"),
        _dinov3("dinov3_vitl16", "vit_large_patch16", "vit_large_patch16_dinov3", "ViT-L/16"),
        _dinov3(
            "dinov3_vitl16_sat493m",
            "vit_large_patch16",
            "vit_large_patch16_dinov3",
            "ViT-L/16 satellite",
            sat=True,
        ),
        _dinov3(
            "dinov3_vith16plus",
            "vit_huge_plus_patch16",
            "vit_huge_plus_patch16_dinov3",
            "ViT-H+/16",
        ),
    ]
    presets += [
        _dinov3(f"dinov3_convnext_{s}", f"convnext_{s}", f"convnext_{s}", f"ConvNeXt-{s.title()}")
        for s in ("tiny", "small", "base", "large")
    ]
    presets += [
        Preset(
            name="bioclip",
            description="BioCLIP ViT-B/16 image tower (open_clip; TreeOfLife-10M, fine-tuned from "
            "OpenAI CLIP, so QuickGELU); the trunk's feature, --clip-projection for the embedding",
            mean=CLIP_MEAN,
            std=CLIP_STD,
            architecture="vit_base_patch16",
            family="vit",
            timm_name="vit_base_patch16_clip_quickgelu_224",
            standard_heads=True,
            method="BioCLIP (CLIP)",
            url="https://huggingface.co/imageomics/bioclip (open_clip_pytorch_model.bin)",
            license="MIT",
        ),
        Preset(
            name="bioclip2",
            description="BioCLIP 2 ViT-L/14 image tower (open_clip; TreeOfLife-200M, fine-tuned from "
            "LAION-2B CLIP, GELU); the trunk's feature, --clip-projection for the embedding",
            mean=CLIP_MEAN,
            std=CLIP_STD,
            architecture="vit_large_patch14",
            family="vit",
            timm_name="vit_large_patch14_clip_224",
            standard_heads=True,
            method="BioCLIP 2 (CLIP)",
            url="https://huggingface.co/imageomics/bioclip-2 (open_clip_pytorch_model.bin)",
            license="MIT",
        ),
    ]
    return presets
