"""Image decoding and encoding shared by the shard writer and the reader.

Every image is decoded the same way wherever it is read: fully (a truncated file or a PIL warning is
an error), turned upright by its EXIF orientation, and 16-bit grayscale (Pillow modes `I;16*`, `I`,
values 0-65535) scaled to 8 bits as round(v / 257). Pillow 13 itself reduces 48-bit RGB and 16-bit
grayscale+alpha or RGBA PNGs to 8 bits by keeping the high byte (v >> 8, within 1 of v / 257), so
those need nothing more. `convert("RGB")` alone would clip 16-bit grayscale to almost white.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ssl_benthic.core.errors import DataError

SUFFIX_EXT = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp"}
CONVERTIBLE_SUFFIXES = (".tif", ".tiff", ".bmp")  # read only when re-encoding (--resize)
ORIENTATION = 0x0112  # the EXIF orientation tag; 1 (or absent) is upright
_PNG_MODES = ("1", "L", "LA", "P", "RGB", "RGBA")
_SAVE = {
    "jpg": {"format": "JPEG", "quality": 95},
    "png": {"format": "PNG"},
    "webp": {"format": "WEBP", "lossless": True},
}


def _open(data: bytes) -> tuple[Image.Image, bool]:
    """(fully decoded image, whether the file stores 16 bits per channel); warnings raise."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        im = Image.open(io.BytesIO(data))
        deep = any(";16" in _rawmode(tile) for tile in im.tile)  # tile is cleared by load()
        im.load()
    return im, deep


def _rawmode(tile: object) -> str:
    args = getattr(tile, "args", None)
    if isinstance(args, tuple | list) and args:
        args = args[0]
    return args if isinstance(args, str) else ""


def open_full(data: bytes) -> Image.Image:
    """Decode image bytes fully as stored (no orientation, no scaling); truncation and warnings raise."""
    return _open(data)[0]


def orientation(im: Image.Image) -> int:
    """The image's EXIF orientation tag (1 when absent): 6 and 8 are turned a quarter, 3 a half."""
    value = im.getexif().get(ORIENTATION, 1)
    return value if isinstance(value, int) else 1


def upright(im: Image.Image) -> Image.Image:
    """`im` turned as its EXIF orientation says, with the tag removed; `im` itself when upright."""
    return ImageOps.exif_transpose(im) if orientation(im) not in (0, 1) else im


def to_8bit(im: Image.Image) -> Image.Image:
    """16-bit grayscale (`I;16*`, `I`: 0-65535) as 8-bit `L` by round(v / 257); other modes as they are.

    Floating-point images (`F`) have no agreed range, so they are refused rather than guessed.
    """
    if im.mode == "F":
        raise DataError(
            "32-bit floating-point image (mode F) is not supported; save it as 8 or 16 bit"
        )
    if not im.mode.startswith("I"):
        return im
    values = np.clip(np.asarray(im).astype(np.int32), 0, 65535)
    return Image.fromarray(((values * 2 + 257) // 514).astype(np.uint8), "L")


def normalize(im: Image.Image) -> Image.Image:
    """Upright and 8-bit: what every reader of the shards should see."""
    return to_8bit(upright(im))


def decode_rgb(data: bytes) -> Image.Image:
    """Image bytes as an upright 8-bit RGB PIL image (the reader's decoder)."""
    return normalize(open_full(data)).convert("RGB")


def needs_fix(im: Image.Image, deep: bool) -> bool:
    """True when bytes cannot be stored as they are: rotated by EXIF, or more than 8 bits a channel."""
    return deep or im.mode.startswith(("I", "F")) or orientation(im) not in (0, 1)


def _exif_bytes(im: Image.Image) -> bytes | None:
    """The EXIF block of `im` without the orientation tag (None when nothing else is left)."""
    exif = im.getexif()
    exif.pop(ORIENTATION, None)
    return exif.tobytes() if len(exif) else None


def reencode(im: Image.Image, ext: str) -> bytes:
    """Upright 8-bit `im` in the format of `ext` (JPEG quality 95, PNG, lossless WebP), keeping the
    ICC profile and the EXIF block minus orientation."""
    fixed = normalize(im)
    if ext == "png" and fixed.mode not in _PNG_MODES:
        fixed = fixed.convert("RGBA" if "A" in fixed.mode else "RGB")
    elif ext != "png" and fixed.mode not in ("L", "RGB", "RGBA"):
        fixed = fixed.convert("RGB")
    if ext == "jpg" and fixed.mode == "RGBA":
        fixed = fixed.convert("RGB")
    extra = {"icc_profile": im.info.get("icc_profile"), "exif": _exif_bytes(im)}
    buf = io.BytesIO()
    fixed.save(buf, **_SAVE[ext], **{k: v for k, v in extra.items() if v})
    return buf.getvalue()


def resized_jpeg(im: Image.Image, short_side: int, quality: int = 90) -> bytes:
    """Upright 8-bit RGB `im` with its short side resized to `short_side` (bicubic), as JPEG."""
    rgb = normalize(im).convert("RGB")
    scale = short_side / min(rgb.size)
    size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
    if size != rgb.size:
        rgb = rgb.resize(size, Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    rgb.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def encode_image(path: Path, resize: int = 0) -> tuple[bytes, str]:
    """(bytes, ext) of an image file for a shard, decoded fully first (a corrupt file raises).

    With `resize` > 0: upright, 8-bit, short side resized, JPEG quality 90. With 0: the file's bytes
    as they are, unless it is EXIF-rotated or 16-bit; then re-encoded in its own format (`reencode`).
    """
    if resize < 0:
        raise DataError(f"resize must be >= 0 (0 keeps the size), got {resize}")
    ext = SUFFIX_EXT.get(path.suffix.lower())
    if not resize and ext is None:
        raise DataError(f"{path}: not a .jpg/.jpeg/.png/.webp image (use --resize to convert)")
    data = path.read_bytes()
    im, deep = _open(data)
    if resize:
        return resized_jpeg(im, resize), "jpg"
    if not needs_fix(im, deep):
        return data, ext
    return reencode(im, ext), ext


def describe_error(exc: BaseException) -> str:
    """One line for a decoding error, without memory addresses (so manifests stay reproducible)."""
    text = re.sub(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>", "", str(exc)).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
