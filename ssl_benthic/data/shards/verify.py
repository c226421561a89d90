"""Verifying shard folders: every shard's size and sha256 against its manifest, every image decodes
and has its JSON, counts match, no tar the manifest does not list, and across split folders no image
twice. `ssl-benthic verify-shards`; `make-shards` verifies what it wrote.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from ssl_benthic.core.paths import sha256_file
from ssl_benthic.data.images import open_full
from ssl_benthic.data.shards.format import IMAGE_EXTS, MANIFEST, SAFE_KEY
from ssl_benthic.data.shards.manifest import load_manifest, manifest_folders
from ssl_benthic.data.shards.parallel import ordered_map

__all__ = ["VerifyReport", "decode_check", "verify_shards", "cli_verify_shards"]


@dataclass
class VerifyReport:
    """What `verify_shards` checked, and every fault it found (each naming folder, shard, key)."""

    folders: list[str] = field(default_factory=list)
    num_shards: int = 0
    num_samples: int = 0
    faults: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    images: dict[bytes, list[tuple[str, str]]] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return not self.faults and bool(self.folders)


def decode_check(data: bytes) -> None:
    """Raise if `data` is not a fully decodable image (truncation and PIL warnings are errors)."""
    open_full(data)


def _check_members(tar_path: Path, report: VerifyReport, split: str) -> int:
    """Check that every member is KEY.EXT with a decodable image and a JSON object; count samples.
    Each image's sha256 is noted under (split, key) for `_warn_shared_images`."""
    groups: dict[str, dict[str, bytes]] = {}
    with tarfile.open(tar_path, "r:") as tar:  # read only, never extracted
        for info in tar:
            stem, dot, ext = info.name.partition(".")
            if not info.isreg() or not dot or not SAFE_KEY.fullmatch(stem):
                report.faults.append(f"{tar_path}: unexpected member {info.name!r}")
                continue
            groups.setdefault(stem, {})[ext] = tar.extractfile(info).read()
    for key, parts in groups.items():
        images = [e for e in parts if e in IMAGE_EXTS]
        if len(images) != 1 or "json" not in parts or len(parts) != 2:
            report.faults.append(f"{tar_path}: sample {key!r} has members {sorted(parts)}")
            continue
        digest = hashlib.sha256(parts[images[0]]).digest()
        report.images.setdefault(digest, []).append((split, key))
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


def _verify_shard(path: Path, entry: dict, report: VerifyReport, split: str) -> int:
    """Check one listed shard (present, size, sha256, members, count); its sample count."""
    report.num_shards += 1
    if not path.is_file():
        report.faults.append(f"{path}: missing")
        return 0
    if (size := path.stat().st_size) != entry["bytes"]:
        report.faults.append(f"{path}: {size} bytes, manifest says {entry['bytes']}")
    if sha256_file(path) != entry["sha256"]:
        report.faults.append(f"{path}: sha256 differs from the manifest")
    try:
        count = _check_members(path, report, split)
    except (tarfile.TarError, OSError) as exc:
        report.faults.append(f"{path}: unreadable tar: {exc}")
        return 0
    if count != entry["num_samples"]:
        report.faults.append(f"{path}: {count} samples, manifest says {entry['num_samples']}")
    return count


def _shard_report(job: tuple[Path, dict, str]) -> tuple[int, VerifyReport]:
    """(sample count, report) of one listed shard checked on its own; runs in a worker."""
    path, entry, split = job
    part = VerifyReport()
    return _verify_shard(path, entry, part, split), part


def _verify_folder(folder: Path, report: VerifyReport, split: str, workers: int = 1) -> None:
    """Check one shard folder against its manifest, including tars the manifest does not list;
    its shards in `workers` processes, their findings merged in shard order."""
    report.folders.append(str(folder))
    try:
        manifest = load_manifest(folder)
    except (OSError, ValueError) as exc:
        report.faults.append(f"{folder}: {exc}")
        return
    jobs = [(folder / entry["file"], entry, split) for entry in manifest["shards"]]
    total = 0
    for count, part in ordered_map(_shard_report, jobs, workers, chunksize=1):
        total += count
        report.num_shards += part.num_shards
        report.faults += part.faults
        for digest, places in part.images.items():
            report.images.setdefault(digest, []).extend(places)
    if total != manifest["num_samples"]:
        report.faults.append(f"{folder}: {total} samples, manifest says {manifest['num_samples']}")
    report.num_samples += total
    _check_unlisted(folder, {entry["file"] for entry in manifest["shards"]}, report)


def _check_unlisted(folder: Path, listed: set[str], report: VerifyReport) -> None:
    """A `.tar` beside the manifest that it does not list is a fault: a reader globbing the folder
    (or an earlier, larger run's leftover) would mix it in."""
    for path in sorted(folder.glob("*.tar")):
        if path.name not in listed:
            report.faults.append(f"{path}: not listed in {folder / MANIFEST}")


def _warn_shared_images(report: VerifyReport, show: int = 20) -> None:
    """Warn about images whose bytes (sha256) appear in two or more splits, naming their keys:
    a leak between train and evaluation. Repeats inside one split are not reported."""
    shared = []
    for places in report.images.values():
        if len({split for split, _ in places}) > 1:
            shared.append(sorted(places))
    shared.sort()
    for places in shared[:show]:
        names = sorted({split for split, _ in places})
        keys = ", ".join(f"{split}/{key}" for split, key in places)
        report.warnings.append(f"same image bytes in {' and '.join(names)}: {keys}")
    if len(shared) > show:
        report.warnings.append(f"... and {len(shared) - show} more images found in two splits")


def _split_name(folder: Path, root: Path) -> str:
    """A shard folder's name as a split of `root` (its path below it; the folder's name at it)."""
    rel = folder.relative_to(root).as_posix() if folder.is_relative_to(root) else str(folder)
    return folder.name if rel == "." else rel


def verify_shards(path: str | Path, workers: int = 1) -> VerifyReport:
    """Check every shard under `path` (a manifest folder, or a folder of them): size and sha256
    against the manifest, every image decodes, every image has its JSON, counts match; across the
    folders of a split set, warn about the same image bytes in two splits. `workers` processes
    check the shards (the report is the same whatever the number)."""
    report = VerifyReport()
    folders = manifest_folders(path)
    if not folders:
        report.faults.append(f"{path}: no {MANIFEST} here or in any sub-folder")
    for folder in folders:
        _verify_folder(folder, report, _split_name(folder, Path(path)), workers)
    _warn_shared_images(report)
    report.images.clear()
    return report


# --- command line -----------------------------------------------------------------------------


def cli_verify_shards(args: argparse.Namespace) -> int:
    """`ssl-benthic verify-shards DIR`: print a report; exit status 1 on any fault (warnings, such
    as an image in two splits, leave it 0); `--workers` processes check the shards."""
    report = verify_shards(args.dir, args.workers)
    for folder in report.folders:
        print(f"checked {folder}")
    print(f"{report.num_shards} shards, {report.num_samples} samples, {len(report.faults)} faults")
    for fault in report.faults:
        print(f"FAULT {fault}")
    for warning in report.warnings:
        print(f"WARNING {warning}")
    print("OK" if report.ok else "FAILED")
    return 0 if report.ok else 1
