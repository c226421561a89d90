"""`manifest.json` of a shard folder: loading, checking, and finding shard folders under a path."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ssl_benthic.core.errors import DataError
from ssl_benthic.data.shards.format import MANIFEST, MANIFEST_FORMAT

SPLIT_ORDER = {"unlabelled": 0, "train": 1, "val": 2, "test": 3}

_SHARD_FILE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*\.tar")


def load_manifest(path: str | Path) -> dict:
    """Load and check a shard `manifest.json` (given as the file or its folder); shard file
    names must be plain '*.tar' names, so shard paths never leave the folder."""
    path = Path(path)
    file = path / MANIFEST if path.is_dir() else path
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{file}: not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise DataError(f"{file}: not a format-{MANIFEST_FORMAT} shard manifest")
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not isinstance(manifest.get("num_samples"), int):
        raise DataError(f"{file}: needs a 'shards' list and an integer 'num_samples'")
    for entry in shards:
        name = entry.get("file") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not _SHARD_FILE.fullmatch(name):
            raise DataError(f"{file}: shard entry {entry!r} lacks a plain '*.tar' file name")
        for key in ("num_samples", "bytes", "sha256"):
            if key not in entry:
                raise DataError(f"{file}: shard {name} lacks {key!r}")
    return manifest


def is_index(folder: Path) -> bool:
    """True for a manifest.json that only indexes sub-folders (a JSON object with no 'shards'
    and no tar beside it, like the sample's top-level manifest)."""
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "shards" not in data and not any(folder.glob("*.tar"))


def manifest_folders(path: str | Path) -> list[Path]:
    """`path` itself if it holds a shard manifest.json, else every folder below it that does."""
    path = Path(path)
    if (path / MANIFEST).is_file() and not is_index(path):
        return [path]
    if not path.is_dir():
        return []
    return sorted(p.parent for p in path.rglob(MANIFEST) if not is_index(p.parent))


def split_folders(root: str | Path) -> dict[str, Path]:
    """Split name -> folder for every folder at or below `root` whose manifest.json lists shards."""
    root = Path(root)
    found = {}
    for path in sorted(root.rglob(MANIFEST)):
        manifest = json.loads(path.read_text("utf-8"))
        if isinstance(manifest, dict) and "shards" in manifest:
            name = path.parent.relative_to(root).as_posix()
            found[root.name if name == "." else name] = path.parent
    if not found:
        raise DataError(f"{root}: no shard manifest.json here or in any sub-folder")
    return dict(
        sorted(found.items(), key=lambda kv: (SPLIT_ORDER.get(kv[0], len(SPLIT_ORDER)), kv[0]))
    )
