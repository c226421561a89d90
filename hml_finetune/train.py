"""`hml-finetune train` / `evaluate`: HML heads on a backbone (linear probe or fine-tuning) on labelled
image shards, thresholds tuned on val, metrics per head on test.

Training always runs through the Lightning Trainer (devices, precision, DDP, checkpoints under
`output_dir/checkpoints`, resume, CSV/TensorBoard logs, progress bar), the cached-feature linear probe
included: its epochs are a TensorDataset of features, so an epoch costs a few head steps, and
checkpoints, resume and logs stay the same code path as fine-tuning (the Trainer's fixed start-up
cost, about a second, is the price; `bench/linear_probe_cache.py` measures the per-epoch gain).
Scoring after training runs on global rank 0 in one plain pass over each split.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import webdataset as wds
from lightly.utils.scheduler import cosine_warmup_schedule
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from torch import nn
from torch.nn import functional as F
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader, TensorDataset

from hml_finetune.data.labels import (
    IGNORE_INDEX,
    LabelledSplit,
    build_hierarchies,
    encode_single,
    encode_singles,
    encode_split,
    head_labels,
    hierarchy_from_dict,
    hierarchy_to_dict,
    read_split,
    single_classes,
    stratified_subset,
)
from hml_finetune.finetune_config import FinetuneConfig
from hml_finetune.head_metrics import (
    head_metrics,
    metrics_markdown,
    single_label_metrics,
    train_frequency,
    write_metrics,
)
from hml_finetune.hierarchy import Hierarchy
from hml_finetune.losses import MCLoss, NodeWeighting
from hml_finetune.metrics import eval_columns
from hml_finetune.model import (
    HMLModel,
    backbone_kwargs,
    build_backbone,
    cached_features,
    extract_features,
    image_transform,
    resolve_norm,
)
from hml_finetune.thresholds import tune_global_threshold, tune_per_node_thresholds
from ssl_benthic.backbones import create_backbone
from ssl_benthic.config import ConfigError, from_dict, load_config, save_config, to_dict
from ssl_benthic.data.reader import ShardLoader, collate, make_dataset
from ssl_benthic.train import SeededEpochs

__all__ = [
    "HMLModule",
    "TrainData",
    "single_label_loss",
    "run_finetune",
    "load_finetuned",
    "evaluate_shards",
    "cli_train",
    "cli_evaluate",
]

Targets = dict[str, tuple[torch.Tensor, torch.Tensor]]


# ----------------------------------------------------------------------------- data and losses
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


def build_losses(cfg: FinetuneConfig, hierarchies: dict[str, Hierarchy], targets: Targets) -> dict:
    """Per head MCLoss: node weights fitted on the training targets/masks, focal measure (as hmc.py)."""
    lc, losses = cfg.loss, {}
    for head, h in hierarchies.items():
        pos_w = neg_w = None
        if lc.name in ("weighted", "weighted_focal"):
            y, m = targets[head]
            weighting = NodeWeighting(lc.scheme, lc.placement, lc.omega, lc.counting)
            pos_w, neg_w = weighting.fit(y, training_mask(m, h), h)
        measure = lc.measure if lc.name in ("focal", "weighted_focal") else None
        losses[head] = MCLoss(h, pos_w, neg_w, measure, lc.phi, lc.k)
    return losses


def single_label_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over the annotated samples (y != IGNORE_INDEX) only; exactly 0 (with
    zero gradient) when none is: sum_i CE_i / max(1, n_annotated)."""
    ce = F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX, reduction="sum")
    return ce / (y != IGNORE_INDEX).sum().clamp(min=1)


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


# ----------------------------------------------------------------------------- LightningModule
def _param_groups(module: nn.Module, lr: float, wd: float) -> list[dict]:
    """Weights decay; biases and norm parameters (1-d) do not. Frozen parameters are left out."""
    params = [p for p in module.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "lr": lr, "weight_decay": wd}]
    groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0})
    return [g for g in groups if g["params"]]


def _lr_factor(step: int, total: int, warmup: int, floor: float, delay: int = 0) -> float:
    """0 for the first `delay` steps; then linear warm-up over `warmup` steps and cosine decay
    from 1 to `floor` at `total` steps (the schedule's clock starts after the delay)."""
    if step < delay:
        return 0.0
    return cosine_warmup_schedule(
        min(step - delay, total - delay),
        total - delay,
        1.0,
        floor,
        warmup_steps=warmup,
        warmup_start_value=0.0,
    )


class HMLModule(pl.LightningModule):
    """Trains `HMLModel` with one MCLoss per HML head and `single_label_loss` per single-label
    head (sum of the heads' mean losses).

    A batch is (images, metas) from the shards (targets encoded here) or, for the cached linear
    probe, (features, y_1, m_1, y_2, m_2, ..., c_1, c_2, ...): HML heads in `heads` order, then
    single-label class indices. Roots are masked out of the loss.
    """

    def __init__(
        self,
        cfg: FinetuneConfig,
        model: HMLModel,
        hierarchies: dict[str, Hierarchy],
        losses: dict[str, MCLoss],
        data: TrainData,
        transform: Any,
        meta: dict[str, Any],
    ) -> None:
        super().__init__()
        self.cfg, self.model, self.hierarchies = cfg, model, hierarchies
        self.losses = nn.ModuleDict(losses)
        self.data, self.transform, self.meta = data, transform, meta
        self.head_names = list(hierarchies)
        self.singles: dict[str, list[str]] = dict(model.single) if model is not None else {}
        self.loader: SeededEpochs | None = None
        self.frozen_steps = 0  # LP-FT: optimiser steps the encoder is held (configure_optimizers)

    def compute_loss(
        self,
        logits: dict[str, torch.Tensor],
        targets: Targets,
        single: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(total, per-head) losses; an unannotated head (all-zero mask, or every class index
        IGNORE_INDEX for a single-label head) contributes exactly 0."""
        per_head = {}
        for head, (y, m) in targets.items():
            m = training_mask(m, self.hierarchies[head]).to(logits[head])
            per_head[head] = self.losses[head](logits[head].float(), y.to(m), m)
        for head, y in (single or {}).items():
            per_head[head] = single_label_loss(logits[head].float(), y.to(logits[head].device))
        return torch.stack(list(per_head.values())).sum(), per_head

    def _batch_targets(
        self, batch: Any
    ) -> tuple[dict[str, torch.Tensor], Targets, dict[str, torch.Tensor], int]:
        flat = self.cfg.heads.flat
        if self.data.features is not None:
            feats, rest = batch[0], batch[1:]
            targets = {h: (rest[2 * i], rest[2 * i + 1]) for i, h in enumerate(self.head_names)}
            tail = rest[2 * len(self.head_names) :]
            single = dict(zip(self.data.single, tail, strict=True))
            return self.model.head_logits(feats), targets, single, len(feats)
        images, metas = batch
        keys = [m["__key__"] for m in metas]
        labels = [m.get("labels") or {} for m in metas]
        targets = {}
        for head, h in self.hierarchies.items():
            y, mask = h.encode_many([head_labels(lab, head, flat) for lab in labels], keys)
            targets[head] = (y.to(images.device), mask.to(images.device))
        single = {
            head: encode_single([lab.get(head) or [] for lab in labels], classes, keys, head)
            for head, classes in self.singles.items()
        }
        return self.model(images), targets, single, len(images)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        logits, targets, single, n = self._batch_targets(batch)
        total, per_head = self.compute_loss(logits, targets, single)
        self.log("train/loss", total, prog_bar=True, batch_size=n)
        for head, value in per_head.items():
            self.log(f"train/loss_{head}", value, batch_size=n)
        return total

    def train_dataloader(self) -> Any:
        t = self.trainer
        rank, world = (t.global_rank, t.world_size) if t is not None else (0, 1)
        if self.data.features is not None:
            return feature_loader(self.cfg, self.data, self.head_names, world)
        self.loader = shard_train_loader(self.cfg, self.data, self.transform, rank, world)
        return self.loader

    def on_train_start(self) -> None:
        if self.loader is not None:  # after a resume, continue the loader's epoch sequence
            self.loader.set_epoch(self.current_epoch)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """LP-FT: hold the encoder (no gradients, BN in eval) for its first `frozen_steps`."""
        paused = self.global_step < self.frozen_steps
        if paused != self.model.encoder_paused:
            self.model.encoder_paused = paused
            self.model.train()

    def configure_optimizers(self) -> dict:
        o, model = self.cfg.optimizer, self.model
        groups = _param_groups(model.head_modules(), o.lr, o.weight_decay)
        warm, n_head = [o.warmup_epochs] * len(groups), len(groups)
        if not model.frozen:
            enc = _param_groups(model.backbone, o.lr * o.encoder_lr_mult, o.weight_decay)
            enc_warm = (
                o.warmup_epochs if o.encoder_warmup_epochs is None else o.encoder_warmup_epochs
            )
            groups, warm = groups + enc, warm + [enc_warm] * len(enc)
        opt = torch.optim.AdamW(groups, lr=o.lr)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        per_epoch = total / max(1, self.trainer.max_epochs or 1)
        self.frozen_steps = 0 if model.frozen else round(o.encoder_frozen_epochs * per_epoch)
        delays = [0 if i < n_head else self.frozen_steps for i in range(len(groups))]
        lambdas = [
            partial(
                _lr_factor,
                total=total,
                warmup=max(0, min(total - 1 - d, round(w * per_epoch))),
                floor=o.min_lr_ratio,
                delay=d,
            )
            for w, d in zip(warm, delays, strict=True)
        ]
        sched = LambdaLR(opt, lambdas)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Plain types only (config, hierarchies, statistics), so torch.load(weights_only=True) works."""
        checkpoint["hml_finetune"] = self.meta


# ----------------------------------------------------------------------------- set-up
def _device(cfg: FinetuneConfig) -> torch.device:
    """This process's device for feature extraction and scoring (LOCAL_RANK's GPU when on GPU)."""
    want_gpu = cfg.trainer.accelerator in ("gpu", "cuda", "auto")
    if want_gpu and torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return torch.device("cpu")


def _align(split: LabelledSplit, keys: list[str]) -> LabelledSplit:
    """The split's samples in the order of `keys` (samples whose image could not be read drop out)."""
    where = {k: i for i, k in enumerate(split.keys)}
    return split.subset([where[k] for k in keys])


def _device_count(devices: int | str, accelerator: str) -> int:
    """How many processes per node `devices` asks for ('auto' / -1: every visible GPU, else 1)."""
    text = str(devices).strip()
    if text in ("auto", "-1"):
        gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
        return torch.cuda.device_count() if gpu else 1
    return len([d for d in text.strip("[]").split(",") if d.strip()]) if "," in text else int(text)


def resolve_strategy(cfg: FinetuneConfig) -> str:
    """`trainer.strategy`, except that LP-FT under DDP needs `find_unused_parameters`: while the
    encoder is held, its parameters get no gradient and plain DDP would wait for them forever."""
    t = cfg.trainer
    lpft = cfg.mode == "finetune" and cfg.optimizer.encoder_frozen_epochs > 0
    multi = t.num_nodes > 1 or _device_count(t.devices, t.accelerator) > 1
    if lpft and multi and t.strategy in ("auto", "ddp", "ddp_spawn"):
        spawn = "_spawn" if t.strategy == "ddp_spawn" else ""
        return f"ddp{spawn}_find_unused_parameters_true"
    return t.strategy


def build_trainer(cfg: FinetuneConfig, extra_callbacks: Sequence[pl.Callback] = ()) -> pl.Trainer:
    """Trainer from `trainer.*`: last.ckpt every N epochs and at the end, CSV (+TensorBoard) logs."""
    t, out = cfg.trainer, Path(cfg.output_dir)
    loggers: list[Any] = [CSVLogger(out, name="logs")]
    if t.tensorboard:
        loggers.append(TensorBoardLogger(out, name="tensorboard"))
    ckpt = ModelCheckpoint(
        dirpath=out / "checkpoints",
        every_n_epochs=t.checkpoint_every_n_epochs,
        save_top_k=0,
        save_last=True,
    )
    return pl.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=resolve_strategy(cfg),
        precision=t.precision,
        max_epochs=t.max_epochs,
        log_every_n_steps=t.log_every_n_steps,
        enable_progress_bar=t.enable_progress_bar,
        enable_model_summary=False,
        callbacks=[ckpt, LearningRateMonitor(logging_interval="step"), *extra_callbacks],
        logger=loggers,
        default_root_dir=str(out),
        use_distributed_sampler=cfg.cached,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )


def resolve_resume(cfg: FinetuneConfig, resume: str | None) -> str | None:
    """'last' -> output_dir/checkpoints/last.ckpt; a path must exist."""
    if resume is None:
        return None
    path = Path(cfg.output_dir) / "checkpoints" / "last.ckpt" if resume == "last" else Path(resume)
    if not path.is_file():
        raise ConfigError(f"--resume {resume}: checkpoint not found at {path}")
    return str(path)


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


def _meta(
    cfg: FinetuneConfig,
    hierarchies: dict[str, Hierarchy],
    singles: dict[str, list[str]],
    data: TrainData,
) -> dict:
    freqs = {
        h: train_frequency(y, training_mask(m, hierarchies[h])).tolist()
        for h, (y, m) in data.targets.items()
    }
    freqs.update({h: class_frequency(y, len(singles[h])) for h, y in data.single.items()})
    return {
        "config": to_dict(cfg),
        "hierarchies": {h: hierarchy_to_dict(x) for h, x in hierarchies.items()},
        "single": {h: list(c) for h, c in singles.items()},
        "backbone_kwargs": backbone_kwargs(cfg.backbone),
        "mean": list(cfg.data.mean or ()),
        "std": list(cfg.data.std or ()),
        "train_freq": freqs,
        "n_train": len(data.split),
        "thresholds": None,
    }


# ----------------------------------------------------------------------------- scoring
def tune_threshold(
    rule: str | float, probs: torch.Tensor, y: torch.Tensor, m: torch.Tensor, h: Hierarchy
) -> float | torch.Tensor:
    """A fixed number, or tuned on validation predictions: 'global' (one) or 'per-node' (K,)."""
    if rule == "global":
        return tune_global_threshold(probs, y, m, columns=eval_columns(h))
    if rule == "per-node":
        return tune_per_node_thresholds(probs, y, m, columns=eval_columns(h))
    return float(rule)


def score_heads(
    model: HMLModel,
    feats: torch.Tensor,
    split: LabelledSplit,
    hierarchies: dict[str, Hierarchy],
    thresholds: dict[str, float | torch.Tensor],
    train_freq: dict[str, list[float]],
    flat: Sequence[str] = (),
) -> dict[str, dict]:
    """`head_metrics` per HML head (`kind` hierarchical or flat), then `single_label_metrics` per
    single-label head of the model, for the features of `split` (aligned)."""
    model.eval()
    probs = model.predict_features(feats.to(next(model.parameters()).device))
    out = {}
    for head, (y, m) in encode_split(split, hierarchies, flat).items():
        freq = torch.tensor(train_freq[head])
        out[head] = head_metrics(probs[head].cpu(), y, m, hierarchies[head], thresholds[head], freq)
        out[head]["kind"] = "flat" if head in flat else "hierarchical"
    for head, y in encode_singles(split, model.single).items():
        freq = torch.tensor(train_freq[head], dtype=torch.float64)
        out[head] = single_label_metrics(probs[head].cpu(), y, model.single[head], freq)
    return out


def _split_features(
    cfg: FinetuneConfig, model: HMLModel, shards: str, device: torch.device, cache: bool
) -> tuple[torch.Tensor, list[str]]:
    mean, std = list(cfg.data.mean), list(cfg.data.std)
    if cache:
        return cached_features(cfg, model.backbone, shards, mean, std, device)
    transform = image_transform(cfg.data.img_size, mean, std, augment=False)
    return extract_features(
        model.backbone, shards, transform, cfg.data.batch_size, device, cfg.trainer.precision
    )


def _finish(
    cfg: FinetuneConfig,
    module: HMLModule,
    splits: dict[str, LabelledSplit],
    feats: dict[str, tuple[torch.Tensor, list[str]]],
) -> dict:
    """Tune thresholds on val, score test, write metrics and model.ckpt; the result dict."""
    model, hierarchies, meta = module.model, module.hierarchies, module.meta
    device = _device(cfg)
    model.to(device)
    for name in ("val", "test"):
        if name not in feats:
            feats[name] = _split_features(cfg, model, getattr(cfg.data, name), device, False)
    thresholds: dict[str, float | torch.Tensor] = {}
    val_f, val_keys = feats["val"]
    val_split = _align(splits["val"], val_keys)
    val_probs = model.eval().predict_features(val_f.to(device))
    for head, (y, m) in encode_split(val_split, hierarchies, cfg.heads.flat).items():
        thresholds[head] = tune_threshold(
            cfg.threshold, val_probs[head].cpu(), y, m, hierarchies[head]
        )
    test_f, test_keys = feats["test"]
    heads = score_heads(
        model,
        test_f,
        _align(splits["test"], test_keys),
        hierarchies,
        thresholds,
        meta["train_freq"],
        cfg.heads.flat,
    )
    meta["thresholds"] = {h: t.tolist() if torch.is_tensor(t) else t for h, t in thresholds.items()}
    result = {
        "heads": heads,
        **_run_fields(cfg),
        "train_fraction": cfg.train_fraction,
        "encoder_noise": cfg.encoder_noise,
        "n_train": meta["n_train"],
        "output_dir": str(cfg.output_dir),
    }
    out = Path(cfg.output_dir)
    write_metrics(result, out)
    model.cpu()
    torch.save({"state_dict": model.state_dict(), "hml_finetune": meta}, out / "model.ckpt")
    return result


def _run_fields(cfg: FinetuneConfig) -> dict:
    """What identifies a run in results and reports: start, mode, loss, seed, threshold rule."""
    return {
        "start": cfg.backbone.weights,
        "mode": cfg.mode,
        "loss": cfg.loss.name,
        "seed": cfg.seed,
        "threshold": cfg.threshold,
    }


def run_finetune(
    cfg: FinetuneConfig, resume: str | None = None, *, callbacks: Sequence[pl.Callback] = ()
) -> dict:
    """Train, tune thresholds on val, score on test; write metrics.json/.md and config.yaml.

    Returns {"heads": {head: evaluate() keys + rare_recall, per_node, pr_curve, threshold_value},
    "start", "mode", "loss", "seed", "threshold", ...} on global rank 0 ({} on other ranks).
    Also writes output_dir/model.ckpt (weights + hierarchies + tuned thresholds) for `evaluate`.
    `callbacks` are added to the Trainer's (benchmarks, tests).
    """
    cfg.validate()
    ckpt = resolve_resume(cfg, resume)
    pl.seed_everything(cfg.trainer_seed, workers=True, verbose=False)
    hierarchies, singles, data, val, test = prepare_data(cfg)
    backbone = build_backbone(cfg.backbone, cfg.encoder_noise, cfg.seed)
    mean, std = resolve_norm(cfg, backbone)
    cfg = dataclasses.replace(
        cfg, data=dataclasses.replace(cfg.data, mean=tuple(mean), std=tuple(std))
    )
    model = HMLModel(backbone, hierarchies, cfg.heads, cfg.mode == "linear", singles)
    feats: dict[str, tuple[torch.Tensor, list[str]]] = {}
    if cfg.cached:
        device = _device(cfg)
        model.backbone.to(device)
        for name in ("train", "val", "test"):
            feats[name] = _split_features(cfg, model, getattr(cfg.data, name), device, True)
        model.backbone.cpu()
        where = {k: i for i, k in enumerate(feats["train"][1])}
        keep = [k for k in data.split.keys if k in where]
        data = encode_train(
            _align(data.split, keep),
            hierarchies,
            singles,
            cfg.heads.flat,
            feats["train"][0][[where[k] for k in keep]],
            data.full_size,
        )
    augment = cfg.data.augment and cfg.mode == "finetune"
    transform = image_transform(cfg.data.img_size, mean, std, augment)
    losses = build_losses(cfg, hierarchies, data.targets)
    module = HMLModule(
        cfg, model, hierarchies, losses, data, transform, _meta(cfg, hierarchies, singles, data)
    )
    trainer = build_trainer(cfg, callbacks)
    # a linear probe's backbone is in eval mode on purpose (frozen BN statistics)
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    if trainer.is_global_zero:
        save_config(cfg, Path(cfg.output_dir) / "config.yaml")
    trainer.fit(module, ckpt_path=ckpt, weights_only=True)
    if not trainer.is_global_zero:
        return {}
    return _finish(cfg, module, {"val": val, "test": test}, feats)


# ----------------------------------------------------------------------------- evaluate
def load_finetuned(path: str | Path) -> tuple[HMLModel, dict[str, Hierarchy], dict[str, Any]]:
    """(model, hierarchies, meta) from model.ckpt or a Lightning checkpoint of `run_finetune`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint not found: {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    meta = ckpt.get("hml_finetune") if isinstance(ckpt, dict) else None
    if meta is None:
        raise ConfigError(f"{path}: not an hml-finetune checkpoint (no 'hml_finetune' entry)")
    cfg = from_dict(FinetuneConfig, meta["config"], source=f"{path} [hml_finetune.config]")
    hierarchies = {h: hierarchy_from_dict(d) for h, d in meta["hierarchies"].items()}
    backbone = create_backbone(cfg.backbone.name, weights="random", **meta["backbone_kwargs"])
    model = HMLModel(backbone, hierarchies, cfg.heads, True, meta.get("single") or {})
    state = ckpt["state_dict"]
    if any(k.startswith("model.") for k in state):
        state = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    model.load_state_dict(state)
    return model.eval(), hierarchies, meta


def evaluate_shards(checkpoint: str | Path, shards: str | Path, out: str | Path | None) -> dict:
    """Score a checkpoint on a labelled shard folder with its stored thresholds and statistics."""
    model, hierarchies, meta = load_finetuned(checkpoint)
    cfg = from_dict(FinetuneConfig, meta["config"], source=str(checkpoint))
    stored = meta.get("thresholds") or {}
    fixed = cfg.threshold if cfg.threshold not in ("global", "per-node") else 0.5
    if not stored:
        print(f"{checkpoint}: no tuned thresholds stored (a training checkpoint): using {fixed}")
    thresholds = {
        h: torch.tensor(stored[h])
        if isinstance(stored.get(h), list)
        else float(stored.get(h, fixed))
        for h in hierarchies
    }
    device = _device(cfg)
    model.to(device)
    transform = image_transform(cfg.data.img_size, meta["mean"], meta["std"], augment=False)
    feats, keys = extract_features(
        model.backbone, shards, transform, cfg.data.batch_size, device, cfg.trainer.precision
    )
    split = _align(read_split(shards), keys)
    heads = score_heads(
        model, feats, split, hierarchies, thresholds, meta["train_freq"], cfg.heads.flat
    )
    result = {
        "heads": heads,
        **_run_fields(cfg),
        "checkpoint": str(checkpoint),
        "shards": str(shards),
    }
    out_dir = (
        Path(out) if out is not None else Path(checkpoint).parent / f"eval-{Path(shards).name}"
    )
    write_metrics(result, out_dir)
    return result


def cli_train(args: argparse.Namespace) -> int:
    """`hml-finetune train --config F [--resume last|PATH] [key=value ...]`."""
    cfg = load_config(FinetuneConfig, args.config, args.overrides)
    result = run_finetune(cfg, resume=args.resume)
    if result:
        print(metrics_markdown(result))
        print(f"wrote {Path(cfg.output_dir) / 'metrics.json'} and metrics.md")
    return 0


def cli_evaluate(args: argparse.Namespace) -> int:
    """`hml-finetune evaluate --checkpoint C --shards DIR [--out DIR]`."""
    result = evaluate_shards(args.checkpoint, args.shards, args.out)
    print(metrics_markdown(result))
    return 0
