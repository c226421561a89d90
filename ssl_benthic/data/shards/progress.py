"""What a shard build records as it goes, so that `make-shards --resume` can reuse finished shards.

A source describes its run as a `Plan`: the samples it will write, in order, each with an identity
(key, metadata, source file path, size and mtime) known before any image is decoded, the settings
that decide how an image becomes bytes, and a stream of events (a `ShardSample`, or `Skipped` for an
image that does not decode), one per planned sample, that can start at any place of the plan.

While writing, the build folder holds `.progress.jsonl`: a first line with the settings, then one
line per finished shard: its manifest entry (file, num_samples, bytes, sha256), the places of the
plan it covers (`start`, `end`: up to its last sample), the sha256 of those places' identities and
the images skipped among them. A resumed build reuses the earlier build's shards in order while
(1) the settings are equal, (2) the shard covers the next places of the new plan with equal
identities, and (3) the file on disk still has the recorded size and sha256; from the first shard
that fails any of these, everything is encoded and written again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ssl_benthic.data.shards.build import PROGRESS

if TYPE_CHECKING:
    from ssl_benthic.data.shards.format import ShardSample

__all__ = ["Plan", "Progress", "Skipped", "file_identity", "reused_skips", "versions"]


@dataclass(frozen=True)
class Skipped:
    """A planned sample that was not written: its key, and the skip entry {row, file, reason}."""

    key: str
    row: int | None
    file: str
    reason: str

    def entry(self) -> dict:
        return {"row": self.row, "file": self.file, "reason": self.reason}


@dataclass(frozen=True)
class Plan:
    """A source's run: `size` planned samples, `identity(i)` of each (JSON), the `settings` that
    decide the bytes, and `stream(start, skipped)`: the events of places start.. (after noting the
    earlier places as done, with `skipped` the skips among them)."""

    size: int
    identity: Callable[[int], Any]
    settings: dict
    stream: Callable[[int, list[Skipped]], Iterator[ShardSample | Skipped]]

    def digest(self, start: int, end: int) -> str:
        """sha256 of the identities of places [start, end): what a reused shard must match."""
        h = hashlib.sha256()
        for i in range(start, end):
            h.update(json.dumps(self.identity(i), sort_keys=True).encode("utf-8") + b"\n")
        return h.hexdigest()


def file_identity() -> Callable[[Path], list]:
    """[path, size, mtime_ns] of a source file ([path, None, None] once it is gone), cached per
    path (a photograph with many points)."""
    seen: dict[Path, list] = {}

    def identity(path: Path) -> list:
        if path not in seen:
            try:
                st = path.stat()
                seen[path] = [str(path), st.st_size, st.st_mtime_ns]
            except OSError:
                seen[path] = [str(path), None, None]
        return seen[path]

    return identity


def versions() -> dict:
    """Versions of the code that turns images into bytes (a reused shard must come from the same)."""
    from importlib.metadata import PackageNotFoundError, version

    import numpy
    import PIL
    from PIL import features

    try:
        own = version("ssl-benthic")
    except PackageNotFoundError:
        own = "unknown"
    codecs = {c: features.version(c) for c in ("jpg", "libjpeg_turbo", "zlib", "webp")}
    return {"ssl-benthic": own, "pillow": PIL.__version__, "numpy": numpy.__version__, **codecs}


def _read(path: Path) -> tuple[dict | None, list[dict]]:
    """(settings, shard records) of a progress file; a torn last line (a kill mid-write) is dropped."""
    settings, records = None, []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None, []
    for n, line in enumerate(lines):
        try:
            value = json.loads(line)
        except ValueError:
            break
        if n == 0:
            settings = value.get("settings") if isinstance(value, dict) else None
        elif isinstance(value, dict):
            records.append(value)
    return settings, records


class Progress:
    """The progress file of one build folder: written as shards finish, read to resume."""

    def __init__(self, folder: Path, settings: dict, plan: Plan) -> None:
        self.folder, self.settings, self.plan = folder, settings, plan
        self.path = folder / PROGRESS

    def reuse(self, old: Path | None, name: str) -> list[dict]:
        """Move the reusable finished shards of `old` (an earlier build) here; their records.
        Also starts this folder's progress file with the settings and those records."""
        reused: list[dict] = []
        settings, records = _read(old / PROGRESS) if old else (None, [])
        if settings == self.settings:
            for record in records:
                if not self._reusable(old, record, name, len(reused), self._end(reused)):
                    break
                os.replace(old / record["file"], self.folder / record["file"])
                reused.append(record)
        lines = [{"settings": self.settings}, *reused]
        text = "".join(json.dumps(v, sort_keys=True) + "\n" for v in lines)
        self.path.write_text(text, encoding="utf-8")
        return reused

    @staticmethod
    def _end(records: list[dict]) -> int:
        return records[-1]["end"] if records else 0

    def _reusable(self, old: Path, record: dict, name: str, index: int, start: int) -> bool:
        """Does `record` name the next shard, cover the next places with equal identities, and
        is its file on disk as recorded?"""
        from ssl_benthic.core.paths import sha256_file

        try:
            end, file = int(record["end"]), record["file"]
            if file != f"{name}-{index:06d}.tar" or record["start"] != start:
                return False
            if not start < end <= self.plan.size:
                return False
            if self.plan.digest(start, end) != record["plan_sha256"]:
                return False
            path = old / file
            return (
                path.is_file()
                and path.stat().st_size == record["bytes"]
                and sha256_file(path) == record["sha256"]
            )
        except (KeyError, TypeError, ValueError, OSError):
            return False

    def add(self, shard: dict, start: int, end: int, skipped: list[Skipped]) -> None:
        """Record a finished shard covering places [start, end) with `skipped` among them."""
        record = {
            **shard,
            "start": start,
            "end": end,
            "plan_sha256": self.plan.digest(start, end),
            "skipped": [asdict(s) for s in skipped],
        }
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())


def reused_skips(records: list[dict]) -> list[Skipped]:
    """The skips recorded by reused shards, in plan order."""
    return [Skipped(**s) for r in records for s in r["skipped"]]
