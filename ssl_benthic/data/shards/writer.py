"""Writing webdataset tar shards with a `manifest.json` beside them (verifying them: `verify`).

A shard holds samples as `KEY.EXT` (image bytes) + `KEY.json` (metadata, sort_keys). Shards are
byte-identical for the same input: every tar header is fixed (mtime 0, uid/gid 0, empty user and
group names, mode 0o644, GNU format), and the manifest carries no timestamps. A shard folder is
built beside its destination and moved into place only when complete (`atomic.atomic_folder`).
`write_planned` writes a source's `progress.Plan` and records each finished shard, so that an
interrupted build can be resumed. Making shards from a CSV or a folder tree lives in `sources`,
from point exports in `point_sources`, the command line in `make_shards_cli`; decoding in `images`.
"""

from __future__ import annotations

import hashlib
import json
import random
import tarfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

from ssl_benthic.core.errors import DataError
from ssl_benthic.data.shards.build import atomic_folder, previous
from ssl_benthic.data.shards.format import (
    IMAGE_EXTS,
    MANIFEST,
    MANIFEST_FORMAT,
    ShardSample,
    check_key,
)
from ssl_benthic.data.shards.progress import Plan, Progress, Skipped, reused_skips

__all__ = [
    "write_planned",
    "write_shards",
]
_ERRORS = "surrogateescape"  # tarfile's default for member names


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ssl-benthic")
    except PackageNotFoundError:
        return "unknown"


def _padded(n: int) -> int:
    """Bytes that `n` data bytes take in a tar: one 512-byte header plus data rounded up to 512."""
    return 512 + (n + 511) // 512 * 512


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def _sample_members(sample: ShardSample) -> list[tuple[str, bytes]]:
    """Validate one sample and return its (member name, bytes) pairs."""
    check_key(sample.key)
    if sample.ext not in IMAGE_EXTS:
        raise ValueError(f"sample {sample.key!r}: ext {sample.ext!r} is not one of {IMAGE_EXTS}")
    if not isinstance(sample.image, bytes | bytearray) or not sample.image:
        raise ValueError(f"sample {sample.key!r}: image must be non-empty encoded bytes")
    try:
        meta = json.dumps(sample.meta, sort_keys=True).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"sample {sample.key!r}: meta is not JSON-serialisable: {exc}") from exc
    return [(f"{sample.key}.{sample.ext}", bytes(sample.image)), (f"{sample.key}.json", meta)]


class _ShardWriter:
    """Writes numbered tar shards, closing one when the next sample would break a bound.

    The tar stream is written here as `tarfile` writes it in GNU format (each member: its header,
    `TarInfo.tobuf`, then its data padded to 512 bytes; at the end two zero blocks, padded to a
    whole record), hashing as it goes, without `tarfile`'s per-member bookkeeping."""

    def __init__(self, out_dir: Path, name: str, max_per_shard: int, max_bytes: int) -> None:
        self.out_dir, self.name = out_dir, name
        self.max_per_shard, self.max_bytes = max_per_shard, max_bytes
        self.shards: list[dict[str, Any]] = []
        self.file: BinaryIO | None = None
        self.count = self.est_bytes = self.offset = 0

    def add(self, members: list[tuple[str, bytes]]) -> None:
        size = sum(_padded(len(data)) for _, data in members)
        end = self.est_bytes + size + 2 * 512  # two zero blocks end the archive
        total = -(-end // tarfile.RECORDSIZE) * tarfile.RECORDSIZE  # padded to whole records
        full = self.count >= self.max_per_shard or total > self.max_bytes
        if self.file is not None and full:
            self.close()
        if self.file is None:
            self._open()
        for member, data in members:
            self._write(_tarinfo(member, len(data)).tobuf(tarfile.GNU_FORMAT, "utf-8", _ERRORS))
            self._write(data)
            self._write(tarfile.NUL * (-len(data) % tarfile.BLOCKSIZE))
        self.count += 1
        self.est_bytes += size

    def _write(self, data: bytes) -> None:
        self.file.write(data)
        self.hash.update(data)
        self.offset += len(data)

    def _open(self) -> None:
        self.path = self.out_dir / f"{self.name}-{len(self.shards):06d}.tar"
        self.file = open(self.path, "wb")  # noqa: SIM115 (closed in close or abort)
        self.hash = hashlib.sha256()
        self.count = self.est_bytes = self.offset = 0

    def abort(self) -> None:
        """Close the shard being written after an error (its folder is deleted by the caller)."""
        if self.file is not None:
            self.file.close()
            self.file = None

    def close(self) -> None:
        if self.file is None:
            return
        self._write(tarfile.NUL * (2 * tarfile.BLOCKSIZE))
        self._write(tarfile.NUL * (-self.offset % tarfile.RECORDSIZE))
        self.file.close()
        self.file = None
        self.shards.append(
            {
                "file": self.path.name,
                "num_samples": self.count,
                "bytes": self.offset,
                "sha256": self.hash.hexdigest(),
            }
        )


def _write_all(samples: Iterable[ShardSample], writer: _ShardWriter) -> int:
    """Feed every sample to `writer` (keys must be unique); return how many were written."""
    seen: set[str] = set()
    try:
        for sample in samples:
            if sample.key in seen:
                raise ValueError(f"duplicate sample key {sample.key!r}")
            seen.add(sample.key)
            writer.add(_sample_members(sample))
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return len(seen)


def _resolve(value: dict | Callable[[], dict] | None) -> dict | None:
    return value() if callable(value) else value


def _check_bounds(name: str, max_per_shard: int, max_shard_bytes: int) -> None:
    check_key(name, "shard name")
    if max_per_shard < 1 or max_shard_bytes < 1:
        raise ValueError("max_per_shard and max_shard_bytes must be positive")


def _write_manifest(
    tmp: Path,
    out_dir: str | Path,
    writer: _ShardWriter,
    count: int,
    label_schema: dict | Callable[[], dict] | None,
    source: dict | Callable[[], dict] | None,
    seed: int | None,
) -> dict:
    """Write `tmp/manifest.json` for the shards `writer` closed; the manifest."""
    if not count:
        raise DataError(f"no samples to write to {out_dir}")
    manifest = {
        "format": MANIFEST_FORMAT,
        "name": writer.name,
        "num_samples": count,
        "shards": writer.shards,
        "label_schema": _resolve(label_schema),
        "source": _resolve(source),
        "seed": seed,
        "created_by": f"ssl-benthic {_version()}",
    }
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    (tmp / MANIFEST).write_text(text, encoding="utf-8")
    return manifest


def write_shards(
    samples: Iterable[ShardSample],
    out_dir: str | Path,
    *,
    name: str = "shard",
    max_per_shard: int = 10000,
    max_shard_bytes: int = 256 * 2**20,
    label_schema: dict | Callable[[], dict] | None = None,
    source: dict | Callable[[], dict] | None = None,
    seed: int | None = None,
    overwrite: bool = False,
) -> dict:
    """Write `samples` as `NAME-000000.tar ...` + `manifest.json` in `out_dir`; return the manifest.

    The folder is built beside `out_dir` and moved into place only when complete; a non-empty
    `out_dir` is refused unless `overwrite` (then replaced only at the end). With `seed` the samples
    are first shuffled by `random.Random(seed)` (this holds them all in memory); without, they
    stream in the given order. A shard closes before it would pass `max_per_shard` samples or
    `max_shard_bytes` bytes (a single larger sample gets its own shard). Keys must be unique and
    safe (see `check_key`); the same input gives byte-identical files. `label_schema` and `source`
    may be callables: they are called after the last sample is drawn (e.g. to list skipped inputs).
    """
    _check_bounds(name, max_per_shard, max_shard_bytes)
    with atomic_folder(out_dir, overwrite=overwrite) as tmp:
        if seed is not None:
            samples = list(samples)
            random.Random(seed).shuffle(samples)
        writer = _ShardWriter(tmp, name, max_per_shard, max_shard_bytes)
        count = _write_all(samples, writer)
        return _write_manifest(tmp, out_dir, writer, count, label_schema, source, seed)


class _Recorder:
    """Follows a plan's events into the writer and records each shard it closes in `progress`."""

    def __init__(self, writer: _ShardWriter, progress: Progress, start: int) -> None:
        self.writer, self.progress = writer, progress
        self.pos = self.start = start  # the next place of the plan; where the open shard began
        self.last = -1  # the place of the last sample written
        self.skips: list[tuple[int, Skipped]] = []
        self.keys: set[str] = set()

    def feed(self, event: ShardSample | Skipped) -> None:
        """Write a sample (recording the shard it closes) or note a skip; one place of the plan."""
        if isinstance(event, Skipped):
            self.skips.append((self.pos, event))
        else:
            if event.key in self.keys:
                raise ValueError(f"duplicate sample key {event.key!r}")
            self.keys.add(event.key)
            closed = len(self.writer.shards)
            self.writer.add(_sample_members(event))
            if len(self.writer.shards) > closed:
                self._record()
            self.last = self.pos
        self.pos += 1

    def _record(self) -> None:
        """Record the shard just closed: places from `start` through the last sample before now."""
        end = self.last + 1
        mine = [s for p, s in self.skips if p < end]
        self.skips = [(p, s) for p, s in self.skips if p >= end]
        self.progress.add(self.writer.shards[-1], self.start, end, mine)
        self.start = end

    def close(self) -> None:
        closed = len(self.writer.shards)
        self.writer.close()
        if len(self.writer.shards) > closed:
            self._record()


def write_planned(
    plan: Plan,
    out_dir: str | Path,
    *,
    name: str = "shard",
    max_per_shard: int = 10000,
    max_shard_bytes: int = 256 * 2**20,
    label_schema: dict | Callable[[], dict] | None = None,
    source: dict | Callable[[], dict] | None = None,
    overwrite: bool = False,
) -> dict:
    """`write_shards` of a source's `plan` (see `progress`), recording every finished shard in the
    build folder's progress file; in a build that adopted an interrupted one (`atomic.resumable`),
    its finished shards are reused while they match, and the plan is streamed from the first place
    after them. The files are byte-identical to an uninterrupted build's."""
    _check_bounds(name, max_per_shard, max_shard_bytes)
    settings = {**plan.settings, "shards": [name, max_per_shard, max_shard_bytes]}
    with atomic_folder(out_dir, overwrite=overwrite) as tmp:
        progress = Progress(tmp, settings, plan)
        reused = progress.reuse(previous(tmp), name)
        writer = _ShardWriter(tmp, name, max_per_shard, max_shard_bytes)
        writer.shards = [
            {k: r[k] for k in ("file", "num_samples", "bytes", "sha256")} for r in reused
        ]
        start = reused[-1]["end"] if reused else 0
        if reused:
            samples = sum(r["num_samples"] for r in reused)
            where = Path(out_dir).name
            print(
                f"--resume: reusing {len(reused)} finished shards ({samples} samples) for {where}"
            )
        recorder = _Recorder(writer, progress, start)
        try:
            for event in plan.stream(start, reused_skips(reused)):
                recorder.feed(event)
        except BaseException:
            writer.abort()
            raise
        recorder.close()
        count = sum(r["num_samples"] for r in reused) + len(recorder.keys)
        return _write_manifest(tmp, out_dir, writer, count, label_schema, source, None)
