"""A run's checkpoints, shared by both stages: saving them, finding the one to resume, refusing to start
a new run over another one, and saving on SIGTERM.

Every run keeps its checkpoints in `output_dir/checkpoints/`, with `last.ckpt` the newest. File names
are never versioned (`last-v1.ckpt`): a second run into the same folder is refused unless it resumes
(`--resume last`) or replaces the first (`--overwrite`).
"""

from __future__ import annotations

import re
import shutil
import signal
import threading
from collections.abc import Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from types import FrameType
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Checkpoint, ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException

from ssl_benthic.core.errors import ConfigError, Interrupted, Terminated
from ssl_benthic.core.signals import on_sigterm

__all__ = [
    "CHECKPOINTS",
    "LAST",
    "RunCheckpoint",
    "SaveOnSigterm",
    "checkpoint_dir",
    "find_resume",
    "has_checkpoints",
    "prepare_output_dir",
    "checkpoint_step",
    "fit_or_interrupt",
]

CHECKPOINTS = "checkpoints"
LAST = "last.ckpt"
_STEP = re.compile(r"(?:step|epoch)-(\d+)\.ckpt")


def checkpoint_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / CHECKPOINTS


class RunCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` that never versions file names and also saves when training ends (a run
    stopped by `max_steps`, or early, is resumable from its true end), but only when this fit trained
    at least one step (resuming a finished run rewrites nothing)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(enable_version_counter=False, **kwargs)
        self._start_step = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start_step = trainer.global_step
        super().on_train_start(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        step = trainer.global_step
        if step > self._start_step and self._last_global_step_saved != step:
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)
        super().on_train_end(trainer, pl_module)


class SaveOnSigterm(Checkpoint):
    """On SIGTERM (SLURM's preemption and time-limit signal) stop at a step boundary that every rank
    agrees on, save that state as `last.ckpt` (resumable exactly there) and end the fit.

    The signal handler only sets a flag: a rank that stopped in the middle of a step, or entered a
    collective of its own from a signal handler, would leave the others waiting in the step's
    gradient all-reduce until SLURM kills the job (and the job is lost). At the end of every step
    all ranks reduce the flags (any rank's SIGTERM stops all of them), so all save after the same
    step and raise Lightning's `SIGTERMException` together. A `Checkpoint`, listed after the run's
    `ModelCheckpoint`, so that Lightning keeps it the last callback: the step's own checkpoint and
    logs are done first.
    """

    def __init__(self, output_dir: str | Path) -> None:
        self.path = checkpoint_dir(output_dir) / LAST
        self.saved_step: int | None = None
        self.received = False
        self._previous: Any = None

    def __getstate__(self) -> dict[str, Any]:
        """Picklable for `ddp_spawn` (the previous handler may not be)."""
        return {**self.__dict__, "_previous": None}

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self.received = True

    def flagging(self) -> AbstractContextManager[None]:
        """Around the whole fit: SIGTERM only sets the flag (from before the process group is
        up to after teardown). Lightning's own handler, installed inside fit, calls the one it
        finds: this flag, not one that raises (`core.signals.sigterm_raises`; a KeyboardInterrupt
        inside fit becomes Lightning's exit 1, a failure, not an interruption)."""
        self.received, self.saved_step = False, None
        return on_sigterm(self._on_sigterm)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after Lightning's own handler (installed at the start of fit, with a broadcast in it);
        # Lightning puts the handler from before (this flag) back when fit ends
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        stop = self.received or trainer.received_sigterm  # or Lightning's, before on_train_start
        if trainer.strategy.reduce_boolean_decision(stop, all=False):
            self._save(trainer)
            raise SIGTERMException()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        # Lightning's own stop (a SIGTERM before training started): save where it stopped
        if isinstance(exception, SIGTERMException) and self.saved_step is None:
            self._save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._previous)  # Lightning's, until fit ends
        self._previous = None

    def _save(self, trainer: pl.Trainer) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)
        self.saved_step = trainer.global_step


def fit_or_interrupt(trainer: pl.Trainer, guard: SaveOnSigterm, **fit_kwargs: Any) -> None:
    """`trainer.fit(**fit_kwargs)`; on SIGTERM raise `Interrupted` naming the checkpoint saved
    (Lightning's SIGTERMException is a SystemExit with status 0: a preempted job looked finished),
    or, for a SIGTERM that came after the last step, `Terminated` once the fit has ended (its
    last.ckpt is the finished state: a resume goes on to what follows the fit)."""
    with guard.flagging():
        try:
            trainer.fit(**fit_kwargs)
        except SIGTERMException:
            raise Interrupted(
                f"interrupted by SIGTERM at step {guard.saved_step}: saved {guard.path}; "
                "resume with the same command and --resume last"
            ) from None
    if guard.received:
        late = Terminated()
        late.kept = f"after the last step; {guard.path} holds the trained state (--resume last)"
        raise late


def _checkpoints(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.ckpt")) if folder.is_dir() else []


def has_checkpoints(output_dir: str | Path) -> bool:
    """True when `output_dir/checkpoints/` holds a checkpoint (`--resume last` will find one)."""
    return bool(_checkpoints(checkpoint_dir(output_dir)))


def checkpoint_step(path: str | Path) -> int:
    """The global step a checkpoint was saved at (memory-mapped: the tensors are not read)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return int(ckpt.get("global_step", 0))


def find_resume(output_dir: str | Path, resume: str | Path | None) -> str | None:
    """The checkpoint `--resume` names: 'last' is `checkpoints/last.ckpt`, or when a crash left
    none, the newest `step-*`/`epoch-*` checkpoint; any other value is a path that must exist."""
    if resume is None:
        return None
    folder = checkpoint_dir(output_dir)
    if str(resume) != "last":
        path = Path(resume)
    elif (folder / LAST).is_file():
        path = folder / LAST
    else:
        numbered = [
            (int(m.group(1)), p) for p in _checkpoints(folder) if (m := _STEP.match(p.name))
        ]
        path = max(numbered)[1] if numbered else folder / LAST
    if not path.is_file():
        raise ConfigError(f"--resume {resume}: checkpoint not found at {path}")
    return str(path)


def prepare_output_dir(
    output_dir: str | Path,
    resume: str | Path | None,
    overwrite: bool,
    run_files: Iterable[str] = (),
) -> None:
    """Refuse to start a new run in a folder holding another run's checkpoints (or `run_files`, e.g.
    a finished stage-2 model): the user resumes it, picks another folder, or asks to replace it with
    `overwrite`, which deletes the old checkpoints and `run_files` (logs are kept, in new versions)."""
    out = Path(output_dir)
    if resume is not None:
        if overwrite:
            raise ConfigError("--resume and --overwrite contradict each other: pick one")
        return
    found = _checkpoints(checkpoint_dir(out)) + [out / f for f in run_files if (out / f).exists()]
    if not found:
        return
    if not overwrite:
        names = ", ".join(str(p.relative_to(out)) for p in found[:3])
        more = f" and {len(found) - 3} more" if len(found) > 3 else ""
        raise ConfigError(
            f"output_dir {out} holds another run ({names}{more}): use --resume last to continue "
            "it, another output_dir, or --overwrite to replace it"
        )
    shutil.rmtree(checkpoint_dir(out), ignore_errors=True)
    for name in run_files:
        (out / name).unlink(missing_ok=True)
