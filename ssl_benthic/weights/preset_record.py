"""The record of a named published encoder (`presets` and `presets_foundation` list them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Preset:
    """One published encoder (or a family of files with one convention) and how to import it."""

    name: str
    description: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    img_size: int = 224
    architecture: str | None = None  # e.g. "resnet50", "vit_small_patch16"; None: any
    family: str | None = None  # "resnet" or "vit"; None: any
    timm_name: str | None = None
    model_kwargs: tuple[tuple[str, Any], ...] = ()
    standard_heads: bool = False  # a ViT's head count follows STANDARD_VIT_HEADS
    branch: str | None = None
    method: str | None = None
    epochs: int | None = None
    url: str | None = None
    license: str | None = None
    branch_note: str = ""

    def kwargs(self) -> dict[str, Any]:
        """The timm model kwargs the preset fixes (e.g. num_heads=12), as a fresh dict."""
        return dict(self.model_kwargs)
