"""Train/val/test splits that do not leak: whole groups (images, dives, sites) go to one split.

Patches of one photograph, and photographs of one transect, are near-duplicates: a random split puts
them on both sides and overstates accuracy. `assign_groups` places every group in exactly one split:
groups largest first (equal sizes in a seeded order), each to the split furthest below its target
(fraction x all samples; ties to the split listed first). Then, for each label (sorted) that occurs
outside train but not in train, the smallest group holding it moves to train when that keeps both
splits within one largest group of their targets and leaves its split another group. Every split ends within one largest group of its
target: a split can only pass its target by part of its last group, and one left short by more than
a group would have taken every group, since it stayed furthest below its target throughout.

A `partition` column (train / val / test) is honoured as given instead. `write_split_folders`
writes `OUT/{train,val,test}/` and a top-level manifest.json that indexes them.
"""

from __future__ import annotations

import json
import random
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ssl_benthic.core.errors import DataError, UserError
from ssl_benthic.data.shards.build import atomic_folder
from ssl_benthic.data.shards.format import MANIFEST

__all__ = [
    "PARTITION",
    "SplitPlan",
    "assign_groups",
    "parse_split",
    "plan_splits",
    "write_split_folders",
]

TRAIN = "train"
PARTITION = "partition"
PARTITIONS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def parse_split(spec: str) -> dict[str, float] | None:
    """'train=0.7,val=0.15,test=0.15' -> {split: fraction}, scaled to sum to 1; 'partition' -> None
    (the CSV's partition column decides)."""
    if spec.strip() == PARTITION:
        return None
    fractions: dict[str, float] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, sep, value = (t.strip() for t in item.partition("="))
        try:
            fraction = float(value) if sep else -1.0
        except ValueError:
            fraction = -1.0
        if not _NAME.fullmatch(name) or not fraction > 0 or name in fractions:
            raise UserError(
                f"--split {spec!r}: {item!r} is not name=fraction (a positive number, each name "
                "once, names from A-Z a-z 0-9 _ -), e.g. train=0.7,val=0.15,test=0.15"
            )
        fractions[name] = fraction
    if not fractions:
        raise UserError(f"--split {spec!r}: expected e.g. train=0.7,val=0.15,test=0.15")
    total = sum(fractions.values())
    return {name: f / total for name, f in fractions.items()}


def _greedy(sizes: Mapping[Hashable, int], targets: dict[str, float], seed: int) -> dict:
    """Largest group first (seeded order among equal sizes) to the split furthest below target."""
    order = sorted(sizes, key=repr)
    random.Random(seed).shuffle(order)
    order.sort(key=lambda g: -sizes[g])  # stable: equal sizes keep the seeded order
    counts = dict.fromkeys(targets, 0)
    assignment = {}
    for group in order:
        split = max(targets, key=lambda s: targets[s] - counts[s])  # first split on a tie
        assignment[group] = split
        counts[split] += sizes[group]
    return assignment


def _fill_train(
    assignment: dict,
    sizes: Mapping[Hashable, int],
    labels: Mapping[Hashable, Collection],
    targets: dict[str, float],
) -> None:
    """Move, per label missing from train (sorted), its smallest group to train when both splits
    stay within one largest group of their targets and its split keeps another group."""
    slack = max(sizes.values())
    counts, groups = Counter(), Counter(assignment.values())
    for group, split in assignment.items():
        counts[split] += sizes[group]
    in_train = {lab for g, s in assignment.items() if s == TRAIN for lab in labels.get(g, ())}
    outside = {lab for g, s in assignment.items() if s != TRAIN for lab in labels.get(g, ())}
    for label in sorted(outside - in_train, key=repr):
        if label in in_train:
            continue
        holders = sorted(
            (g for g, s in assignment.items() if s != TRAIN and label in labels.get(g, ())),
            key=lambda g: (sizes[g], repr(g)),
        )
        for group in holders:
            source, size = assignment[group], sizes[group]
            if (
                groups[source] > 1
                and counts[TRAIN] + size <= targets[TRAIN] + slack
                and counts[source] - size >= targets[source] - slack
            ):
                assignment[group] = TRAIN
                counts[TRAIN] += size
                counts[source] -= size
                groups[source] -= 1
                in_train.update(labels.get(group, ()))
                break


def assign_groups(
    sizes: Mapping[Hashable, int],
    fractions: Mapping[str, float],
    seed: int = 0,
    labels: Mapping[Hashable, Collection] | None = None,
) -> dict:
    """{group: split} with every group in one split (see the module docstring for the rule).

    `sizes` are samples per group, `fractions` sum to 1, `labels` the labels each group holds
    (used to bring labels into the `train` split when that costs little)."""
    if not sizes:
        return {}
    total = sum(sizes.values())
    targets = {s: f * total for s, f in fractions.items()}
    assignment = _greedy(sizes, targets, seed)
    if labels and TRAIN in targets and len(targets) > 1:
        _fill_train(assignment, sizes, labels, targets)
    return assignment


# --- planning a shard set's splits ----------------------------------------------------------


@dataclass
class SplitPlan:
    """Which split each sample goes to, and what the top-level manifest says about the split."""

    splits: list[str]
    names: list[str]
    info: dict = field(default_factory=dict)

    def parts(self, items: Sequence) -> dict[str, list]:
        """The items of each split, in the order the splits were named."""
        out: dict[str, list] = {name: [] for name in self.names}
        for item, split in zip(items, self.splits, strict=True):
            out[split].append(item)
        return out


def _labels(meta: dict) -> set[tuple[str, str]]:
    return {(h, p) for h, paths in (meta.get("labels") or {}).items() for p in paths}


def _partitions(metas: Sequence[dict], rows: Sequence[int | None], where: str) -> list[str]:
    """Each sample's split from its `partition` cell (train, val/valid/validation, test)."""
    out = []
    for meta, row in zip(metas, rows, strict=True):
        cell = str(meta.get(PARTITION) or "").strip()
        if cell.lower() not in PARTITIONS:
            at = f"{where} row {row}" if row else where
            raise DataError(
                f"{at}: partition {cell!r} is not train, val or test (fill every partition cell, "
                "or drop the column to split with --split FRACTIONS)"
            )
        out.append(PARTITIONS[cell.lower()])
    return out


def _groups(metas: Sequence[dict], rows: Sequence[int | None], group_by: str, where: str) -> list:
    """Each sample's group: its `group_by` metadata value; a missing or empty one names the row."""
    if not any(group_by in m for m in metas):
        columns = sorted({k for m in metas for k in m if k != "labels"})
        raise DataError(f"{where}: --group-by {group_by!r} is not a column (columns: {columns})")
    out = []
    for meta, row in zip(metas, rows, strict=True):
        value = meta.get(group_by)
        if value is None or not str(value).strip():
            at = f"{where} row {row}" if row else where
            raise DataError(f"{at}: empty --group-by {group_by!r} cell; every sample needs a group")
        out.append(str(value).strip())
    return out


def _missing_from_train(metas: Sequence[dict], splits: Sequence[str]) -> list[dict]:
    """Labels found in other splits but not in train: [{head, label, splits: {split: samples}}]."""
    where: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for meta, split in zip(metas, splits, strict=True):
        for label in _labels(meta):
            where[label][split] += 1
    return [
        {"head": head, "label": path, "splits": dict(sorted(counts.items()))}
        for (head, path), counts in sorted(where.items())
        if TRAIN not in counts
    ]


def _warn_missing(missing: list[dict], names: list[str]) -> None:
    if not missing or TRAIN not in names:
        return
    listed = "; ".join(
        f"{m['head']}: {m['label']!r} ("
        + ", ".join(f"{s} {n}" for s, n in m["splits"].items())
        + ")"
        for m in missing
    )
    warnings.warn(
        f"{len(missing)} labels occur in other splits but not in train: {listed}", stacklevel=3
    )


def _warn_shared_groups(groups: list, splits: list[str], group_by: str) -> int:
    """Warn about groups that a partition column puts in two splits (they leak); how many."""
    seen: dict[str, set[str]] = defaultdict(set)
    for group, split in zip(groups, splits, strict=True):
        seen[group].add(split)
    shared = sorted(g for g, s in seen.items() if len(s) > 1)
    if shared:
        first = ", ".join(repr(g) for g in shared[:5])
        more = f" (and {len(shared) - 5} more)" if len(shared) > 5 else ""
        warnings.warn(
            f"the partition column puts {len(shared)} {group_by} groups in two splits: "
            f"{first}{more}; their samples leak between splits",
            stacklevel=3,
        )
    return len(shared)


OFF_BY = 0.10  # a split further than this from its fraction is warned about


def _check_fractions(
    counts: Counter, fractions: Mapping[str, float], sizes: Counter, group_by: str, where: str
) -> None:
    """Refuse a split that got no sample; warn about one more than `OFF_BY` (10 points) off its
    fraction, as whole groups cannot be cut (one huge group, or a handful)."""
    total, largest = sum(counts.values()), max(sizes.values(), default=0)
    how = f"{total} samples in {len(sizes)} {group_by or 'sample'} groups, the largest of {largest}"
    for name in fractions:
        if not counts[name]:
            raise DataError(
                f"{where}: --split puts no sample in {name!r} ({how}): use fewer or larger "
                "splits, or a finer --group-by; nothing written"
            )
    for name, fraction in fractions.items():
        share = counts[name] / total
        if abs(share - fraction) > OFF_BY:
            warnings.warn(
                f"{where}: split {name!r} got {counts[name]} samples ({share:.0%}), more than "
                f"{OFF_BY:.0%} off its fraction {fraction:.0%} ({how}; groups are never cut)",
                stacklevel=3,
            )


def plan_splits(
    metas: Sequence[dict],
    rows: Sequence[int | None],
    fractions: dict[str, float] | None,
    *,
    group_by: str = "image",
    seed: int = 0,
    where: str = "",
) -> SplitPlan:
    """Each sample's split: by its `partition` cell when the metadata has that column (it wins over
    `fractions`; None asks for it), else whole `group_by` groups by `assign_groups`."""
    has_partition = any(PARTITION in m for m in metas)
    if fractions is None and not has_partition:
        raise DataError(f"{where}: --split partition, but there is no partition column")
    groups = _groups(metas, rows, group_by, where) if group_by else list(range(len(metas)))
    info: dict = {"group_by": group_by, "seed": seed}
    if has_partition:
        if fractions is not None:
            warnings.warn(
                f"{where}: split by its partition column; --split is ignored", stacklevel=2
            )
        splits = _partitions(metas, rows, where)
        names = [n for n in ("train", "val", "test") if n in splits]
        info.update(
            by=PARTITION, groups_in_two_splits=_warn_shared_groups(groups, splits, group_by)
        )
    else:
        sizes, labels = Counter(groups), defaultdict(set)
        for group, meta in zip(groups, metas, strict=True):
            labels[group] |= _labels(meta)
        assignment = assign_groups(sizes, fractions, seed, labels)
        splits = [assignment[g] for g in groups]
        names = list(fractions)
        info.update(by="fractions", fractions=fractions)
        _check_fractions(Counter(splits), fractions, sizes, group_by, where)
    split_groups = {
        n: len({g for g, s in zip(groups, splits, strict=True) if s == n}) for n in names
    }
    info["groups"] = split_groups
    info["missing_from_train"] = _missing_from_train(metas, splits)
    _warn_missing(info["missing_from_train"], names)
    return SplitPlan(splits, names, info)


# --- writing -----------------------------------------------------------------------------------


def write_split_folders(
    out_dir: str | Path,
    parts: dict[str, list],
    write_one: Callable[[list, Path, str], dict],
    top: Callable[[], dict],
    *,
    overwrite: bool = False,
) -> dict:
    """Write each non-empty split with `write_one(items, folder, name)` into `out_dir/name/` and a
    top-level manifest.json indexing them (`splits`: dir, num_samples, num_shards, bytes), plus
    `top()`'s entries; the whole set appears at once (`atomic_folder`). Returns that manifest."""
    with atomic_folder(out_dir, overwrite=overwrite) as tmp:
        splits = {}
        for name, items in parts.items():
            if not items:
                warnings.warn(
                    f"{out_dir}: split {name!r} got no samples; not written", stacklevel=2
                )
                continue
            manifest = write_one(items, tmp / name, name)
            splits[name] = {
                "dir": name,
                "num_samples": manifest["num_samples"],
                "num_shards": len(manifest["shards"]),
                "bytes": sum(s["bytes"] for s in manifest["shards"]),
            }
        index = {
            **top(),
            "num_samples": sum(s["num_samples"] for s in splits.values()),
            "splits": splits,
        }
        text = json.dumps(index, indent=2, sort_keys=True) + "\n"
        (tmp / MANIFEST).write_text(text, encoding="utf-8")
    return index
