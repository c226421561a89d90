"""The stage-2 LightningModule: one MCLoss per HML head and cross-entropy per single-label head,
AdamW with per-group warm-up and cosine decay, LP-FT (the encoder held for its first epochs).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import pytorch_lightning as pl
import torch
from lightly.utils.scheduler import cosine_warmup_schedule
from torch import nn
from torch.nn import functional as F
from torch.optim.lr_scheduler import LambdaLR

from hml_finetune.finetune.config import FinetuneConfig
from hml_finetune.finetune.data import (
    Targets,
    TrainData,
    feature_loader,
    shard_train_loader,
    training_mask,
)
from hml_finetune.finetune.labels import (
    IGNORE_INDEX,
    encode_head,
    encode_single,
    negative_heads,
)
from hml_finetune.finetune.model import HMLModel
from hml_finetune.hml.hierarchy import Hierarchy
from hml_finetune.hml.losses import MCLoss, NodeWeighting
from ssl_benthic.core.seeding import SeededEpochs, step_rng

__all__ = ["build_losses", "single_label_loss", "HMLModule"]


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
        self.pending_loader: dict[str, int] | None = None
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
        if self.data.features is not None:
            feats, rest = batch[0], batch[1:]
            targets = {h: (rest[2 * i], rest[2 * i + 1]) for i, h in enumerate(self.head_names)}
            tail = rest[2 * len(self.head_names) :]
            single = dict(zip(self.data.single, tail, strict=True))
            return self.model.head_logits(feats), targets, single, len(feats)
        images, metas = batch
        keys = [m["__key__"] for m in metas]
        labels = [m.get("labels") or {} for m in metas]
        negatives = [negative_heads(m, k) for m, k in zip(metas, keys, strict=True)]
        targets = {}
        for head, h in self.hierarchies.items():
            scheme = self.data.schemes[head]
            y, mask = encode_head(h, head, scheme, labels, keys, negatives)
            targets[head] = (y.to(images.device), mask.to(images.device))
        single = {
            head: encode_single([lab.get(head) or [] for lab in labels], classes, keys, head)
            for head, classes in self.singles.items()
        }
        return self.model(images), targets, single, len(images)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        # dropout draws from a generator of (seed, step, rank): exact after a mid-epoch resume
        with step_rng(self.cfg.trainer_seed, self.global_step, self.global_rank, self.device):
            logits, targets, single, n = self._batch_targets(batch)
        total, per_head = self.compute_loss(logits, targets, single)
        self.log("train/loss", total, prog_bar=True, batch_size=n)
        for head, value in per_head.items():
            self.log(f"train/loss_{head}", value, batch_size=n)
        return total

    def train_dataloader(self) -> SeededEpochs:
        """The shard stream, or cached-feature batches: stateful, so a resumed run continues the
        epoch (and the batch within it) where the checkpoint left off."""
        t = self.trainer
        rank, world = (t.global_rank, t.world_size) if t is not None else (0, 1)
        if self.data.features is not None:
            self.loader = feature_loader(self.cfg, self.data, self.head_names, rank, world)
        else:
            self.loader = shard_train_loader(self.cfg, self.data, self.transform, rank, world)
        if self.pending_loader is not None:
            self.loader.load_state_dict(self.pending_loader)
        return self.loader

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
        if self.loader is not None:
            checkpoint["train_loader"] = self.loader.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restored before the loader is built (Lightning restores a loader's own state too late)."""
        self.pending_loader = checkpoint.get("train_loader")
