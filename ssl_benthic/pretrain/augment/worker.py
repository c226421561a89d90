"""The loader-worker half of `transform.device: accelerator`: decode, then each view's random
resized crop as a uint8 tensor (C, H, W) at the view's size. Everything else runs on the device.

Decoding is the reader's (upright, 8-bit RGB, warnings raise), except that a JPEG much larger than the
views is decoded at a reduced DCT scale (PIL `draft`: 1/2, 1/4 or 1/8) when the decoded image keeps a
short side of at least twice the largest view, so a crop's output is at most half the decoded size.
Crop boxes are drawn by each view's own `RandomResizedCrop` on the decoded image, relative to it, so
the scale and aspect-ratio distributions are the CPU path's at any decoding scale.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image
from torch import Tensor
from torchvision.transforms import InterpolationMode
from torchvision.transforms.functional import pil_modes_mapping
from torchvision.transforms.v2 import functional as F

from ssl_benthic.data.images import normalize
from ssl_benthic.data.shards.reader import ShardLoader, make_loader
from ssl_benthic.pretrain.augment.translate import ViewPlan

__all__ = ["WorkerCrops", "decode_for_crops", "make_crop_loader"]


def decode_for_crops(data: bytes, short_side: int) -> Image.Image:
    """Upright 8-bit RGB image; a JPEG is decoded at the smallest DCT scale that keeps its short
    side >= 2 * `short_side` (full size when no scale does)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        im = Image.open(io.BytesIO(data))
        if im.format == "JPEG":
            w, h = im.size
            ratio = 2 * short_side / min(w, h)
            if ratio <= 0.5:  # at least a 1/2 scale fits
                im.draft(im.mode, (math.ceil(w * ratio), math.ceil(h * ratio)))
        im.load()
    return normalize(im).convert("RGB")


def _resample(interpolation: Any) -> int:
    """PIL's resampling filter for a torchvision interpolation (enum or its name)."""
    mode = InterpolationMode(interpolation) if isinstance(interpolation, str) else interpolation
    return pil_modes_mapping[mode]


class WorkerCrops:
    """Decoded image -> one uint8 (C, H, W) crop per view, drawn as the view's RandomResizedCrop
    draws it (global torch RNG, as on the CPU path) and resized from the box in one PIL pass."""

    def __init__(self, plans: Sequence[ViewPlan]) -> None:
        self.crops = [p.crop for p in plans]
        self.sizes = [p.size for p in plans]
        self.resample = [_resample(c.interpolation) for c in self.crops]
        self.short_side = max(max(s) for s in self.sizes)

    def decode(self, data: bytes) -> Image.Image:
        """The image bytes, decoded for these crops (see `decode_for_crops`)."""
        return decode_for_crops(data, self.short_side)

    def __call__(self, image: Image.Image) -> list[Tensor]:
        return [self.crop(image, i) for i in range(len(self.crops))]

    def crop(self, image: Image.Image, view: int) -> Tensor:
        """View `view`'s random resized crop of `image` as uint8 (C, H, W)."""
        p = self.crops[view].make_params([image])
        box = (p["left"], p["top"], p["left"] + p["width"], p["top"] + p["height"])
        h, w = self.sizes[view]
        return F.pil_to_tensor(image.resize((w, h), self.resample[view], box=box))


def make_crop_loader(
    shards: str | Path | Sequence[str | Path], *, crops: WorkerCrops, **loader_kwargs: Any
) -> ShardLoader:
    """`reader.make_loader` with `crops` as the decoder (draft) and the transform: batches of (list
    of uint8 (B, C, H, W) views, metas), the same shard order, shuffle, rank and worker split and
    steps per epoch as the CPU path."""
    return make_loader(shards, transform=crops, decoder=crops.decode, **loader_kwargs)
