"""The training data of a stage-2 run: the splits' labels read and encoded per head, the seeded
(stratified) training subset, and its loaders: the shard stream, or cached features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import webdataset as wds
from torch.utils.data import DataLoader, TensorDataset

from hml_finetune.data.labels import (
    IGNORE_INDEX,
    LabelledSplit,
    build_hierarchies,
    encode_singles,
    encode_split,
    read_split,
    single_classes,
    stratified_subset,
)
from hml_finetune.finetune_config import FinetuneConfig
from hml_finetune.hierarchy import Hierarchy
from ssl_benthic.config import ConfigError
from ssl_benthic.data.reader import ShardLoader, collate, make_dataset
from ssl_benthic.train import SeededEpochs

__all__ = [
    "Targets",
    "TrainData",
    "training_mask",
    "class_frequency",
    "shard_train_loader",
    "feature_loader",
    "align_split",
    "encode_train",
    "prepare_data",
]

Targets = dict[str, tuple[torch.Tensor, torch.Tensor]]


@dataclass
class TrainData:
    """The training subset: its labels, encoded targets/masks per HML head, cached features (or
    None), and class indices (N,) per single-label head (`IGNORE_INDEX` = unannotated)."""

    split: LabelledSplit
    targets: Targets
    features: torch.Tensor | None = None
    full_size: int = 0
    single: dict[str, torch.Tensor] = field(default_factory=dict)


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


def feature_loader(
    cfg: FinetuneConfig, data: TrainData, heads: list[str], world: int
) -> DataLoader:
    """Cached features + per-head targets/masks (in `heads` order), then the single-label class
    indices (in `data.single` order); seeded shuffle, full batches only (as the shards)."""
    if len(data.split) < world * cfg.data.batch_size:
        raise ConfigError(
            f"{len(data.split)} training samples are fewer than one batch of "
            f"{cfg.data.batch_size} x {world} ranks: lower data.batch_size"
        )
    tensors = [data.features] + [t for h in heads for t in data.targets[h]]
    tensors += list(data.single.values())
    gen = torch.Generator().manual_seed(cfg.trainer_seed)
    return DataLoader(
        TensorDataset(*tensors),
        batch_size=cfg.data.batch_size,
        shuffle=cfg.data.shuffle,
        drop_last=True,
        generator=gen,
    )


def align_split(split: LabelledSplit, keys: list[str]) -> LabelledSplit:
    """The split's samples in the order of `keys` (samples whose image could not be read drop out)."""
    where = {k: i for i, k in enumerate(split.keys)}
    return split.subset([where[k] for k in keys])


def encode_train(
    split: LabelledSplit,
    hierarchies: dict[str, Hierarchy],
    singles: dict[str, list[str]],
    flat: Sequence[str],
    features: torch.Tensor | None = None,
    full_size: int = 0,
) -> TrainData:
    """`TrainData` of a split: HML targets/masks and single-label class indices encoded."""
    targets = encode_split(split, hierarchies, flat)
    return TrainData(split, targets, features, full_size, encode_singles(split, singles))


def prepare_data(
    cfg: FinetuneConfig,
) -> tuple[dict[str, Hierarchy], dict[str, list[str]], TrainData, LabelledSplit, LabelledSplit]:
    """Hierarchies (CATAMI + flat heads), single-label classes, the (stratified, seeded) training
    subset encoded, and the val/test labels."""
    train, val, test = (read_split(p) for p in (cfg.data.train, cfg.data.val, cfg.data.test))
    if not len(train):
        raise ConfigError(f"data.train {cfg.data.train}: no samples")
    hc = cfg.heads
    hierarchies = build_hierarchies([train, val, test], hc.names, hc.flat, skip=hc.single)
    singles = single_classes([train, val, test], hc.single)
    sub = train.subset(stratified_subset(train, cfg.train_fraction, cfg.seed).tolist())
    data = encode_train(sub, hierarchies, singles, hc.flat, None, len(train))
    return hierarchies, singles, data, val, test
