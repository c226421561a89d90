"""Shard labels -> per-head hierarchies, targets and masks, and stratified training subsets.

Heads: every head labelled in the training split (`training_heads`: a head labelled only in val/test
is left out with a warning, one the config asks for is an error), each with its label scheme (see
`hml_finetune.hml.schemes`: CATAMI, a scheme file, or the data's own paths). A head's nodes are the label
paths used by any split given (train, val, test) plus all their ancestors, not the whole scheme: a
node no split uses has nothing to learn or score and would only add zeros to the "all nodes" macro
scores. Only label paths are read (no images, no statistics), so taking val/test paths into the node
list leaks nothing the model fits; labels of val/test never seen in training are named in a warning
(`unseen_labels`).

A flat multi-label head (`heads.flat`, e.g. colour: ["red"]) is a depth-1 hierarchy (root
"[COLOUR]", nodes "[COLOUR] > red"), so the HML loss reduces to masked BCE on its classes; a
single-label head (`heads.single`) is encoded as one class index per sample (`IGNORE_INDEX` where
unannotated).
"""

from __future__ import annotations

import difflib
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hml_finetune.hml.hierarchy import Hierarchy
from hml_finetune.hml.schemes import Scheme, load_scheme
from ssl_benthic.core.catami import HEADS, SEP, bracketed_head, label_depth
from ssl_benthic.core.errors import ConfigError, LabelError
from ssl_benthic.data.shards.reader import iter_samples

if TYPE_CHECKING:
    from hml_finetune.finetune.config import HeadsConfig

__all__ = [
    "IGNORE_INDEX",
    "LabelledSplit",
    "read_split",
    "check_split",
    "default_schemes",
    "has_labels",
    "require_labels",
    "labelled_heads",
    "training_heads",
    "unseen_labels",
    "warn_unseen",
    "head_labels",
    "build_hierarchies",
    "encode_split",
    "encode_head",
    "negative_heads",
    "warn_no_negatives",
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
    """Sample keys and their `labels` dicts (head -> list of CATAMI paths), in shard order, and
    per sample the heads it is a known negative of (`negative_heads`, see `encode_head`; empty
    lists when `negatives` is not given)."""

    keys: list[str]
    labels: list[dict[str, list[str]]]
    source: str = ""
    negatives: list[list[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.negatives:
            self.negatives = [[] for _ in self.keys]

    def __len__(self) -> int:
        return len(self.keys)

    def subset(self, index: Sequence[int]) -> LabelledSplit:
        pick = [self.keys[i] for i in index], [self.labels[i] for i in index]
        return LabelledSplit(*pick, self.source, [self.negatives[i] for i in index])


def read_split(shards: str | Path) -> LabelledSplit:
    """Keys and labels of every sample of a labelled shard folder (images are not decoded).

    Only `labels` and `negative_heads` are read; `true_labels` (the sample generator's ground
    truth) never is.
    """
    keys, labels, negatives = [], [], []
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
        negatives.append(negative_heads(meta, key, shards))
    return LabelledSplit(keys, labels, str(shards), negatives)


def negative_heads(meta: dict[str, Any], key: str, where: Any = "") -> list[str]:
    """The heads a sample is a known negative of: its metadata's `negative_heads` (make-shards
    writes them for point exports, one label per point), [] when absent."""
    value = meta.get("negative_heads") or []
    if not isinstance(value, list) or not all(isinstance(h, str) for h in value):
        raise LabelError(f"{where}: sample {key!r}: 'negative_heads' must be a list of head names")
    return value


def check_split(split: LabelledSplit, schemes: Mapping[str, Scheme]) -> None:
    """Every label of a head in `schemes` is in that head's scheme and filed under its own head;
    an error names the sample, the head, the label and the scheme's nearest path."""
    for key, labels in zip(split.keys, split.labels, strict=True):
        for head, paths in labels.items():
            if head in schemes:
                for path in paths:
                    schemes[head].check(path, key, split.source)


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
    """The HML heads to train: `names`, or (None) every head labelled in `train` that is not a
    flat or single-label head (CATAMI heads first, in their order, then the others sorted); a head
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
    extra = set(flat) | set(single)
    for head in sorted(labelled_heads(others) - trained - extra, key=_head_order):
        warnings.warn(
            f"head {head!r} has labels in val/test only, none in {where}: left out "
            "(it would train on nothing)",
            stacklevel=2,
        )
    return sorted(trained - extra, key=_head_order)


def _head_order(head: str) -> tuple[int, str]:
    """CATAMI heads in their order, then any other head by name."""
    return (HEADS.index(head), "") if head in HEADS else (len(HEADS), head)


def _positive_labels(
    split: LabelledSplit,
    hierarchies: dict[str, Hierarchy],
    singles: dict[str, list[str]],
    schemes: Mapping[str, Scheme],
) -> dict[str, set[str]]:
    """Per head, the evaluated nodes (not roots) or classes with a known positive in `split`."""
    out = {}
    for head, (y, m) in encode_split(split, hierarchies, schemes).items():
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
    schemes: Mapping[str, Scheme],
) -> dict[str, list[str]]:
    """Per head, the labels (nodes or classes, sorted) positive in `other` but never in `train`:
    the model never saw them, so they are no "rare" nodes (see `head_metrics.rare_recall`)."""
    seen = _positive_labels(train, hierarchies, singles, schemes)
    found = _positive_labels(other, hierarchies, singles, schemes)
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


def head_labels(labels: dict[str, list[str]], head: str, scheme: Scheme) -> list[str]:
    """A sample's labels of `head` as hierarchy nodes (`[HEAD] > ...`, see `Scheme.node`)."""
    return [scheme.node(label) for label in labels.get(head) or []]


def default_schemes(
    heads: Iterable[str], flat: Sequence[str] = (), splits: Sequence[LabelledSplit] = ()
) -> dict[str, Scheme]:
    """The schemes heads have without configuration: `catami` for the CATAMI heads, `data` for
    any other, and flat class names for the `flat` heads."""
    from hml_finetune.finetune.config import HeadsConfig

    names = sorted(set(heads) - set(flat), key=_head_order)
    return resolve_schemes(names, HeadsConfig(flat=tuple(flat)), splits)


def build_hierarchies(
    splits: Iterable[LabelledSplit],
    schemes: Mapping[str, Scheme] | None = None,
    flat: Sequence[str] = (),
) -> dict[str, Hierarchy]:
    """One hierarchy per head of `schemes` (None: `default_schemes` of every labelled head), in
    that order, after checking every label against its scheme; nodes = the labels used in any
    split and their ancestors, sorted (a prefix sorts before its children). Not the whole scheme:
    a node no split uses has nothing to learn or score.
    """
    splits = list(splits)
    if schemes is None:
        schemes = default_schemes(labelled_heads(splits), flat, splits)
    used: dict[str, set[str]] = defaultdict(set)
    for split in splits:
        check_split(split, schemes)
        for labels in split.labels:
            for head, scheme in schemes.items():
                used[head].update(head_labels(labels, head, scheme))
    out = {}
    for head in schemes:
        if not used.get(head):
            raise LabelError(f"head {head!r} has no labels in the data")
        out[head] = Hierarchy.from_paths(sorted(used[head]), sep=SEP)
    return out


def encode_split(
    split: LabelledSplit,
    hierarchies: dict[str, Hierarchy],
    schemes: Mapping[str, Scheme] | None = None,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per head (targets, mask), each (N, K) float32; an absent or empty head gives an all-zero mask.

    A label outside the head's hierarchy raises naming the label and the sample key. `schemes`
    None: `default_schemes` of the hierarchies' heads.
    """
    schemes = default_schemes(hierarchies) if schemes is None else schemes
    out = {}
    for head, hierarchy in hierarchies.items():
        try:
            out[head] = encode_head(
                hierarchy, head, schemes[head], split.labels, split.keys, split.negatives
            )
        except ValueError as exc:
            raise LabelError(f"{split.source or 'labels'} (head {head!r}): {exc}") from None
    return out


def encode_head(
    h: Hierarchy,
    head: str,
    scheme: Scheme,
    labels: Sequence[dict[str, list[str]]],
    keys: Sequence[str],
    negatives: Sequence[Sequence[str]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """(targets, mask) (N, K) of one head: `Hierarchy.encode_many` of the samples' labels, and a
    sample with no label of `head` that is a known negative of it (`negatives`) gets every node
    known negative (y = 0, m = 1): one label per point, so a point labelled in another head is
    none of this head's nodes, and the head learns when it does not apply."""
    y, m = h.encode_many([head_labels(lab, head, scheme) for lab in labels], keys)
    rows = [b for b, neg in enumerate(negatives) if head in neg and not labels[b].get(head)]
    if rows:
        m[rows] = 1.0
    return y, m


def _labelled(y: torch.Tensor, h: Hierarchy) -> torch.Tensor:
    """(N,) bool: the samples with a label in the head (a positive root)."""
    return (y[:, [h.index[r] for r in h.roots]] > 0.5).any(1)


def warn_no_negatives(
    targets: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    hierarchies: Mapping[str, Hierarchy],
    where: str,
    show: int = 5,
) -> None:
    """One warning per head naming its nodes (roots aside) with no known negative in `where`:
    learned from positives only, their probability is high on any input. A node every labelled
    sample of the head passes through (`[SUBSTRATE] > Substrate`) is the head itself and is named
    only when the head never shares a sample with another head: one label per sample (a point
    export), so the others' samples are where it does not apply, and nothing says so."""
    labelled = {head: _labelled(y, hierarchies[head]) for head, (y, _) in targets.items()}
    for head, (y, m) in targets.items():
        h, mine = hierarchies[head], labelled[head]
        others = [v for k, v in labelled.items() if k != head]
        other = torch.stack(others).any(0) if others else torch.zeros_like(mine)
        disjoint = bool(other.any()) and not bool((mine & other).any())
        has_neg = ((y < 0.5) & (m != 0)).any(0).tolist()
        everywhere = (y[mine] > 0.5).all(0).tolist() if bool(mine.any()) else [False] * len(h)
        nodes = [
            n
            for j, n in enumerate(h.nodes)
            if n not in h.roots and not has_neg[j] and (disjoint or not everywhere[j])
        ]
        if nodes:
            listed = ", ".join(repr(n) for n in nodes[:show])
            more = f" (+{len(nodes) - show} more)" if len(nodes) > show else ""
            warnings.warn(
                f"head {head!r}: {len(nodes)} node(s) with no known negative in {where}: "
                f"{listed}{more}; learned from positives only, their probability is high on "
                "every input (for a point export, make the shards again so that points of other "
                "heads are its negatives)",
                stacklevel=2,
            )


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
    return tuple((h, max(label_depth(p) for p in labels[h])) for h in sorted(labels) if labels[h])


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


def _first_label(splits: Iterable[Any], head: str) -> str | None:
    for split in splits:
        for labels in split.labels:
            if labels.get(head):
                return labels[head][0]
    return None


def resolve_schemes(
    names: Sequence[str], hc: HeadsConfig, splits: Sequence[Any] = ()
) -> dict[str, Scheme]:
    """The scheme of every HML head (`names`, then the flat heads): `heads.schemes` or the default
    (`catami` for the four CATAMI heads, `data` otherwise); a `heads.scheme_sha256` pin that the
    file no longer matches, or a scheme for a head that is not trained, is a ConfigError."""
    unknown = sorted(set(hc.schemes) - set(names) - set(hc.flat))
    if unknown:
        near = difflib.get_close_matches(unknown[0], list(names), n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ConfigError(
            f"heads.schemes names head {unknown[0]!r}{hint}, which is not trained "
            f"(heads: {', '.join(names)})"
        )
    out = {}
    for head in names:
        spec = hc.schemes.get(head, "catami" if head in HEADS else "data")
        scheme = load_scheme(head, spec, hc.separators.get(head, SEP))
        if spec == "data":  # written back out as the data writes its labels
            first = _first_label(splits, head)
            scheme = replace(scheme, bracketed=first is not None and bracketed_head(first) == head)
        pin = hc.scheme_sha256.get(head)
        if pin is not None and pin != scheme.sha256:
            raise ConfigError(
                f"heads.scheme_sha256.{head}: the scheme file {spec} has changed since this "
                f"config was written (sha256 {scheme.sha256}, config pins {pin})"
            )
        out[head] = scheme
    for head in hc.flat:
        out[head] = load_scheme(head, "data", flat=True)
    return out
