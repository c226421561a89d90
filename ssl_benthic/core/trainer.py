"""The one Lightning Trainer builder of both stages: a run's checkpoint callback, learning-rate logging,
a resumable save on SIGTERM agreed by all ranks, Lightning's SLURM environment without its
auto-requeue, images/s and data wait, CSV (and TensorBoard) logs under `output_dir`, and no
validation loop (each stage evaluates in its own way). The stages pass only what differs.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.plugins.environments import SLURMEnvironment

from ssl_benthic.core.checkpoints import SaveOnSigterm, fit_or_interrupt

__all__ = ["make_trainer", "fit", "slurm_plugins", "quiet_srun_notice", "Throughput"]


def make_trainer(
    output_dir: str | Path,
    checkpoint: ModelCheckpoint,
    *,
    csv: bool = True,
    tensorboard: bool = False,
    callbacks: Sequence[pl.Callback] = (),
    **trainer_kwargs: Any,
) -> pl.Trainer:
    """`pl.Trainer(**trainer_kwargs)` with the toolkit's callbacks and loggers for `output_dir`."""
    out = Path(output_dir)
    loggers: list[Any] = []
    if csv:
        loggers.append(CSVLogger(out, name="logs"))
    if tensorboard:
        loggers.append(TensorBoardLogger(out, name="tensorboard"))
    standard = [LearningRateMonitor(logging_interval="step"), Throughput()]
    quiet_srun_notice()
    # SaveOnSigterm last: Lightning moves checkpoint callbacks to the end, keeping their order
    return pl.Trainer(
        callbacks=[*standard, *callbacks, checkpoint, SaveOnSigterm(out)],
        plugins=slurm_plugins(),
        logger=loggers or False,
        default_root_dir=str(out),
        use_distributed_sampler=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        **trainer_kwargs,
    )


def quiet_srun_notice() -> None:
    """Outside a SLURM job, ignore Lightning's notice that `srun` is installed but unused, for the
    rest of the process: Lightning checks at Trainer init and again at each fit/test without a
    checkpoint path (`SLURMEnvironment.detect`), and on a machine with SLURM it is not news. Inside a
    job the notice stays: there a run started without srun is likely a mistake."""
    if "SLURM_JOB_ID" not in os.environ:
        warnings.filterwarnings("ignore", message=r"The `srun` command is available on your")


def slurm_plugins() -> list[Any]:
    """Inside a SLURM job step, Lightning's SLURM environment without its auto-requeue (a SIGUSR1
    handler that saves an `hpc_ckpt` and requeues): SIGTERM saves `last.ckpt` (`SaveOnSigterm`) and
    the sbatch script requeues."""
    if "SLURM_JOB_ID" not in os.environ:
        return []
    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def fit(trainer: pl.Trainer, **fit_kwargs: Any) -> None:
    """`trainer.fit`; on SIGTERM the saved checkpoint is named in an `Interrupted` error."""
    guard = next(c for c in trainer.callbacks if isinstance(c, SaveOnSigterm))
    fit_or_interrupt(trainer, guard, **fit_kwargs)


def _batch_size(batch: Any) -> int:
    """Images in a batch: (views or images, metas) from the shards, or (features, ...) cached."""
    first = batch[0] if isinstance(batch, (list, tuple)) else batch
    while isinstance(first, (list, tuple)):  # a list of views: count the first
        first = first[0]
    return int(first.shape[0]) if hasattr(first, "shape") else len(first)


class Throughput(pl.Callback):
    """Images/s and data wait, shown in the progress bar and logged every step, for every rank.

    data_wait = (time from the end of one step to the start of the next, when Lightning fetches
    the next batch) / (time from the end of one step to the end of the next). Near 0 on a
    well-fed accelerator; near 1 when the loader sets the pace. The slowest rank's is
    `data_wait`; each rank's is `data_wait_rank{r}` (all ranks gather every logged step).
    """

    def __init__(self) -> None:
        self._last_end: float | None = None
        self._start = 0.0

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_end = None  # the first batch of an epoch also waits for the loader to start

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        now = time.perf_counter()
        if self._last_end is not None:
            step = max(now - self._last_end, 1e-9)
            wait = max(self._start - self._last_end, 0.0)
            self._log(
                trainer, pl_module, _batch_size(batch) * trainer.world_size / step, wait / step
            )
        self._last_end = now

    def _log(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, rate: float, wait: float
    ) -> None:
        waits = pl_module.all_gather(torch.tensor(wait, device=pl_module.device)).reshape(-1)
        metrics = {"images_per_s": rate, "data_wait": float(waits.max())}
        pl_module.log_dict(metrics, prog_bar=True, on_step=True, rank_zero_only=True)
        if waits.numel() > 1:
            per_rank = {f"data_wait_rank{r}": float(w) for r, w in enumerate(waits)}
            pl_module.log_dict(per_rank, on_step=True, rank_zero_only=True)
