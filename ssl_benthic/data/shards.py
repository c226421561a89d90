"""Writing, making and verifying webdataset tar shards with a `manifest.json` beside them.

A shard holds samples as `KEY.EXT` (image bytes) + `KEY.json` (metadata, sort_keys). Shards are
byte-identical for the same input: every tar header is fixed (mtime 0, uid/gid 0, empty user and
group names, mode 0o644, GNU format), and the manifest carries no timestamps.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import random
import re
import tarfile
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from ssl_benthic.data.manifest import MANIFEST, MANIFEST_FORMAT, load_manifest, manifest_folders

IMAGE_EXTS = ("jpg", "png", "webp")
_SAFE = re.compile(r"[A-Za-z0-9_-]{1,200}")
_SUFFIX_EXT = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp"}


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
    if not isinstance(key, str) or not _SAFE.fullmatch(key):
        raise ValueError(
            f"unsafe {what} {key!r}: use 1-200 characters from A-Z a-z 0-9 '_' '-' "
            "(no '.', '/', '\\', '..' or whitespace)"
        )
    return key


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


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class _ShardWriter:
    """Writes numbered tar shards, closing one when the next sample would break a bound."""

    def __init__(self, out_dir: Path, name: str, max_per_shard: int, max_bytes: int) -> None:
        self.out_dir, self.name = out_dir, name
        self.max_per_shard, self.max_bytes = max_per_shard, max_bytes
        self.shards: list[dict[str, Any]] = []
        self.tar: tarfile.TarFile | None = None
        self.count = self.est_bytes = 0

    def add(self, members: list[tuple[str, bytes]]) -> None:
        size = sum(_padded(len(data)) for _, data in members)
        end = self.est_bytes + size + 2 * 512  # two zero blocks end the archive
        total = -(-end // tarfile.RECORDSIZE) * tarfile.RECORDSIZE  # padded to whole records
        full = self.count >= self.max_per_shard or total > self.max_bytes
        if self.tar is not None and full:
            self.close()
        if self.tar is None:
            self._open()
        for member, data in members:
            self.tar.addfile(_tarinfo(member, len(data)), io.BytesIO(data))
        self.count += 1
        self.est_bytes += size

    def _open(self) -> None:
        self.path = self.out_dir / f"{self.name}-{len(self.shards):06d}.tar"
        self.tmp = self.path.with_name(self.path.name + ".partial")
        self.tar = tarfile.open(self.tmp, "w", format=tarfile.GNU_FORMAT)  # noqa: SIM115 (closed in close or abort)
        self.count = self.est_bytes = 0

    def abort(self) -> None:
        """Drop the shard being written (after an error), leaving finished shards in place."""
        if self.tar is not None:
            self.tar.close()
            self.tmp.unlink(missing_ok=True)
            self.tar = None

    def close(self) -> None:
        if self.tar is None:
            return
        self.tar.close()
        os.replace(self.tmp, self.path)
        self.shards.append(
            {
                "file": self.path.name,
                "num_samples": self.count,
                "bytes": self.path.stat().st_size,
                "sha256": sha256_file(self.path),
            }
        )
        self.tar = None


def _remove_stale(out_dir: Path, name: str, keep: int) -> None:
    """Delete `NAME-NNNNNN.tar` files numbered `keep` or above left by an earlier, larger run."""
    pattern = re.compile(re.escape(name) + r"-(\d{6})\.tar")
    for path in out_dir.iterdir():
        m = pattern.fullmatch(path.name)
        if m and int(m.group(1)) >= keep:
            warnings.warn(f"removing stale shard {path} from an earlier run", stacklevel=3)
            path.unlink()


def write_shards(
    samples: Iterable[ShardSample],
    out_dir: str | Path,
    *,
    name: str = "shard",
    max_per_shard: int = 10000,
    max_shard_bytes: int = 256 * 2**20,
    label_schema: dict | None = None,
    source: dict | None = None,
    seed: int | None = None,
) -> dict:
    """Write `samples` as `NAME-000000.tar ...` + `manifest.json` in `out_dir`; return the manifest.

    With `seed` the samples are first shuffled by `random.Random(seed)` (this holds them all in
    memory); without, they stream in the given order. A shard closes before it would pass
    `max_per_shard` samples or `max_shard_bytes` bytes (a single larger sample gets its own shard).
    Keys must be unique and safe (see `check_key`); the same input gives byte-identical files.
    """
    check_key(name, "shard name")
    if max_per_shard < 1 or max_shard_bytes < 1:
        raise ValueError("max_per_shard and max_shard_bytes must be positive")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if seed is not None:
        samples = list(samples)
        random.Random(seed).shuffle(samples)
    writer = _ShardWriter(out, name, max_per_shard, max_shard_bytes)
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
    if not seen:
        raise ValueError(f"no samples to write to {out}")
    _remove_stale(out, name, keep=len(writer.shards))
    manifest = {
        "format": MANIFEST_FORMAT,
        "name": name,
        "num_samples": len(seen),
        "shards": writer.shards,
        "label_schema": label_schema,
        "source": source,
        "seed": seed,
        "created_by": f"ssl-benthic {_version()}",
    }
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    (out / MANIFEST).write_text(text, encoding="utf-8")
    return manifest


# --- making shards from a CSV or a folder tree ------------------------------------------------


def _inside(root: Path, rel: str, where: str) -> Path:
    """Resolve `rel` under `root`, refusing paths (.., absolute, symlinks) that land outside it."""
    path = (root / rel).resolve()
    if not path.is_relative_to(root.resolve()):
        raise ValueError(f"{where}: image path {rel!r} escapes the images root {root}")
    return path


def _stem_key(index: int, path: Path) -> str:
    """Deterministic safe key: zero-padded index + the file stem with unsafe characters as '_'."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", path.stem).strip("_")[:64]
    return check_key(f"{index:08d}_{stem}" if stem else f"{index:08d}")


def encode_image(path: Path, resize: int = 0) -> tuple[bytes, str]:
    """Return (bytes, ext) of an image file: as-is, or with the short side resized to `resize`
    pixels (bicubic) and re-encoded as RGB JPEG quality 90."""
    ext = _SUFFIX_EXT.get(path.suffix.lower())
    if not resize:
        if ext is None:
            raise ValueError(f"{path}: not a .jpg/.jpeg/.png/.webp image (use --resize to convert)")
        return path.read_bytes(), ext
    with Image.open(path) as im:
        im = im.convert("RGB")
        scale = resize / min(im.size)
        size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
        if size != im.size:
            im = im.resize(size, Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=90)
    return buf.getvalue(), "jpg"


def parse_label_columns(spec: str) -> dict[str, str]:
    """Parse 'col=head,col2=head2' into {col: head}."""
    pairs = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        col, sep, head = item.partition("=")
        if not sep or not col.strip() or not head.strip():
            raise ValueError(f"label column {item!r}: expected column=head")
        pairs[col.strip()] = head.strip()
    return pairs


def _row_meta(row: dict, image_column: str, label_columns: dict[str, str], sep: str) -> dict:
    """Metadata of one CSV row: other columns as strings, plus `labels` {head: [paths]} where
    the cell is non-empty (an empty cell leaves that head unannotated)."""
    meta = {k: v for k, v in row.items() if k not in label_columns and k != image_column and k}
    labels = {}
    for col, head in label_columns.items():
        cell = (row.get(col) or "").strip()
        paths = [p.strip() for p in cell.split(sep) if p.strip()] if cell else []
        if paths:
            labels[head] = paths
    meta["labels"] = labels
    return meta


def _label_schema(metas: Iterable[dict], heads: Iterable[str]) -> dict:
    seen: dict[str, set[str]] = {h: set() for h in heads}
    for meta in metas:
        for head, paths in meta.get("labels", {}).items():
            seen.setdefault(head, set()).update(paths)
    return {"heads": {h: sorted(v) for h, v in sorted(seen.items())}}


def make_shards_from_csv(
    csv_path: str | Path,
    images_root: str | Path,
    out_dir: str | Path,
    *,
    image_column: str = "image",
    label_columns: dict[str, str] | None = None,
    label_sep: str = "|",
    resize: int = 0,
    seed: int = 0,
    name: str = "shard",
    max_per_shard: int = 10000,
    max_shard_bytes: int = 256 * 2**20,
) -> dict:
    """Shard the images listed in a BenthicNet-style CSV; return the manifest.

    Rows are shuffled by `seed` before sharding (images are read lazily, one at a time). Keys are
    the CSV row index + file stem, so they do not depend on the seed. Label columns missing from
    the CSV header are skipped with a warning.
    """
    csv_path, root = Path(csv_path), Path(images_root)
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        rows = list(reader)
    if image_column not in header:
        raise ValueError(f"{csv_path}: no image column {image_column!r} (columns: {header})")
    label_columns = dict(label_columns or {})
    for col in [c for c in label_columns if c not in header]:
        warnings.warn(f"{csv_path}: label column {col!r} not in the CSV; skipped", stacklevel=2)
        del label_columns[col]
    items = []
    for i, row in enumerate(rows):
        where = f"{csv_path} row {i + 2}"
        path = _inside(root, row[image_column] or "", where)
        items.append((i, path, _row_meta(row, image_column, label_columns, label_sep)))
    random.Random(seed).shuffle(items)

    def samples() -> Iterator[ShardSample]:
        for i, path, meta in items:
            data, ext = encode_image(path, resize)
            yield ShardSample(_stem_key(i, path), data, ext, meta)

    source = {
        "kind": "csv",
        "csv": str(csv_path),
        "images_root": str(root),
        "image_column": image_column,
        "label_columns": label_columns,
        "label_sep": label_sep,
        "resize": resize,
        "seed": seed,
    }
    schema = _label_schema((m for _, _, m in items), label_columns.values())
    return write_shards(
        samples(),
        out_dir,
        name=name,
        max_per_shard=max_per_shard,
        max_shard_bytes=max_shard_bytes,
        label_schema=schema,
        source=source,
    )


def _folder_items(root: Path, head: str) -> list[tuple[Path, dict]]:
    """(path, meta) of every image under `root/CLASS/...`, sorted; the label is the CLASS name."""
    items = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(class_dir.rglob("*")):
            if path.is_file() and path.suffix.lower() in _SUFFIX_EXT:
                rel = path.relative_to(root).as_posix()
                _inside(root, rel, str(root))
                items.append((path, {"path": rel, "labels": {head: [class_dir.name]}}))
    if not items:
        raise ValueError(f"{root}: no .jpg/.jpeg/.png/.webp images in any class sub-folder")
    return items


def make_shards_from_folder(
    root: str | Path,
    out_dir: str | Path,
    *,
    head: str = "label",
    resize: int = 0,
    seed: int = 0,
    name: str = "shard",
    max_per_shard: int = 10000,
    max_shard_bytes: int = 256 * 2**20,
) -> dict:
    """Shard a folder tree with one class per sub-folder (label = sub-folder name under
    `labels[head]`); images are shuffled by `seed`; return the manifest."""
    root = Path(root)
    items = list(enumerate(_folder_items(root, head)))
    random.Random(seed).shuffle(items)

    def samples() -> Iterator[ShardSample]:
        for i, (path, meta) in items:
            data, ext = encode_image(path, resize)
            yield ShardSample(_stem_key(i, path), data, ext, meta)

    source = {"kind": "folder", "root": str(root), "head": head, "resize": resize, "seed": seed}
    schema = _label_schema((m for _, (_, m) in items), [head])
    return write_shards(
        samples(),
        out_dir,
        name=name,
        max_per_shard=max_per_shard,
        max_shard_bytes=max_shard_bytes,
        label_schema=schema,
        source=source,
    )


# --- verifying --------------------------------------------------------------------------------


@dataclass
class VerifyReport:
    """What `verify_shards` checked, and every fault it found (each naming folder, shard, key)."""

    folders: list[str] = field(default_factory=list)
    num_shards: int = 0
    num_samples: int = 0
    faults: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.faults and bool(self.folders)


def decode_check(data: bytes) -> None:
    """Raise if `data` is not a fully decodable image (truncation and PIL warnings are errors)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with Image.open(io.BytesIO(data)) as im:
            im.load()


def _check_members(tar_path: Path, report: VerifyReport) -> int:
    """Check that every member is KEY.EXT with a decodable image and a JSON object; count samples."""
    groups: dict[str, dict[str, bytes]] = {}
    with tarfile.open(tar_path, "r:") as tar:  # read only, never extracted
        for info in tar:
            stem, dot, ext = info.name.partition(".")
            if not info.isreg() or not dot or not _SAFE.fullmatch(stem):
                report.faults.append(f"{tar_path}: unexpected member {info.name!r}")
                continue
            groups.setdefault(stem, {})[ext] = tar.extractfile(info).read()
    for key, parts in groups.items():
        images = [e for e in parts if e in IMAGE_EXTS]
        if len(images) != 1 or "json" not in parts or len(parts) != 2:
            report.faults.append(f"{tar_path}: sample {key!r} has members {sorted(parts)}")
            continue
        try:
            decode_check(parts[images[0]])
        except Exception as exc:
            report.faults.append(f"{tar_path}: sample {key!r} image does not decode: {exc}")
        try:
            if not isinstance(json.loads(parts["json"]), dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            report.faults.append(f"{tar_path}: sample {key!r} json is invalid: {exc}")
    return len(groups)


def _verify_folder(folder: Path, report: VerifyReport) -> None:
    report.folders.append(str(folder))
    try:
        manifest = load_manifest(folder)
    except (OSError, ValueError) as exc:
        report.faults.append(f"{folder}: {exc}")
        return
    total = 0
    for entry in manifest["shards"]:
        path = folder / entry["file"]
        report.num_shards += 1
        if not path.is_file():
            report.faults.append(f"{path}: missing")
            continue
        if (size := path.stat().st_size) != entry["bytes"]:
            report.faults.append(f"{path}: {size} bytes, manifest says {entry['bytes']}")
        if sha256_file(path) != entry["sha256"]:
            report.faults.append(f"{path}: sha256 differs from the manifest")
        try:
            count = _check_members(path, report)
        except (tarfile.TarError, OSError) as exc:
            report.faults.append(f"{path}: unreadable tar: {exc}")
            continue
        if count != entry["num_samples"]:
            report.faults.append(f"{path}: {count} samples, manifest says {entry['num_samples']}")
        total += count
    if total != manifest["num_samples"]:
        report.faults.append(f"{folder}: {total} samples, manifest says {manifest['num_samples']}")
    report.num_samples += total


def verify_shards(path: str | Path) -> VerifyReport:
    """Check every shard under `path` (a manifest folder, or a folder of them): size and sha256
    against the manifest, every image decodes, every image has its JSON, counts match."""
    report = VerifyReport()
    folders = manifest_folders(path)
    if not folders:
        report.faults.append(f"{path}: no {MANIFEST} here or in any sub-folder")
    for folder in folders:
        _verify_folder(folder, report)
    return report


# --- command line -----------------------------------------------------------------------------


def cli_verify_shards(args: argparse.Namespace) -> int:
    """`ssl-benthic verify-shards DIR`: print a report; exit status 1 on any fault."""
    report = verify_shards(args.dir)
    for folder in report.folders:
        print(f"checked {folder}")
    print(f"{report.num_shards} shards, {report.num_samples} samples, {len(report.faults)} faults")
    for fault in report.faults:
        print(f"FAULT {fault}")
    print("OK" if report.ok else "FAILED")
    return 0 if report.ok else 1


def cli_make_shards(args: argparse.Namespace) -> int:
    """`ssl-benthic make-shards`: shard a CSV or a folder tree, then verify what was written."""
    common = {
        "resize": args.resize,
        "seed": args.seed,
        "name": args.name,
        "max_per_shard": args.max_per_shard,
        "max_shard_bytes": int(args.max_shard_mb * 2**20),
    }
    if args.csv:
        root = args.images_root or str(Path(args.csv).parent)
        manifest = make_shards_from_csv(
            args.csv,
            root,
            args.out,
            image_column=args.image_column,
            label_columns=parse_label_columns(args.label_columns),
            label_sep=args.label_sep,
            **common,
        )
    else:
        manifest = make_shards_from_folder(args.folder, args.out, head=args.head, **common)
    print(
        f"wrote {manifest['num_samples']} samples in {len(manifest['shards'])} shards to {args.out}"
    )
    return cli_verify_shards(argparse.Namespace(dir=args.out))
