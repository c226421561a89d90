"""Cutting square patches around annotated points, the one way shards and prediction both use.

The patch of size P around the point (row, col) of an upright 8-bit image of H x W pixels starts at
top = row - P // 2, left = col - P // 2 and spans P x P pixels. Where it crosses the border the image
is mirrored without repeating the edge pixel, exactly as numpy's `np.pad(mode="reflect")`: index -1
reads 1, index H reads H - 2, and the pattern repeats with period 2 (H - 1) however far the patch
reaches (an image one pixel high repeats that pixel). So for any pad width p >= P,

    cut_patch(image, row, col, P) == np.pad(image, ((p, p), (p, p), (0, 0)), mode="reflect")
                                        [top + p : top + p + P, left + p : left + p + P]
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from ssl_benthic.data.images import decode_rgb, orientation

__all__ = [
    "PATCH_FORMATS",
    "cut_patch",
    "encode_patch",
    "patch_origin",
    "read_upright",
    "reflect_index",
    "resize_patch",
    "upright_size",
]

PATCH_FORMATS = {"jpg": {"format": "JPEG", "quality": 95}, "png": {"format": "PNG"}}


def reflect_index(index: np.ndarray, n: int) -> np.ndarray:
    """`index` folded into [0, n) as np.pad(mode="reflect") does: period 2(n - 1), edge not repeated."""
    if n < 1:
        raise ValueError(f"cannot reflect into an empty axis (n = {n})")
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    folded = np.mod(index, period)
    return np.where(folded < n, folded, period - folded)


def patch_origin(row: int, col: int, size: int) -> tuple[int, int]:
    """(top, left) of the size x size patch centred on (row, col): (row - size // 2, col - size // 2)."""
    return row - size // 2, col - size // 2


def cut_patch(image: np.ndarray, row: int, col: int, size: int) -> np.ndarray:
    """The size x size patch of `image` (H x W or H x W x C) centred on (row, col), reflect-padded
    where it crosses the border (see the module docstring); a new array, `image` is not changed."""
    if size < 1:
        raise ValueError(f"patch size must be >= 1, got {size}")
    top, left = patch_origin(row, col, size)
    rows = reflect_index(np.arange(top, top + size), image.shape[0])
    cols = reflect_index(np.arange(left, left + size), image.shape[1])
    return image[rows[:, None], cols[None, :]]


def resize_patch(patch: np.ndarray, size: int) -> np.ndarray:
    """`patch` resized to size x size pixels (bicubic, as `--resize` resizes whole images)."""
    if size < 1:
        raise ValueError(f"resize must be >= 1, got {size}")
    if patch.shape[0] == patch.shape[1] == size:
        return patch
    resized = Image.fromarray(patch).resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(resized)


def encode_patch(patch: np.ndarray, ext: str = "jpg") -> bytes:
    """A patch as JPEG quality 95 (`jpg`) or PNG (`png`), without metadata, so bytes are reproducible."""
    if ext not in PATCH_FORMATS:
        raise ValueError(f"patch format {ext!r} is not one of {sorted(PATCH_FORMATS)}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(patch)).save(buf, **PATCH_FORMATS[ext])
    return buf.getvalue()


def read_upright(path: Path) -> np.ndarray:
    """An image file as the upright 8-bit RGB array that points are cut from (H x W x 3)."""
    return np.asarray(decode_rgb(path.read_bytes()))


def upright_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image once turned upright by its EXIF orientation; reads the header only."""
    with Image.open(path) as im:
        width, height = im.size
        if orientation(im) in (5, 6, 7, 8):  # a quarter turn (and maybe a flip): sides swap
            width, height = height, width
    return height, width
