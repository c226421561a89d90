"""Training engine: exact resume (BYOL, MoCo v2 with its queue, teacher-free methods, MAE's masks),
DDP on 2 CPUs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from fixtures.pretrain import TINY_PARAMS, Crash, make_shards, tiny_config

from ssl_benthic.core.config import ConfigError
from ssl_benthic.pretrain.methods.mocov2 import MoCoV2
from ssl_benthic.pretrain.run import check_queue_size, pretrain


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shards(tmp_path_factory.mktemp("shards") / "unlabelled", n=32, per_shard=4)


def _crash_after(name: str, shards: Path, out: Path, k: int) -> None:
    cfg = tiny_config(name, shards, out, trainer={"checkpoint_every_n_steps": 1})
    with pytest.raises(RuntimeError, match="simulated crash"):
        pretrain(cfg, extra_callbacks=[Crash(k)])
    assert (out / "checkpoints" / f"step-{k:08d}.ckpt").is_file()


class FinalState(pl.Callback):
    """Keeps the module's state dict, loss state and optimiser state at the end of training."""

    def on_train_end(self, trainer, pl_module) -> None:
        self.step = trainer.global_step
        self.state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        self.extra = {k: v.detach().clone() for k, v in pl_module.extra_state().items()}
        self.optim = trainer.optimizers[0].state_dict()["state"]


def _differing(a: dict, b: dict) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


@pytest.mark.parametrize(
    ("name", "k"),
    [
        ("byol", 1),
        ("byol", 2),
        ("mocov2", 1),
        ("barlowtwins", 1),
        ("simclr", 1),
        ("simsiam", 2),
        ("mae", 1),
    ],
)
def test_resume_equals_an_uninterrupted_run(
    name: str, k: int, shards: Path, tmp_path: Path
) -> None:
    """2 epochs of 2 steps; crash after step k (1: mid-epoch, 2: at the epoch's end), resume 'last'."""
    full = FinalState()
    pretrain(tiny_config(name, shards, tmp_path / "full"), extra_callbacks=[full])
    _crash_after(name, shards, tmp_path / "part", k)
    resumed = FinalState()
    pretrain(tiny_config(name, shards, tmp_path / "part"), resume="last", extra_callbacks=[resumed])
    assert full.step == resumed.step == 4
    assert _differing(full.state, resumed.state) == []
    assert _differing(full.extra, resumed.extra) == []
    for i, s in full.optim.items():
        assert _differing(s, resumed.optim[i]) == []


def test_resume_restores_the_moco_queue(shards: Path, tmp_path: Path, monkeypatch) -> None:
    """Negative control: without restoring the memory bank the resumed run diverges."""
    full = FinalState()
    pretrain(tiny_config("mocov2", shards, tmp_path / "full"), extra_callbacks=[full])
    _crash_after("mocov2", shards, tmp_path / "part", 2)
    monkeypatch.setattr(MoCoV2, "load_extra_state", lambda self, state: None)
    resumed = FinalState()
    pretrain(
        tiny_config("mocov2", shards, tmp_path / "part"), resume="last", extra_callbacks=[resumed]
    )
    assert "memory_bank" in _differing(full.extra, resumed.extra)
    assert _differing(full.state, resumed.state) != []


def test_resume_without_a_checkpoint_fails_clearly(shards: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--resume last: checkpoint not found at .*last\.ckpt"):
        pretrain(tiny_config("byol", shards, tmp_path / "none"), resume="last")


class RecordRank(pl.Callback):
    """Writes the shards this rank read and its final weights to output_dir (ddp_spawn children)."""

    def __init__(self, out: str) -> None:
        self.out, self.urls = out, set()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.urls |= {Path(m["__url__"]).name for m in batch[1]}

    def on_train_end(self, trainer, pl_module) -> None:
        r = trainer.global_rank
        Path(self.out, f"urls{r}.json").write_text(json.dumps(sorted(self.urls)))
        params = {k: v.detach().cpu() for k, v in pl_module.named_parameters()}
        params.update({k: v.cpu() for k, v in pl_module.extra_state().items()})
        torch.save(params, Path(self.out, f"params{r}.pt"))


@pytest.mark.slow
def test_ddp_two_cpu_processes(shards: Path, tmp_path: Path) -> None:
    """MoCo v2: besides DDP's gradient all-reduce it gathers keys for the queue and shuffles BN batches."""
    out = tmp_path / "run"
    out.mkdir()
    cfg = tiny_config(
        "mocov2",
        shards,
        out,
        data={"epoch_samples": 16},
        trainer={"devices": 2, "strategy": "ddp_spawn", "max_epochs": 1},
    )
    pretrain(cfg, extra_callbacks=[RecordRank(str(out))])
    urls = [set(json.loads((out / f"urls{r}.json").read_text())) for r in (0, 1)]
    assert urls[0] and urls[1] and not urls[0] & urls[1]
    p0, p1 = (torch.load(out / f"params{r}.pt", weights_only=True) for r in (0, 1))
    assert _differing(p0, p1) == []  # students, teachers and (MoCo) the gathered queue


def test_a_queue_as_large_as_the_dataset_is_warned_about(shards: Path, tmp_path: Path) -> None:
    # 32 images: a queue of 16 keys or more holds the query's own image as a negative
    def moco(bank: int):
        params = {**TINY_PARAMS["mocov2"], "memory_bank_size": bank}
        return tiny_config("mocov2", shards, tmp_path, method={"name": "mocov2", "params": params})

    message = check_queue_size(moco(16))
    assert message is not None and "memory_bank_size 16" in message and "32 images" in message
    assert check_queue_size(moco(8)) is None
    assert check_queue_size(tiny_config("byol", shards, tmp_path)) is None  # no queue
