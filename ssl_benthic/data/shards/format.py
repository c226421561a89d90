"""The shard format's vocabulary: a sample record, safe keys, image extensions, the manifest's name.

A leaf module (no project imports) so that writers, readers, verifiers and sources agree on one
definition without importing each other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["IMAGE_EXTS", "MANIFEST", "MANIFEST_FORMAT", "SAFE_KEY", "ShardSample", "check_key"]


IMAGE_EXTS = ("jpg", "png", "webp")


SAFE_KEY = re.compile(r"[A-Za-z0-9_-]{1,200}")


@dataclass(frozen=True)
class ShardSample:
    """One sample to write: `KEY.EXT` holds `image` (encoded bytes), `KEY.json` holds `meta`."""

    key: str
    image: bytes
    ext: str
    meta: dict = field(default_factory=dict)


def check_key(key: str, what: str = "sample key") -> str:
    """Return `key` if it is a safe member/file stem (letters, digits, '_' and '-' only), else raise.

    Dots would split the webdataset key, and '/', '..', '\\' or whitespace could escape the folder.
    """
    if not isinstance(key, str) or not SAFE_KEY.fullmatch(key):
        raise ValueError(
            f"unsafe {what} {key!r}: use 1-200 characters from A-Z a-z 0-9 '_' '-' "
            "(no '.', '/', '\\', '..' or whitespace)"
        )
    return key


MANIFEST = "manifest.json"


MANIFEST_FORMAT = 1
