"""The sbatch scripts on a real one-node SLURM cluster (`make test-slurm`): 2-rank DDP jobs of both
stages preempted by SIGTERM, requeued by the script and finished, bit-identical to uninterrupted twins;
a bad config fails without requeue; the time-limit signal saves, requeues and finishes; a compare grid
spread over a job array covers every cell and writes the report."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import Jobs, differing, weights
from fixtures.finetune import make_cfg
from fixtures.pretrain import tiny_config

from ssl_benthic.core.config import save_config

pytestmark = pytest.mark.slurm


def _pretrain_yaml(sample: Path, path: Path, max_steps: int = 6) -> Path:
    """BYOL at 32 px, batch 8 per rank: 4 steps an epoch on 2 ranks, a checkpoint every 2 steps;
    one loader worker per rank (it must ignore the job's SIGTERM)."""
    cfg = tiny_config(
        "byol",
        sample / "unlabelled",
        path.parent / "unused",
        data={"batch_size": 8, "epoch_samples": 64, "num_workers": 1, "shuffle_buffer": 16},
        trainer={"max_epochs": -1, "max_steps": max_steps, "checkpoint_every_n_steps": 2},
    )
    return save_config(cfg, path)


def _interrupted_step(log: str) -> int:
    steps = {int(s) for s in re.findall(r"interrupted by SIGTERM at step (\d+): saved", log)}
    assert len(steps) == 1, log[-3000:]  # every rank stopped at the same step
    return steps.pop()


def _preempt(jobs: Jobs, job: str, ready: Path) -> None:
    """`scancel --signal=TERM` (what preemption sends) once `ready` is on disk."""
    jobs.wait_for(ready, job)
    jobs.scancel("--signal=TERM", job)


def _assert_requeued_once(jobs: Jobs, job: str, name: str) -> str:
    info = jobs.wait_end(job)[0]
    log = jobs.log(name)
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), log[-3000:]
    assert info["Restarts"] == "1", log[-3000:]
    assert f"requeueing job {job}" in log
    assert "Traceback" not in log  # neither the ranks nor their loader workers
    return log


def test_pretrain_preempted_on_2_ranks_resumes_bit_identical(jobs, sample, tmp_path):
    config = _pretrain_yaml(sample, tmp_path / "byol.yaml")
    cut = jobs.submit("cut", "pretrain.sbatch", str(config), RUN_DIR=str(tmp_path / "cut"))
    whole = jobs.submit("whole", "pretrain.sbatch", str(config), RUN_DIR=str(tmp_path / "whole"))
    _preempt(jobs, cut, tmp_path / "cut" / "checkpoints" / "step-00000002.ckpt")
    log = _assert_requeued_once(jobs, cut, "cut")
    assert 2 <= _interrupted_step(log) < 6
    assert "pretraining done at step 6" in log
    assert jobs.wait_end(whole)[0]["JobState"] == "COMPLETED", jobs.log("whole")[-3000:]
    last = Path("checkpoints") / "last.ckpt"
    a, b = weights(tmp_path / "cut" / last), weights(tmp_path / "whole" / last)
    assert len(a) > 100  # student, teacher, heads, BatchNorm buffers
    assert differing(a, b) == []


def _finetune_yaml(sample: Path, path: Path) -> Path:
    """Fine-tuning (augmentation, shuffling, dropout): 72 images, batch 8 per rank, 4 steps an
    epoch on 2 ranks, 3 epochs, last.ckpt at every epoch end."""
    cfg = make_cfg(
        sample,
        path.parent / "unused",
        "mode=finetune",
        "data.augment=true",
        "data.shuffle=true",
        "data.shuffle_buffer=16",
        "heads.dropout=0.2",
        "heads.hidden=[16]",
        "trainer.max_epochs=3",
        "trainer.checkpoint_every_n_epochs=1",
    )
    return save_config(cfg, path)


def test_finetune_preempted_on_2_ranks_resumes_bit_identical(jobs, sample, tmp_path):
    config = _finetune_yaml(sample, tmp_path / "ft.yaml")
    cut = jobs.submit("cut", "finetune.sbatch", str(config), RUN_DIR=str(tmp_path / "cut"))
    whole = jobs.submit("whole", "finetune.sbatch", str(config), RUN_DIR=str(tmp_path / "whole"))
    _preempt(jobs, cut, tmp_path / "cut" / "checkpoints" / "last.ckpt")  # after epoch 1
    log = _assert_requeued_once(jobs, cut, "cut")
    assert 4 <= _interrupted_step(log) < 12
    assert jobs.wait_end(whole)[0]["JobState"] == "COMPLETED", jobs.log("whole")[-3000:]
    a, b = (weights(tmp_path / run / "model.ckpt") for run in ("cut", "whole"))
    assert differing(a, b) == []
    metrics = [
        json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("cut", "whole")
    ]
    assert metrics[0]["heads"] == metrics[1]["heads"]


def test_a_bad_config_fails_and_is_not_requeued(jobs, sample, tmp_path):
    config = _pretrain_yaml(sample, tmp_path / "byol.yaml")
    job = jobs.submit("bad", "pretrain.sbatch", str(config), "trainer.max_stepz=3")
    info = jobs.wait_end(job)[0]
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("FAILED", "2:0", "0")
    assert "unknown key 'trainer.max_stepz'" in jobs.log("bad")
    assert "requeueing" not in jobs.log("bad")


def test_the_time_limit_signal_saves_requeues_and_finishes(jobs, sample, tmp_path):
    """--signal=TERM@60: SLURM's own warning before the time limit. The run is made to last until
    the signal comes (max_steps far away), its time limit is cut to 65 s once it trains; once
    requeued, the limit is restored and the recipe's budget set 2 steps past the saved step."""
    config = _pretrain_yaml(sample, tmp_path / "byol.yaml", max_steps=100_000)
    run = tmp_path / "run"
    job = jobs.submit(
        "limit", "pretrain.sbatch", str(config), opts=("--signal=TERM@60",), RUN_DIR=str(run)
    )
    jobs.wait_for(run / "checkpoints" / "step-00000002.ckpt", job)
    minutes, seconds = (int(x) for x in jobs.show(job)["RunTime"].split(":")[-2:])
    limit = minutes * 60 + seconds + 65
    jobs.scontrol("update", f"JobId={job}", f"TimeLimit={limit // 60}:{limit % 60:02d}")
    deadline = time.monotonic() + 150
    while jobs.show(job)["Restarts"] == "0":  # the signal comes within 30 s (slurmctld's period)
        assert time.monotonic() < deadline, jobs.log("limit")[-3000:]
        time.sleep(0.5)
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    raw = yaml.safe_load(config.read_text())
    raw["trainer"]["max_steps"] = saved + 2
    config.write_text(yaml.safe_dump(raw))
    jobs.scontrol("update", f"JobId={job}", "TimeLimit=10")
    log = _assert_requeued_once(jobs, job, "limit")
    assert _interrupted_step(log) == saved
    assert f"pretraining done at step {saved + 2}" in log


def test_compare_array_covers_every_cell_and_writes_the_report(jobs, sample, tmp_path):
    """4 cells (2 losses x 2 seeds, linear probes on shared cached features) over 3 array tasks."""
    base = save_config(
        make_cfg(sample, tmp_path / "unused", "trainer.max_epochs=2"), tmp_path / "b.yaml"
    )
    grid = {
        "base": str(base),
        "starts": [{"name": "random", "weights": "random"}],
        "modes": ["linear"],
        "losses": [
            {"name": "mcloss", "overrides": ["loss.name=mcloss"]},
            {"name": "weighted", "overrides": ["loss.name=weighted"]},
        ],
        "seeds": [0, 1],
        "sample": str(sample),
        "feature_cache": True,
        "output_dir": str(tmp_path / "grid"),
    }
    config = tmp_path / "grid.yaml"
    config.write_text(yaml.safe_dump(grid))
    job = jobs.submit(
        "grid", "compare.sbatch", str(config), opts=("--array=1-3", "--ntasks-per-node=1")
    )
    infos = jobs.wait_end(job)
    assert [i["JobState"] for i in infos] == ["COMPLETED"] * 3
    runs = sorted(p.name for p in (tmp_path / "grid" / "runs").iterdir())
    assert runs == [
        f"random-linear-{loss}-s{seed}" for loss in ("mcloss", "weighted") for seed in (0, 1)
    ]
    assert all((tmp_path / "grid" / "runs" / r / "metrics.json").is_file() for r in runs)
    rows = json.loads((tmp_path / "grid" / "results.json").read_text())  # a row per cell and head
    assert {(r["loss"], r["seed"]) for r in rows} == {
        (x, s) for x in ("mcloss", "weighted") for s in (0, 1)
    }
    assert {r["status"] for r in rows} == {"done"}
    assert (tmp_path / "grid" / "report.md").is_file()
