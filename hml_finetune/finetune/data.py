"""The training data of a stage-2 run: the splits' labels read and encoded per head, the seeded
(stratified) training subset, and its loaders: the shard stream, or cached features.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import webdataset as wds

from hml_finetune.finetune.config import FinetuneConfig
from hml_finetune.finetune.labels import (
    IGNORE_INDEX,
    LabelledSplit,
    build_hierarchies,
    encode_singles,
    encode_split,
    read_split,
    require_labels,
    resolve_schemes,
    single_classes,
    stratified_subset,
    training_heads,
    unseen_labels,
    warn_no_negatives,
    warn_unseen,
)
from hml_finetune.hml.hierarchy import Hierarchy
from hml_finetune.hml.schemes import Scheme
from ssl_benthic.core.config import ConfigError
from ssl_benthic.core.seeding import SeededEpochs
from ssl_benthic.data.shards.reader import ShardLoader, collate, make_dataset

__all__ = [
    "Targets",
    "TrainData",
    "training_mask",
    "class_frequency",
    "shard_train_loader",
    "FeatureBatches",
    "FeatureBatches",
    "feature_loader",
    "align_split",
    "encode_train",
    "Prepared",
    "prepare_data",
]

Targets = dict[str, tuple[torch.Tensor, torch.Tensor]]


@dataclass
class TrainData:
    """The training subset: its labels, encoded targets/masks per HML head, cached features (or
    None), class indices (N,) per single-label head (`IGNORE_INDEX` = unannotated), and each HML
    head's scheme (how a label becomes a node, for batches encoded on the fly)."""

    split: LabelledSplit
    targets: Targets
    features: torch.Tensor | None = None
    full_size: int = 0
    single: dict[str, torch.Tensor] = field(default_factory=dict)
    schemes: dict[str, Scheme] = field(default_factory=dict)


def training_mask(mask: torch.Tensor, hierarchy: Hierarchy) -> torch.Tensor:
    """The mask with the root column(s) zeroed: roots are never evaluated, so never trained."""
    out = mask.clone()
    out[..., [hierarchy.index[r] for r in hierarchy.roots]] = 0.0
    return out


def class_frequency(y: torch.Tensor, n_classes: int) -> list[float]:
    """Share of each class among the annotated samples (NaN when none is annotated)."""
    known = y[y != IGNORE_INDEX]
    if not len(known):
        return [float("nan")] * n_classes
    return (torch.bincount(known, minlength=n_classes).double() / len(known)).tolist()


class _KeyFilter:
    """webdataset select stage keeping the samples whose key is in the training subset (picklable)."""

    def __init__(self, keys: frozenset[str]) -> None:
        self.keys = keys

    def __call__(self, sample: tuple[Any, dict]) -> bool:
        return sample[1]["__key__"] in self.keys


def shard_train_loader(
    cfg: FinetuneConfig, data: TrainData, transform: Any, rank: int, world: int
) -> SeededEpochs:
    """The training shard stream (subset selected by key), the same number of full batches per rank."""
    d = cfg.data
    steps = len(data.split) // (world * d.batch_size)
    if steps < 1:
        raise ConfigError(
            f"{len(data.split)} training samples are fewer than one batch of "
            f"{d.batch_size} x {world} ranks: lower data.batch_size"
        )
    ds = make_dataset(
        d.train,
        transform=transform,
        shuffle_buffer=d.shuffle_buffer if d.shuffle else 0,
        seed=cfg.trainer_seed,
        rank=rank,
        world_size=world,
    )
    if len(data.split) < data.full_size:
        ds = ds.compose(wds.select(_KeyFilter(frozenset(data.split.keys))))
    ds = ds.compose(wds.batched(d.batch_size, collation_fn=collate, partial=False))
    loader = ShardLoader(ds, steps, num_workers=d.num_workers, persistent_workers=False)
    return SeededEpochs(loader, cfg.trainer_seed, rank)


class FeatureBatches:
    """Cached-feature batches of one rank: each epoch a permutation seeded by (seed, epoch) (or the
    stored order without shuffling), rank r taking every world-th sample, full batches only. A
    function of (seed, epoch, rank) alone, so `SeededEpochs` resumes it exactly, mid-epoch too."""

    def __init__(
        self,
        tensors: list[torch.Tensor],
        batch_size: int,
        shuffle: bool,
        seed: int,
        rank: int,
        world: int,
    ) -> None:
        self.tensors, self.batch_size, self.shuffle = tensors, batch_size, shuffle
        self.seed, self.rank, self.world, self.epoch = seed, rank, world, 0
        self.steps = len(tensors[0]) // world // batch_size

    def __len__(self) -> int:
        return self.steps

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        n, b = len(self.tensors[0]), self.batch_size
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(n, generator=gen)
        else:
            order = torch.arange(n)
        mine = order[self.rank :: self.world]
        for i in range(self.steps):
            index = mine[i * b : (i + 1) * b]
            yield tuple(t[index] for t in self.tensors)


def feature_loader(
    cfg: FinetuneConfig, data: TrainData, heads: list[str], rank: int, world: int
) -> SeededEpochs:
    """Cached features + per-head targets/masks (in `heads` order), then the single-label class
    indices (in `data.single` order); seeded shuffle per epoch, full batches only (as the shards)."""
    if len(data.split) < world * cfg.data.batch_size:
        raise ConfigError(
            f"{len(data.split)} training samples are fewer than one batch of "
            f"{cfg.data.batch_size} x {world} ranks: lower data.batch_size"
        )
    tensors = [data.features] + [t for h in heads for t in data.targets[h]]
    tensors += list(data.single.values())
    d, seed = cfg.data, cfg.trainer_seed
    batches = FeatureBatches(tensors, d.batch_size, d.shuffle, seed, rank, world)
    return SeededEpochs(batches, seed, rank)


def align_split(split: LabelledSplit, keys: list[str]) -> LabelledSplit:
    """The split's samples in the order of `keys` (samples whose image could not be read drop out)."""
    where = {k: i for i, k in enumerate(split.keys)}
    return split.subset([where[k] for k in keys])


def encode_train(
    split: LabelledSplit,
    hierarchies: dict[str, Hierarchy],
    singles: dict[str, list[str]],
    schemes: Mapping[str, Scheme],
    features: torch.Tensor | None = None,
    full_size: int = 0,
) -> TrainData:
    """`TrainData` of a split: HML targets/masks and single-label class indices encoded."""
    targets = encode_split(split, hierarchies, schemes)
    singles_y = encode_singles(split, singles)
    return TrainData(split, targets, features, full_size, singles_y, dict(schemes))


@dataclass
class Prepared:
    """A run's labels before any model exists: each HML head's scheme and hierarchy, the
    single-label classes, the encoded training subset, and the val/test labels."""

    schemes: dict[str, Scheme]
    hierarchies: dict[str, Hierarchy]
    singles: dict[str, list[str]]
    data: TrainData
    val: LabelledSplit
    test: LabelledSplit


def prepare_data(cfg: FinetuneConfig) -> Prepared:
    """Read the splits' labels, choose the heads, check every label against its scheme, encode.

    Label checks come first, before any model is built: an unlabelled training split and a head
    asked for without training labels are LabelErrors; heads are chosen from the training subset's
    labels (nodes and classes from every split); a label outside its head's scheme names the
    sample and the nearest path; val/test labels never seen in training are warned.
    """
    d, hc = cfg.data, cfg.heads
    train, val, test = (read_split(p) for p in (d.train, d.val, d.test))
    if not len(train):
        raise ConfigError(f"data.train {d.train}: no samples")
    require_labels(train, f"data.train {d.train}")
    sub = train.subset(stratified_subset(train, cfg.train_fraction, cfg.seed).tolist())
    where = f"the training split data.train {d.train}"
    if cfg.train_fraction < 1.0:
        where = f"the training subset (train_fraction {cfg.train_fraction}) of data.train {d.train}"
    names = training_heads(sub, [val, test], hc.names, hc.flat, hc.single, where)
    schemes = resolve_schemes(names, hc, [train, val, test])
    hierarchies = build_hierarchies([train, val, test], schemes)
    singles = single_classes([train, val, test], hc.single)
    data = encode_train(sub, hierarchies, singles, schemes, None, len(train))
    warn_no_negatives(data.targets, hierarchies, where)
    for name, split in (("val", val), ("test", test)):
        unseen = unseen_labels(sub, split, hierarchies, singles, schemes)
        warn_unseen(unseen, name, str(getattr(d, name)))
    return Prepared(schemes, hierarchies, singles, data, val, test)
