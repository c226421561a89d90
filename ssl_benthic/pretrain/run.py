"""`ssl-benthic pretrain`: build the method, the shard loader and a Lightning Trainer, then fit.

One code path for CPU, one GPU, many GPUs and many nodes (Lightning DDP / SLURM). Checkpoints go to
`output_dir/checkpoints/` (every N steps and at the end, the last K kept, plus `last.ckpt`); the resolved
recipe to `output_dir/config.yaml`; CSV logs to `output_dir/logs/`, TensorBoard to `output_dir/tensorboard/`.
"""

from __future__ import annotations

import argparse
import shlex
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only, rank_zero_warn

from ssl_benthic.core.checkpoints import (
    LAST,
    RunCheckpoint,
    checkpoint_dir,
    checkpoint_step,
    find_resume,
    prepare_output_dir,
)
from ssl_benthic.core.config import load_config, save_config
from ssl_benthic.core.devices import on_gpu
from ssl_benthic.core.errors import ConfigError, Interrupted
from ssl_benthic.core.seeding import SeededEpochs
from ssl_benthic.core.trainer import fit, make_trainer
from ssl_benthic.data.shards.manifest import load_manifest
from ssl_benthic.data.shards.reader import make_loader
from ssl_benthic.pretrain.augment import ChannelsLast, WorkerCrops, make_crop_loader, plan_views
from ssl_benthic.pretrain.config import PretrainConfig
from ssl_benthic.pretrain.methods import get_method
from ssl_benthic.pretrain.methods.base import eval_transform

__all__ = [
    "pretrain",
    "check_recipe",
    "load_recipe",
    "cli_pretrain",
    "build_trainer",
    "ShardDataModule",
]


class ShardDataModule(pl.LightningDataModule):
    """The unlabelled shard loader, built once the trainer knows this process's rank.

    Its state (the loader's epoch and batches drawn) is saved in checkpoints and restored before the
    loader is built (Lightning restores a datamodule's state early; a loader's own state too late
    when `estimated_stepping_batches` has built the loader before the restore).
    """

    def __init__(self, cfg: PretrainConfig, transform: Any) -> None:
        super().__init__()
        self.cfg, self.transform = cfg, transform
        self.loader: SeededEpochs | None = None
        self.pending: dict[str, int] | None = None
        # `transform.device: accelerator`: workers only decode and crop; the rest of the views runs
        # on the device (SSLMethod.on_after_batch_transfer). Translating here fails before training.
        accelerator = cfg.transform.device == "accelerator"
        self.crops = WorkerCrops(plan_views(transform)) if accelerator else None

    def state_dict(self) -> dict[str, Any]:
        return {"loader": self.loader.state_dict()} if self.loader is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pending = state.get("loader")

    def train_dataloader(self) -> SeededEpochs:
        d, t = self.cfg.data, self.trainer
        rank = t.global_rank if t is not None else 0
        common: dict[str, Any] = dict(
            batch_size=d.batch_size,
            num_workers=d.num_workers,
            shuffle_buffer=d.shuffle_buffer,
            seed=self.cfg.trainer.seed,
            epoch_samples=d.epoch_samples,
            rank=rank,
            world_size=t.world_size if t is not None else 1,
            persistent_workers=False,
        )
        if self.crops is not None:
            loader = make_crop_loader(d.shards, crops=self.crops, **common)
        else:
            loader = make_loader(d.shards, transform=self.transform, **common)
        self.loader = SeededEpochs(loader, self.cfg.trainer.seed, rank)
        if self.pending is not None:
            self.loader.load_state_dict(self.pending)
        return self.loader


def _checkpoint(cfg: PretrainConfig) -> RunCheckpoint:
    """Every N steps and at the end, the last K kept by step, plus last.ckpt."""
    return RunCheckpoint(
        dirpath=checkpoint_dir(cfg.output_dir),
        filename="step-{step:08d}",
        every_n_train_steps=cfg.trainer.checkpoint_every_n_steps,
        save_top_k=cfg.trainer.keep_last_k,
        monitor="step",
        mode="max",
        save_last=True,
        auto_insert_metric_name=False,
    )


def build_trainer(cfg: PretrainConfig, extra_callbacks: Sequence[pl.Callback] = ()) -> pl.Trainer:
    """The Lightning Trainer of a recipe: loggers, checkpoints, DDP/SLURM options from `trainer.*`."""
    t = cfg.trainer
    callbacks = list(extra_callbacks)
    if t.channels_last:
        callbacks.append(ChannelsLast())
    if cfg.monitor.knn is not None:
        from ssl_benthic.pretrain.knn_monitor import KNNMonitor

        callbacks.insert(0, KNNMonitor(cfg.monitor.knn, eval_transform(cfg.transform)))
    return make_trainer(
        cfg.output_dir,
        _checkpoint(cfg),
        csv=cfg.logger.csv,
        tensorboard=cfg.logger.tensorboard,
        callbacks=callbacks,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=t.precision,
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
        accumulate_grad_batches=t.accumulate_grad_batches,
        gradient_clip_val=t.gradient_clip_val,
        log_every_n_steps=t.log_every_n_steps,
        enable_progress_bar=t.enable_progress_bar,
        sync_batchnorm=t.sync_batchnorm and on_gpu(t.accelerator),  # torch refuses SyncBN on CPU
        deterministic=t.deterministic,
    )


@rank_zero_only
def _write_config(cfg: PretrainConfig) -> None:
    save_config(cfg, Path(cfg.output_dir) / "config.yaml")


def check_queue_size(cfg: PretrainConfig) -> str | None:
    """A warning when a memory bank (MoCo v2's queue) holds keys of half the images or more:
    the queue then holds keys of the query's own image, pushed away as negatives, which slows or
    stops learning on small datasets. Returns the message (None when fine or unknown)."""
    params = get_method(cfg.method.name).Params(**cfg.method.params)
    bank = getattr(params, "memory_bank_size", 0)
    try:  # the count the reader uses for an epoch (one shard folder with a manifest)
        images = load_manifest(cfg.data.shards)["num_samples"]
    except (OSError, ValueError, TypeError):
        return None
    if not bank or bank < images // 2:
        return None
    return (
        f"method.params.memory_bank_size {bank} is at least half the {images} images in "
        f"{cfg.data.shards}: the queue holds keys of each query's own image as negatives. "
        f"Use a queue well below the dataset size (e.g. memory_bank_size={_queue_hint(images)})."
    )


def _queue_hint(images: int) -> int:
    """The largest power of two at most a quarter of the dataset (at least 64)."""
    return max(64, 1 << max(0, (images // 4).bit_length() - 1))


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> PretrainConfig:
    """A pretraining recipe from YAML, checked by its own values and by its method's; a ConfigError
    names the file."""
    cfg = load_config(PretrainConfig, path, overrides)
    try:
        get_method(cfg.method.name).check(cfg)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return cfg


def check_recipe(cfg: PretrainConfig) -> None:
    """The recipe's own values (`PretrainConfig.validate`), then its method's (`SSLMethod.check`)."""
    cfg.validate()
    get_method(cfg.method.name).check(cfg)


def pretrain(
    cfg: PretrainConfig,
    resume: str | Path | None = None,
    extra_callbacks: Sequence[pl.Callback] = (),
    overwrite: bool = False,
) -> Path:
    """Pretrain as the recipe says (resuming from 'last' or a checkpoint path); returns output_dir.

    A new run into an output_dir holding another run's checkpoints is refused unless `overwrite`.
    On SIGTERM a resumable `last.ckpt` is saved and `Interrupted` raised.
    `extra_callbacks` are added to the Trainer's (for tests and benchmarks).
    """
    check_recipe(cfg)
    cfg.check_inputs()
    ckpt = find_resume(cfg.output_dir, resume)
    if rank_zero_only.rank == 0:
        prepare_output_dir(cfg.output_dir, resume, overwrite)
    pl.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    if (message := check_queue_size(cfg)) is not None:
        rank_zero_warn(message)
    method_cls = get_method(cfg.method.name)
    model = method_cls(cfg)
    data = ShardDataModule(cfg, method_cls.build_transform(cfg.transform))
    trainer = build_trainer(cfg, extra_callbacks)
    # the module's `on_after_batch_transfer` beside a datamodule is the design (the device half of
    # the augmentation belongs to the module): Lightning's warning about it is not news
    warnings.filterwarnings("ignore", message=r"You have overridden `on_after_batch_transfer`")
    _write_config(cfg)
    fit(trainer, model=model, datamodule=data, ckpt_path=ckpt, weights_only=True)
    return Path(cfg.output_dir)


def cli_pretrain(args: argparse.Namespace) -> int:
    """`ssl-benthic pretrain --config F [--resume last|PATH] [--overwrite] [key=value ...]`."""
    cfg = load_recipe(args.config, args.overrides)
    start = checkpoint_step(ckpt) if (ckpt := find_resume(cfg.output_dir, args.resume)) else 0
    try:
        out = pretrain(cfg, resume=args.resume, overwrite=args.overwrite)
    except Interrupted as exc:
        command = ["ssl-benthic", "pretrain", "--config", args.config, *args.overrides]
        raise Interrupted(f"{exc}: {shlex.join([*command, '--resume', 'last'])}") from None
    if rank_zero_only.rank == 0:
        _print_done(out, start, cfg.trainer.max_steps)
    return 0


def _print_done(out: Path, start: int, max_steps: int) -> None:
    end = checkpoint_step(checkpoint_dir(out) / LAST)
    if end == start and start > 0:
        print(
            f"nothing to train: the run in {out} had already reached step {end} (max_steps {max_steps})"
        )
    else:
        print(
            f"pretraining done at step {end}: checkpoints in {checkpoint_dir(out)}, logs in {out / 'logs'}"
        )
