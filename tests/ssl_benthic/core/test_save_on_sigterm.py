"""SaveOnSigterm in one process: a SIGTERM only sets a flag and training goes on to the step
boundary; the stop is what the ranks' reduction decides, so a rank that got no signal stops at the
same step as the one that did, saves and raises; the callback pickles (ddp_spawn) and is last."""

from __future__ import annotations

import os
import pickle
import signal

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException
from torch.utils.data import DataLoader, TensorDataset

from ssl_benthic.core.checkpoints import RunCheckpoint, SaveOnSigterm, checkpoint_dir
from ssl_benthic.core.errors import Interrupted, Terminated
from ssl_benthic.core.signals import sigterm_raises
from ssl_benthic.core.trainer import fit, make_trainer


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.steps_run = 0

    def training_step(self, batch, batch_idx):
        self.steps_run += 1
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(40, 2)), batch_size=4)


class Ranks(pl.Callback):
    """Stands for the other ranks: from step `other_at` on, another rank has had a SIGTERM, so the
    reduction (any rank's flag) says stop; at step `own_at` this process gets a real SIGTERM."""

    def __init__(self, other_at: int | None, own_at: int | None) -> None:
        self.other_at, self.own_at, self.reduced = other_at, own_at, []

    def on_train_start(self, trainer, pl_module) -> None:
        own = trainer.strategy.reduce_boolean_decision

        def reduce(decision: bool, all: bool = True) -> bool:
            other = self.other_at is not None and trainer.global_step >= self.other_at
            self.reduced.append((trainer.global_step, decision, other))
            return own(decision or other, all=all)

        trainer.strategy.reduce_boolean_decision = reduce

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.own_at is not None and trainer.global_step == self.own_at:
            os.kill(os.getpid(), signal.SIGTERM)  # mid-step: the step must still finish


def _fit(tmp_path, ranks: Ranks) -> tuple[pl.Trainer, Tiny]:
    checkpoint = RunCheckpoint(dirpath=checkpoint_dir(tmp_path), filename="last", monitor=None)
    trainer = make_trainer(
        tmp_path,
        checkpoint,
        callbacks=[ranks],
        max_steps=12,
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    model = Tiny()
    trainer.fit(model)
    return trainer, model


def test_another_ranks_sigterm_stops_this_one_at_the_same_step(tmp_path):
    ranks = Ranks(other_at=5, own_at=None)
    with pytest.raises(SIGTERMException):
        _fit(tmp_path, ranks)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 5  # the step the reduction first said stop
    assert [s for s, mine, other in ranks.reduced] == [1, 2, 3, 4, 5]
    assert not any(mine for _, mine, _ in ranks.reduced)  # this rank never had a signal


def test_a_sigterm_mid_step_finishes_the_step_then_stops(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    ranks = Ranks(other_at=None, own_at=3)  # during step 4 (global_step 3 when it starts)
    with pytest.raises(SIGTERMException):
        _fit(tmp_path, ranks)
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    assert ranks.reduced[-1] == (4, True, False)
    assert signal.getsignal(signal.SIGTERM) == before  # fit ended: the handler from before is back


def test_no_signal_trains_to_the_end(tmp_path):
    trainer, model = _fit(tmp_path, Ranks(None, None))
    assert (trainer.global_step, model.steps_run) == (12, 12)
    assert (
        torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 12
    )


def test_pickles_without_its_handler_and_is_the_last_callback(tmp_path):
    guard = SaveOnSigterm(tmp_path)
    guard._previous = lambda *a: None  # a handler that does not pickle
    copy = pickle.loads(pickle.dumps(guard))
    assert copy.path == guard.path and copy._previous is None
    checkpoint = RunCheckpoint(dirpath=checkpoint_dir(tmp_path), filename="last", monitor=None)
    trainer = make_trainer(tmp_path, checkpoint, csv=False, callbacks=[Ranks(None, None)])
    assert isinstance(trainer.callbacks[-1], SaveOnSigterm)
    assert trainer.callbacks[-2] is checkpoint


class SigtermAt(pl.Callback):
    """Sends this process a SIGTERM from one hook: `setup` (before the fit's first step, before
    Lightning installs its handler) or `on_train_end` (after the last step)."""

    def __init__(self, hook: str) -> None:
        self.hook = hook

    def setup(self, trainer, pl_module, stage) -> None:
        if self.hook == "setup":
            os.kill(os.getpid(), signal.SIGTERM)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.hook == "on_train_end":
            os.kill(os.getpid(), signal.SIGTERM)


def _fit_under_the_cli(tmp_path, hook: str) -> None:
    """`core.trainer.fit` as the CLI runs it: with SIGTERM raising outside the fit."""
    checkpoint = RunCheckpoint(dirpath=checkpoint_dir(tmp_path), filename="last", monitor=None)
    trainer = make_trainer(
        tmp_path,
        checkpoint,
        callbacks=[SigtermAt(hook)],
        max_steps=12,
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with sigterm_raises():
        fit(trainer, model=Tiny())


def test_a_sigterm_before_the_first_step_stops_after_it_not_as_a_failure(tmp_path):
    """Raised inside the fit, the CLI's Terminated would become Lightning's exit 1 (a failure,
    not requeued); for the whole fit a SIGTERM only sets the flag, and the first step stops it."""
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted, match="at step 1"):
        _fit_under_the_cli(tmp_path, "setup")
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 1
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_sigterm_after_the_last_step_is_raised_once_the_fit_ends(tmp_path):
    with pytest.raises(Terminated) as caught:
        _fit_under_the_cli(tmp_path, "on_train_end")
    assert "after the last step" in caught.value.kept
    assert (
        torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 12
    )
