"""The one Lightning Trainer builder of both stages: a run's checkpoint callback, learning-rate logging,
a resumable save on SIGTERM, CSV (and TensorBoard) logs under `output_dir`, and no validation loop
(each stage evaluates in its own way). The stages pass only what differs between them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from ssl_benthic.checkpoints import SaveOnSigterm, fit_or_interrupt

__all__ = ["make_trainer", "fit"]


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
    standard = [checkpoint, LearningRateMonitor(logging_interval="step"), SaveOnSigterm(out)]
    return pl.Trainer(
        callbacks=[*standard, *callbacks],
        logger=loggers or False,
        default_root_dir=str(out),
        use_distributed_sampler=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        **trainer_kwargs,
    )


def fit(trainer: pl.Trainer, **fit_kwargs: Any) -> None:
    """`trainer.fit`; on SIGTERM the saved checkpoint is named in an `Interrupted` error."""
    guard = next(c for c in trainer.callbacks if isinstance(c, SaveOnSigterm))
    fit_or_interrupt(trainer, guard, **fit_kwargs)
