"""Shard labels -> per-head CATAMI hierarchies, targets and masks, and stratified training subsets.

Hierarchy choice: one hierarchy per CATAMI head (biota, substrate, relief, bedforms) labelled in the
training split (`training_heads`: a head labelled only in val/test is left out with a warning, one
the config asks for is an error), whose nodes are the CATAMI paths used by any labelled split given
(train, val, test) plus all their ancestors. Not the whole scheme (311 paths): a node no split uses
has nothing to learn or score and would only add zeros to the "all nodes" macro scores. Only label
paths are read (no images, no statistics), so taking val/test paths into the node list leaks nothing
the model fits; a test split with a path outside the hierarchy fails naming the path and the sample,
and labels of val/test never seen in training are named in a warning (`unseen_labels`).

Two kinds of extra head (config `heads.flat` / `heads.single`) carry plain class names instead of
CATAMI paths: a flat multi-label head becomes a depth-1 hierarchy (root "[COLOUR]", nodes
"[COLOUR] > red"), so the HML loss reduces to masked BCE on its classes; a single-label head is
encoded as one class index per sample (`IGNORE_INDEX` where unannotated).
"""

from __future__ import annotations

import difflib
import warnings
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hml_finetune.hierarchy import Hierarchy
from ssl_benthic.catami import HEADS, SEP, catami_nodes, depth_of, head_of
from ssl_benthic.data.reader import iter_samples
from ssl_benthic.errors import LabelError

__all__ = [
    "IGNORE_INDEX",
    "LabelledSplit",
    "read_split",
    "check_labels",
    "has_labels",
    "require_labels",
    "labelled_heads",
    "training_heads",
    "unseen_labels",
    "warn_unseen",
    "flat_root",
    "head_labels",
    "build_hierarchies",
    "encode_split",
    "single_classes",
    "encode_single",
    "encode_singles",
    "hierarchy_to_dict",
    "hierarchy_from_dict",
    "strata",
    "stratified_subset",
]


IGNORE_INDEX = -100  # class index of a sample whose single-label head is unannotated


@dataclass
class LabelledSplit:
    """Sample keys and their `labels` dicts (head -> list of CATAMI paths), in shard order."""

    keys: list[str]
    labels: list[dict[str, list[str]]]
    source: str = ""

    def __len__(self) -> int:
        return len(self.keys)

    def subset(self, index: Sequence[int]) -> LabelledSplit:
        return LabelledSplit(
            [self.keys[i] for i in index], [self.labels[i] for i in index], self.source
        )


def read_split(shards: str | Path) -> LabelledSplit:
    """Keys and labels of every sample of a labelled shard folder (images are not decoded).

    Only `labels` is read; `true_labels` (the sample generator's ground truth) never is.
    """
    keys, labels = [], []
    for key, _, meta in iter_samples(shards, decode=False):
        raw = meta.get("labels") or {}
        if not isinstance(raw, dict):
            raise LabelError(f"{shards}: sample {key!r} has 'labels' that is not a mapping")
        for head, value in raw.items():
            if value is not None and not isinstance(value, list):
                raise LabelError(
                    f"{shards}: sample {key!r}: labels of head {head!r} must be a list, "
                    f"got {value!r}"
                )
        keys.append(key)
        labels.append({str(h): list(v or []) for h, v in raw.items()})
    return LabelledSplit(keys, labels, str(shards))


def check_labels(split: LabelledSplit, extra: Collection[str] = ()) -> None:
    """Every path is a CATAMI node and sits under the head it is filed under; errors name the sample.

    Heads in `extra` (the flat and single-label heads) hold plain class names: not checked here.
    """
    valid = catami_nodes()
    for key, labels in zip(split.keys, split.labels, strict=True):
        for head, paths in labels.items():
            if head in extra:
                continue
            for path in paths:
                if path not in valid:
                    near = difflib.get_close_matches(path, sorted(valid), n=1, cutoff=0.8)
                    hint = f" (did you mean {near[0]!r}?)" if near else ""
                    if head not in HEADS:
                        hint += (
                            f"; {head!r} is not a CATAMI head: list it in heads.flat "
                            "or heads.single"
                        )
                    raise LabelError(
                        f"{split.source}: sample {key!r}: label path {path!r} (head {head!r}) "
                        f"is not in the CATAMI scheme{hint}"
                    )
                if head_of(path) != head:
                    raise LabelError(
                        f"{split.source}: sample {key!r}: label path {path!r} is filed under "
                        f"head {head!r} but belongs to {head_of(path)!r}"
                    )


def has_labels(labels: dict[str, list[str]]) -> bool:
    """Whether a sample's `labels` dict holds at least one label (empty lists do not count)."""
    return any(labels.values())


def require_labels(split: LabelledSplit, what: str) -> None:
    """A split without a single label is a LabelError naming it (`what`: its config key and path):
    training on it learns nothing, scoring it measures nothing."""
    if not any(has_labels(lab) for lab in split.labels):
        raise LabelError(
            f"{what}: none of its {len(split)} samples has labels (no 'labels' in their JSON, or "
            "only empty lists): it needs a labelled shard folder"
        )


def labelled_heads(splits: Iterable[LabelledSplit]) -> set[str]:
    """The heads with at least one label in any of the splits."""
    return {h for split in splits for lab in split.labels for h, v in lab.items() if v}


def training_heads(
    train: LabelledSplit,
    others: Iterable[LabelledSplit],
    names: Sequence[str] | None,
    flat: Sequence[str],
    single: Sequence[str],
    where: str,
) -> list[str]:
    """The CATAMI heads to train: `names`, or (None) every CATAMI head labelled in `train`; a head
    labelled only in `others` (val/test) is left out with a warning, as it would train on nothing.

    A head the config asks for (heads.names, heads.flat, heads.single) without a label in `train`
    is a LabelError naming the head and `where` (the training split).
    """
    trained = labelled_heads([train])
    for key, heads in (("names", names or ()), ("flat", flat), ("single", single)):
        for head in heads:
            if head not in trained:
                raise LabelError(
                    f"head {head!r} (heads.{key}) has no labels in {where}, so it would train on "
                    f"nothing (heads labelled there: {', '.join(sorted(trained)) or 'none'}); "
                    f"label it there or drop it from heads.{key}"
                )
    if names is not None:
        return list(names)
    elsewhere = labelled_heads(others) - trained
    for head in (h for h in HEADS if h in elsewhere):
        warnings.warn(
            f"head {head!r} has labels in val/test only, none in {where}: left out "
            "(it would train on nothing)",
            stacklevel=2,
        )
    return [h for h in HEADS if h in trained]


def _positive_labels(
    split: LabelledSplit,
    hierarchies: dict[str, Hierarchy],
    singles: dict[str, list[str]],
    flat: Collection[str],
) -> dict[str, set[str]]:
    """Per head, the evaluated nodes (not roots) or classes with a known positive in `split`."""
    out = {}
    for head, (y, m) in encode_split(split, hierarchies, flat).items():
        h = hierarchies[head]
        pos = ((y > 0.5) & (m != 0)).any(0).tolist()
        out[head] = {n for n, p in zip(h.nodes, pos, strict=True) if p and n not in h.roots}
    for head in singles:
        out[head] = {str(v[0]) for lab in split.labels if (v := lab.get(head))}
    return out


def unseen_labels(
    train: LabelledSplit,
    other: LabelledSplit,
    hierarchies: dict[str, Hierarchy],
    singles: dict[str, list[str]],
    flat: Collection[str] = (),
) -> dict[str, list[str]]:
    """Per head, the labels (nodes or classes, sorted) positive in `other` but never in `train`:
    the model never saw them, so they are no "rare" nodes (see `head_metrics.rare_recall`)."""
    seen = _positive_labels(train, hierarchies, singles, flat)
    found = _positive_labels(other, hierarchies, singles, flat)
    return {h: sorted(found[h] - seen[h]) for h in found if found[h] - seen[h]}


def warn_unseen(unseen: dict[str, list[str]], name: str, source: str, show: int = 5) -> None:
    """One warning per head naming its labels of the `name` split never seen in training (the first
    `show`, then a count)."""
    for head, labels in unseen.items():
        listed = ", ".join(repr(n) for n in labels[:show])
        more = f" (+{len(labels) - show} more)" if len(labels) > show else ""
        noun = "label" if len(labels) == 1 else "labels"
        warnings.warn(
            f"head {head!r}: {len(labels)} {noun} in the {name} split {source} never seen in "
            f"training: {listed}{more}; scored, but not counted in rare_recall",
            stacklevel=2,
        )


def flat_root(head: str) -> str:
    """Root node of a flat head's depth-1 hierarchy: colour -> "[COLOUR]"."""
    return f"[{head.upper()}]"


def head_labels(labels: dict[str, list[str]], head: str, flat: Collection[str] = ()) -> list[str]:
    """A sample's label list for `head` as hierarchy node names (flat names get the head's root)."""
    paths = labels.get(head) or []
    return [f"{flat_root(head)}{SEP}{name}" for name in paths] if head in flat else list(paths)


def _check_flat(split: LabelledSplit, head: str) -> None:
    """Flat class names are non-empty strings without the path separator."""
    for key, labels in zip(split.keys, split.labels, strict=True):
        for name in labels.get(head) or []:
            if not isinstance(name, str) or not name.strip() or SEP in name:
                raise LabelError(
                    f"{split.source}: sample {key!r}: flat head {head!r} label {name!r} must be a "
                    f"plain class name (non-empty, no {SEP.strip()!r})"
                )


def build_hierarchies(
    splits: Iterable[LabelledSplit],
    heads: Sequence[str] | None = None,
    flat: Sequence[str] = (),
    skip: Collection[str] = (),
) -> dict[str, Hierarchy]:
    """One hierarchy per head in `heads` (None: every CATAMI head with a label in any split), CATAMI
    order, then one depth-1 hierarchy per `flat` head; nodes = the used paths and their ancestors,
    sorted (a prefix sorts before its children). Heads in `skip` (single-label) are not read."""
    splits = list(splits)
    used: dict[str, set[str]] = defaultdict(set)
    for split in splits:
        check_labels(split, extra=set(flat) | set(skip))
        for head in flat:
            _check_flat(split, head)
        for labels in split.labels:
            for head in labels:
                if head not in skip:
                    used[head].update(head_labels(labels, head, flat))
    wanted = [h for h in HEADS if used.get(h)] if heads is None else list(heads)
    out = {}
    for head in [*wanted, *flat]:
        if not used.get(head):
            raise LabelError(
                f"head {head!r} has no labels in the data (heads with labels: "
                f"{', '.join(h for h in HEADS if used.get(h)) or 'none'})"
            )
        out[head] = Hierarchy.from_paths(sorted(used[head]), sep=SEP)
    return out


def encode_split(
    split: LabelledSplit, hierarchies: dict[str, Hierarchy], flat: Collection[str] = ()
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per head (targets, mask), each (N, K) float32; an absent or empty head gives an all-zero mask.

    A path outside the head's hierarchy raises naming the path and the sample key.
    """
    out = {}
    for head, hierarchy in hierarchies.items():
        lists = [head_labels(labels, head, flat) for labels in split.labels]
        try:
            out[head] = hierarchy.encode_many(lists, split.keys)
        except ValueError as exc:
            raise LabelError(f"{split.source or 'labels'} (head {head!r}): {exc}") from None
    return out


def single_classes(splits: Iterable[LabelledSplit], heads: Sequence[str]) -> dict[str, list[str]]:
    """Sorted class names per single-label head, from every split; at most one label per sample
    (errors name the sample) and at least two classes per head."""
    used: dict[str, set[str]] = {h: set() for h in heads}
    for split in splits:
        for key, labels in zip(split.keys, split.labels, strict=True):
            for head in heads:
                names = labels.get(head) or []
                if len(names) > 1:
                    raise LabelError(
                        f"{split.source}: sample {key!r}: single-label head {head!r} has "
                        f"{len(names)} labels {names}; it takes one class per image"
                    )
                used[head].update(str(n) for n in names)
    for head, classes in used.items():
        if len(classes) < 2:
            raise LabelError(
                f"single-label head {head!r} has {len(classes)} class(es) in the data "
                f"{sorted(classes)}; it needs at least two"
            )
    return {h: sorted(c) for h, c in used.items()}


def encode_single(
    label_lists: Sequence[Sequence[str]],
    classes: Sequence[str],
    keys: Sequence[str],
    head: str = "",
) -> torch.Tensor:
    """Class index per sample (N,) int64, `IGNORE_INDEX` where the list is empty; more than one
    label or an unknown class raises naming the sample key."""
    index = {c: i for i, c in enumerate(classes)}
    out = torch.full((len(label_lists),), IGNORE_INDEX, dtype=torch.long)
    for b, (names, key) in enumerate(zip(label_lists, keys, strict=True)):
        if len(names) > 1:
            raise LabelError(
                f"sample {key!r}: single-label head {head!r} has {len(names)} labels "
                f"{list(names)}; it takes one class per image"
            )
        if names:
            if names[0] not in index:
                raise LabelError(
                    f"sample {key!r}: unknown class {names[0]!r} of single-label head {head!r} "
                    f"(known: {', '.join(classes)})"
                )
            out[b] = index[names[0]]
    return out


def encode_singles(split: LabelledSplit, singles: dict[str, list[str]]) -> dict[str, torch.Tensor]:
    """`encode_single` for every single-label head of a split; errors also name the split."""
    out = {}
    for head, classes in singles.items():
        lists = [labels.get(head) or [] for labels in split.labels]
        try:
            out[head] = encode_single(lists, classes, split.keys, head)
        except ValueError as exc:
            raise LabelError(f"{split.source or 'labels'}: {exc}") from None
    return out


def hierarchy_to_dict(hierarchy: Hierarchy) -> dict[str, list]:
    """Plain lists (for checkpoints): nodes in order and [parent, child] edges."""
    edges = [[p, c] for p in hierarchy.nodes for c in hierarchy.children[p]]
    return {"nodes": list(hierarchy.nodes), "edges": edges}


def hierarchy_from_dict(data: dict[str, list]) -> Hierarchy:
    return Hierarchy(data["nodes"], [tuple(e) for e in data["edges"]])


# ----------------------------------------------------------------------------- subsets
def _fine_key(labels: dict[str, list[str]]) -> tuple:
    """(head, deepest depth) for each annotated head."""
    return tuple((h, max(depth_of(p) for p in labels[h])) for h in sorted(labels) if labels[h])


def _coarse_key(labels: dict[str, list[str]]) -> tuple:
    return tuple(h for h in sorted(labels) if labels[h])


def strata(split: LabelledSplit, fraction: float) -> list[tuple]:
    """Stratum of each sample: its (head, depth) pairs; where such a stratum is too small to
    contribute one sample at `fraction`, the set of annotated heads; failing that, one pool."""
    fine = [_fine_key(lab) for lab in split.labels]
    coarse = [_coarse_key(lab) for lab in split.labels]
    count = defaultdict(int)
    for k in fine:
        count[k] += 1
    keys: list[tuple] = [
        ("fine", f) if count[f] * fraction >= 1 else ("coarse", c)
        for f, c in zip(fine, coarse, strict=True)
    ]
    count = defaultdict(int)
    for k in keys:
        count[k] += 1
    return [k if k[0] == "fine" or count[k] * fraction >= 1 else ("pool",) for k in keys]


def stratified_subset(split: LabelledSplit, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a seeded subset of round(fraction * N) samples (at least 1), drawn per
    stratum (see `strata`) in proportion; leftover places go to the largest remainders."""
    n = len(split)
    if fraction >= 1.0:
        return np.arange(n)
    if not 0.0 < fraction < 1.0 or n == 0:
        raise ValueError(f"train_fraction {fraction} must be in (0, 1] with a non-empty split")
    rng = np.random.default_rng([seed, 7919])
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, key in enumerate(strata(split, fraction)):
        groups[key].append(i)
    names = sorted(groups, key=repr)
    exact = np.array([len(groups[k]) * fraction for k in names])
    quota = np.floor(exact).astype(int)
    left = max(1, round(n * fraction)) - quota.sum()
    if left > 0:  # largest remainder; ties broken by the seeded generator
        order = np.lexsort((rng.random(len(names)), -(exact - quota)))
        quota[order[:left]] += 1
    chosen = []
    for name, q in zip(names, quota, strict=True):
        members = np.array(groups[name])
        chosen.extend(members[rng.permutation(len(members))[:q]].tolist())
    return np.sort(np.array(chosen, dtype=np.int64))
