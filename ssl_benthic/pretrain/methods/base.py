"""What every self-supervised method shares: backbone, teachers, optimiser, schedules, logging, state.

A method subclasses `SSLMethod`, declares its `Params` dataclass, builds its heads and loss in `build()`,
names its (student, teacher) pairs for the momentum update, and computes the loss from a list of views.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from lightly.models.utils import deactivate_requires_grad, get_weight_decay_parameters
from lightly.models.utils import update_momentum as lightly_update_momentum
from lightly.utils.lars import LARS
from lightly.utils.optim import update_param_groups
from lightly.utils.scheduler import CosineWarmupScheduler, cosine_schedule
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor, nn
from torchvision import transforms as T

from ssl_benthic.core.config import from_dict, to_dict
from ssl_benthic.core.seeding import step_rng
from ssl_benthic.pretrain.augment.device import BatchOnDevice, DeviceViews
from ssl_benthic.pretrain.config import PretrainConfig, TransformConfig
from ssl_benthic.pretrain.heads_import import init_heads_from_import
from ssl_benthic.weights.backbones import create_backbone, feature_dim, read_export

__all__ = ["SSLMethod", "eval_transform", "view_kwargs", "backbone_kwargs", "built_kwargs"]


def backbone_kwargs(cfg: PretrainConfig) -> dict[str, Any]:
    """The timm keyword arguments that shape the backbone (stored in exports as `model_kwargs`)."""
    b = cfg.backbone
    kwargs = dict(b.kwargs)
    if b.img_size is not None:
        kwargs["img_size"] = b.img_size
    if b.patch_size is not None:
        kwargs["patch_size"] = b.patch_size
    return kwargs


def built_kwargs(cfg: PretrainConfig) -> dict[str, Any]:
    """The timm keyword arguments the backbone is built with: the recipe's, and for what it leaves
    unset an export's or import's own `model_kwargs` (as `create_backbone` merges them)."""
    kwargs = backbone_kwargs(cfg)
    if cfg.backbone.weights not in ("random", "imagenet"):
        own = read_export(cfg.backbone.weights)[1].get("model_kwargs") or {}
        for key, value in own.items():
            if key != "num_classes":
                kwargs.setdefault(key, value)
    return kwargs


def view_kwargs(t: TransformConfig, method: str) -> dict[str, Any]:
    """Keyword arguments shared by lightly's two-view transforms (BYOL/MoCo views)."""
    kw: dict[str, Any] = dict(
        input_size=t.input_size,
        cj_prob=t.cj_prob,
        hf_prob=t.hf_prob,
        vf_prob=t.vf_prob,
        rr_prob=t.rr_prob,
        normalize={"mean": list(t.mean), "std": list(t.std)},
    )
    if t.cj_strength is not None:
        kw["cj_strength"] = t.cj_strength
    if t.global_crop_scale is not None:
        lo, hi = t.global_crop_scale
        if hi != 1.0:
            raise ValueError(
                f"transform.global_crop_scale: {method} views crop up to 1.0, got {hi}"
            )
        kw["min_scale"] = lo
    kw.update(t.extra)
    return kw


def eval_transform(t: TransformConfig) -> Callable:
    """Deterministic view for features (kNN monitor): resize, centre crop, normalise."""
    return T.Compose(
        [
            T.Resize(t.input_size),
            T.CenterCrop(t.input_size),
            T.ToTensor(),
            T.Normalize(mean=list(t.mean), std=list(t.std)),
        ]
    )


@dataclasses.dataclass
class NoParams:
    pass


class SSLMethod(pl.LightningModule):
    """Shared LightningModule: student `backbone`, momentum teachers, optimiser and schedules."""

    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    # import's head key prefix -> `attribute[.sub.path]` of this method (see heads_import.py)
    head_import: ClassVar[dict[str, str]] = {}

    def __init__(self, cfg: PretrainConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.params = self.parse_params(cfg.method.params)
        self.backbone = self.make_backbone()
        self.model_kwargs = built_kwargs(cfg)  # what an export rebuilds the backbone with
        self.dim = feature_dim(self.backbone)
        self.build()
        self.heads_init = self._init_heads()
        self.last_momentum: float | None = None

    # ----- what a method provides -------------------------------------------------------------
    @classmethod
    def check(cls, cfg: PretrainConfig) -> None:
        """Refuse a recipe this method cannot run, before anything is built (bad params by default)."""
        cls.parse_params(cfg.method.params)

    @classmethod
    def parse_params(cls, params: dict[str, Any]) -> Any:
        """The method's `Params` dataclass from `method.params` (unknown keys fail with a near-miss)."""
        return from_dict(cls.Params, params, source=f"method {cls.name}", prefix="method.params.")

    @classmethod
    def build_transform(cls, t: TransformConfig) -> Callable:
        """The lightly view transform for this method (PIL image -> list of view tensors).

        With `transform.device: accelerator` this object is also read into worker crops and batched
        device ops (`ssl_benthic.pretrain.augment`), so each view stays a torchvision Compose of the ops that
        `ssl_benthic.pretrain.augment.translate` knows; another op fails there, naming it.
        """
        raise NotImplementedError

    def build(self) -> None:
        """Create heads, teachers and the loss (called once from __init__)."""
        raise NotImplementedError

    def teacher_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(student, teacher) module pairs updated as teacher = m * teacher + (1 - m) * student."""
        return []

    def compute_loss(self, views: list[Tensor]) -> Tensor:
        raise NotImplementedError

    # ----- building blocks --------------------------------------------------------------------
    def make_backbone(self, **override: Any) -> nn.Module:
        b = self.cfg.backbone
        opts: dict[str, Any] = dict(
            weights=b.weights, drop_path_rate=b.drop_path_rate, weights_file=b.weights_file
        )
        opts["pool"] = b.pool
        opts.update(override)
        kwargs = backbone_kwargs(self.cfg)
        kwargs.update(self.extra_backbone_kwargs())
        return create_backbone(b.name, **opts, **kwargs)

    def _init_heads(self) -> list[str]:
        """Heads from an import's (continued pretraining), reported once; teachers follow them."""
        lines = init_heads_from_import(
            self, self.cfg.backbone.weights, self.cfg.method.init_heads, self.head_import, self.name
        )
        for line in lines:
            rank_zero_info(line)
        if any("from the import" in line for line in lines):
            for student, teacher in self.teacher_pairs():  # a teacher starts as its student
                teacher.load_state_dict(student.state_dict())
        return lines

    def extra_backbone_kwargs(self) -> dict[str, Any]:
        """Method-specific timm options (e.g. DINO's dynamic image size for ViT local crops)."""
        return {}

    def make_teacher(self, student: nn.Module, factory: Callable[[], nn.Module]) -> nn.Module:
        """A frozen copy of `student` built by `factory` (no deepcopy: weight-norm heads refuse it)."""
        teacher = factory()
        teacher.load_state_dict(student.state_dict())
        deactivate_requires_grad(teacher)
        return teacher

    def make_teacher_backbone(self) -> nn.Module:
        """Teacher backbone: the student's weights without drop-path."""
        return self.make_teacher(
            self.backbone, lambda: self.make_backbone(weights="random", drop_path_rate=0.0)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    # ----- schedules --------------------------------------------------------------------------
    def total_steps(self) -> int:
        return max(1, int(self.trainer.estimated_stepping_batches))

    def momentum(self) -> float:
        """Teacher momentum: cosine from momentum_start to momentum_end over training."""
        p = self.params
        return cosine_schedule(
            self.trainer.global_step, self.total_steps(), p.momentum_start, p.momentum_end
        )

    @torch.no_grad()
    def update_teachers(self) -> None:
        """The momentum update of every (student, teacher) pair; nothing for teacher-free methods."""
        pairs = self.teacher_pairs()
        if not pairs:
            return
        m = self.momentum()
        for student, teacher in pairs:
            lightly_update_momentum(student, teacher, m=m)
        self.last_momentum = m

    # ----- Lightning hooks --------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        views = batch[0]
        # the model's own randomness (batch shuffle, drop-path), apart from the data's
        with step_rng(self.cfg.trainer.seed, self.global_step, self.global_rank, self.device):
            loss = self.compute_loss(list(views))
        self._log_step(loss, views[0].shape[0])
        return loss

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """On the device: `transform.device: accelerator` finishes the worker crops of every view
        (batched, per-sample parameters from (seed, step, rank)); `trainer.channels_last` formats them."""
        if self.cfg.transform.device == "cpu" and not self.cfg.trainer.channels_last:
            return batch
        on_device = self.__dict__.get("_batch_on_device")
        if on_device is None:  # built on first use: nothing of it belongs in the state dict
            views = None
            if self.cfg.transform.device == "accelerator":
                views = DeviceViews.from_transform(type(self).build_transform(self.cfg.transform))
            on_device = BatchOnDevice(views, self.cfg.trainer.channels_last, self.cfg.trainer.seed)
            self._batch_on_device = on_device
        return on_device(batch, self.global_step, self.global_rank)

    def _log_step(self, loss: Tensor, batch_size: int) -> None:
        metrics = {"train_loss": loss.detach(), "lr": self.optimizers().param_groups[0]["lr"]}
        if self.last_momentum is not None:
            metrics["momentum"] = self.last_momentum
        self.log_dict(metrics, prog_bar=True, on_step=True, batch_size=batch_size)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """Optimiser step, then the teachers' momentum update (once per optimiser step)."""
        super().optimizer_step(*args, **kwargs)
        self.update_teachers()

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        o = self.cfg.optimizer
        if o.weight_decay_end is not None:
            wd = cosine_schedule(
                self.trainer.global_step, self.total_steps(), o.weight_decay, o.weight_decay_end
            )
            update_param_groups(optimizer, updates=[{"name": "decay", "weight_decay": wd}])

    def trainable_modules(self) -> list[nn.Module]:
        """Student modules the optimiser trains (teachers are excluded by requires_grad)."""
        return [m for m in self.children() if any(p.requires_grad for p in m.parameters())]

    def base_lr(self) -> float:
        o, c = self.cfg.optimizer, self.cfg
        if not o.scale_lr:
            return o.lr
        world = self.trainer.world_size if self._trainer is not None else 1
        global_batch = c.data.batch_size * world * c.trainer.accumulate_grad_batches
        return o.lr * global_batch / 256

    def warmup_steps(self, total: int) -> int:
        o = self.cfg.optimizer
        if o.warmup_steps is not None:
            return min(o.warmup_steps, total)
        batches = self.trainer.num_training_batches
        per_epoch = (
            total
            if math.isinf(batches)
            else math.ceil(batches / self.trainer.accumulate_grad_batches)
        )
        return min(int(o.warmup_epochs * per_epoch), total)

    def configure_optimizers(self) -> dict[str, Any]:
        o = self.cfg.optimizer
        decay, no_decay = get_weight_decay_parameters(self.trainable_modules())
        groups = [
            {"name": "decay", "params": [p for p in decay if p.requires_grad]},
            {
                "name": "no_decay",
                "params": [p for p in no_decay if p.requires_grad],
                "weight_decay": 0.0,
            },
        ]
        lr = self.base_lr()
        if o.name == "sgd":
            opt = torch.optim.SGD(groups, lr=lr, momentum=o.momentum, weight_decay=o.weight_decay)
        elif o.name == "lars":
            opt = LARS(groups, lr=lr, momentum=o.momentum, weight_decay=o.weight_decay)
        else:
            opt = torch.optim.AdamW(groups, lr=lr, betas=o.betas, weight_decay=o.weight_decay)
        total = self.total_steps()
        sched = CosineWarmupScheduler(
            opt,
            warmup_epochs=self.warmup_steps(total),
            max_epochs=total,
            end_value=o.min_lr_ratio,
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ----- checkpoint state -------------------------------------------------------------------
    def extra_state(self) -> dict[str, Tensor]:
        """Loss state not in the state dict (e.g. MoCo's memory bank), saved as plain tensors."""
        return {}

    def load_extra_state(self, state: dict[str, Tensor]) -> None:
        pass

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["ssl_benthic"] = {
            "method": self.name,
            "timm_name": self.cfg.backbone.name,
            "model_kwargs": dict(self.model_kwargs),
            "config": to_dict(self.cfg),
            "heads_init": list(self.heads_init),  # where the heads started (continued pretraining)
        }
        checkpoint["ssl_extra_state"] = {k: v.detach().cpu() for k, v in self.extra_state().items()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.load_extra_state(checkpoint.get("ssl_extra_state", {}))
