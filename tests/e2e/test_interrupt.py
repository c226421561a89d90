"""Interrupted runs, with real processes and real signals: SIGTERM (SLURM's preemption and time-limit
signal) saves a resumable checkpoint and exits 143 with how to resume; a SIGKILLed stage-2 run resumes
from its last epoch checkpoint; either way the resumed run ends with the weights of an uninterrupted
one. Also: a second run into a folder holding a run is refused, never versioned as last-v1.ckpt."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from fixtures.finetune import make_cfg
from fixtures.pretrain import Crash, make_shards, tiny_config

from hml_finetune import cli as hml_cli
from hml_finetune.finetune import train as hml_train
from hml_finetune.finetune.train import run_finetune
from ssl_benthic import cli as ssl_cli
from ssl_benthic.core.config import save_config
from ssl_benthic.core.errors import ConfigError, Interrupted
from ssl_benthic.data.sample.make_sample import make_sample
from ssl_benthic.pretrain.run import pretrain
from ssl_benthic.weights.export import export_backbone

CLI = {"pretrain": "ssl_benthic.cli", "train": "hml_finetune.cli"}


def _command(stage: str, config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", CLI[stage], stage, "--config", str(config), *extra]


def _run(stage: str, config: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        _command(stage, config, *extra), capture_output=True, text=True, timeout=300
    )


def _signal_when(
    stage: str, config: Path, ready: Path, sig: int
) -> tuple[subprocess.CompletedProcess, float]:
    """Start a run, send `sig` as soon as `ready` exists; (the finished process, seconds waited)."""
    proc = subprocess.Popen(
        _command(stage, config), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    start = time.monotonic()
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() - start > 240:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"{ready} never appeared (rc {proc.returncode}):\n{err[-3000:]}")
        time.sleep(0.02)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=240)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), start


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    assert differing == []


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shards(tmp_path_factory.mktemp("shards") / "unlabelled", n=32)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("labelled")
    make_sample(out, seed=0, n_unlabelled=0, n_labelled=60, size=32)
    return out


def _pretrain_yaml(shards: Path, out: Path, path: Path) -> Path:
    cfg = tiny_config(
        "byol",
        shards,
        out,
        data={"epoch_samples": 32},
        trainer={"max_epochs": -1, "max_steps": 40, "checkpoint_every_n_steps": 2},
    )
    return save_config(cfg, path)


def test_pretrain_sigterm_saves_exits_143_and_resumes_exactly(unlabelled, tmp_path):
    config = _pretrain_yaml(unlabelled, tmp_path / "cut", tmp_path / "cut.yaml")
    first = tmp_path / "cut" / "checkpoints" / "step-00000002.ckpt"
    done, _ = _signal_when("pretrain", config, first, signal.SIGTERM)
    assert done.returncode == 143, done.stderr[-2000:]
    last = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    step = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    assert 2 <= step < 40  # saved where it stopped, mid-epoch in general
    assert "litlogger" not in done.stdout + done.stderr  # upstream noise is silenced
    assert "LeafSpec" not in done.stdout + done.stderr
    message = done.stderr.strip().splitlines()[-1]
    assert message.startswith(f"interrupted by SIGTERM at step {step}: saved {last}")
    assert message.endswith(f"ssl-benthic pretrain --config {config} --resume last")

    resumed = _run("pretrain", config, "--resume", "last")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    whole = _run("pretrain", _pretrain_yaml(unlabelled, tmp_path / "whole", tmp_path / "w.yaml"))
    assert whole.returncode == 0, whole.stderr[-2000:]
    _assert_same(_weights(last), _weights(tmp_path / "whole" / "checkpoints" / "last.ckpt"))


def _finetune_yaml(shards: Path, out: Path, path: Path, mode: str) -> Path:
    """Stage 2 with every source of randomness on: shuffling, augmentation, dropout."""
    cfg = make_cfg(
        shards,
        out,
        f"mode={mode}",
        "trainer.max_epochs=8",
        "trainer.checkpoint_every_n_epochs=1",
        "data.shuffle=true",
        "data.shuffle_buffer=16",
        "heads.dropout=0.2",
        "heads.hidden=[16]",
    )
    return save_config(cfg, path)


def test_stage2_killed_mid_run_resumes_to_the_same_weights(labelled, tmp_path):
    """SIGKILL after an epoch checkpoint; `--resume last` ends where an uninterrupted run does.
    It used to save no checkpoint at all (Lightning 2.6 skips save_last when save_top_k=0)."""
    config = _finetune_yaml(labelled, tmp_path / "cut", tmp_path / "cut.yaml", "finetune")
    last = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    done, _ = _signal_when("train", config, last, signal.SIGKILL)
    assert done.returncode == -signal.SIGKILL
    assert not (tmp_path / "cut" / "model.ckpt").exists()  # really interrupted
    resumed = _run("train", config, "--resume", "last")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    whole = _finetune_yaml(labelled, tmp_path / "whole", tmp_path / "w.yaml", "finetune")
    assert _run("train", whole).returncode == 0
    _assert_same(
        _weights(tmp_path / "cut" / "model.ckpt"), _weights(tmp_path / "whole" / "model.ckpt")
    )


class SigtermAt(pl.Callback):
    """Sends this process a real SIGTERM after training step `step`."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def test_stage2_sigterm_mid_epoch_saves_and_resumes_exactly(labelled, tmp_path):
    """The cached linear probe, stopped by SIGTERM in the middle of its third epoch (4 steps
    per epoch): a mid-epoch last.ckpt, `Interrupted`; the resumed run's weights are exact."""
    cfg = make_cfg(
        labelled,
        tmp_path / "cut",
        "data.shuffle=true",
        "heads.hidden=[16]",
        "heads.dropout=0.2",
        "trainer.max_epochs=4",
    )
    with pytest.raises(Interrupted, match=r"interrupted by SIGTERM at step 10: saved .*last\.ckpt"):
        run_finetune(cfg, callbacks=[SigtermAt(10)])
    assert (
        torch.load(tmp_path / "cut/checkpoints/last.ckpt", weights_only=True)["global_step"] == 10
    )
    assert not (tmp_path / "cut" / "model.ckpt").exists()
    run_finetune(cfg, resume="last")
    whole = make_cfg(
        labelled,
        tmp_path / "whole",
        "data.shuffle=true",
        "heads.hidden=[16]",
        "heads.dropout=0.2",
        "trainer.max_epochs=4",
    )
    run_finetune(whole)
    _assert_same(
        _weights(tmp_path / "cut" / "model.ckpt"), _weights(tmp_path / "whole" / "model.ckpt")
    )


def test_train_cli_says_how_to_resume(monkeypatch, capsys, tmp_path):
    def interrupted(*args, **kwargs):
        raise Interrupted("interrupted by SIGTERM at step 3: saved X")

    monkeypatch.setattr(hml_train, "run_finetune", interrupted)
    monkeypatch.setenv("SSL_BENTHIC_INTERRUPTED", str(tmp_path / "mark"))  # as the sbatch scripts
    config = tmp_path / "c.yaml"
    config.write_text("seed: 1\n")
    assert hml_cli.main(["train", "--config", str(config), "seed=2"]) == 143
    assert (tmp_path / "mark").is_file()  # the batch script's cue to requeue
    assert capsys.readouterr().err.strip() == (
        f"interrupted by SIGTERM at step 3: saved X: hml-finetune train --config {config} "
        "seed=2 --resume last"
    )


def test_a_second_run_into_a_run_folder_is_refused(unlabelled, tmp_path):
    """It used to save last-v1.ckpt beside the first run's last.ckpt and rewrite config.yaml."""
    cfg = tiny_config("byol", unlabelled, tmp_path / "run")
    pretrain(cfg)
    before = (tmp_path / "run" / "checkpoints" / "last.ckpt").read_bytes()
    with pytest.raises(ConfigError, match=r"holds another run .*--resume last.*--overwrite"):
        pretrain(cfg)
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").read_bytes() == before
    pretrain(cfg, overwrite=True)
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["last.ckpt", "step-00000002.ckpt", "step-00000004.ckpt"]
    with pytest.raises(ConfigError, match="contradict"):
        pretrain(cfg, resume="last", overwrite=True)


def test_a_second_stage2_run_into_a_run_folder_is_refused(labelled, tmp_path):
    cfg = make_cfg(labelled, tmp_path / "ft", "trainer.max_epochs=1")
    run_finetune(cfg)
    model = (tmp_path / "ft" / "model.ckpt").read_bytes()
    with pytest.raises(ConfigError, match=r"holds another run \(checkpoints/last\.ckpt, model"):
        run_finetune(cfg)
    assert (tmp_path / "ft" / "model.ckpt").read_bytes() == model
    run_finetune(cfg, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "ft" / "checkpoints").iterdir()) == ["last.ckpt"]


def test_cli_errors_are_one_line_with_status_2(unlabelled, tmp_path):
    config = save_config(
        tiny_config("byol", unlabelled / "typo", tmp_path / "run"), tmp_path / "c.yaml"
    )
    done = _run("pretrain", config)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: data.shards: shard folder '{unlabelled / 'typo'}' not found"
    ]
    assert "Traceback" in _run("pretrain", config, "--debug").stderr


def test_relative_paths_name_the_path_tried(unlabelled, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config("byol", Path("shards/nope"), tmp_path / "run")
    with pytest.raises(ConfigError) as err:
        pretrain(cfg)
    assert str(err.value) == (
        f"data.shards: shard folder 'shards/nope' not found (tried {tmp_path}/shards/nope, "
        f"relative to the working directory {tmp_path})"
    )
    assert not os.path.exists(tmp_path / "run")  # nothing was set up


def test_resuming_a_finished_run_rewrites_nothing_and_export_flags_unfinished(
    unlabelled, tmp_path, capsys
):
    """What keeps `make demo` honest: the demo always resumes its pretraining run; a finished run
    stays byte-identical (so neither the export nor the comparison reruns), an unfinished one
    trains on, and exporting an unfinished checkpoint warns."""
    cfg = tiny_config("byol", unlabelled, tmp_path / "run", trainer={"max_steps": 4})
    with pytest.raises(RuntimeError, match="crash"):  # like a killed demo, after its step-2 save
        pretrain(cfg, extra_callbacks=[Crash(3)])
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    with pytest.warns(
        UserWarning, match=r"at step 2 of its recipe's max_steps 4: exporting an unfinished"
    ):
        export_backbone(last, tmp_path / "export")
    config = save_config(cfg, tmp_path / "c.yaml")
    assert ssl_cli.main(["pretrain", "--config", str(config), "--resume", "last"]) == 0
    assert torch.load(last, weights_only=True)["global_step"] == 4
    before = (last.read_bytes(), last.stat().st_mtime_ns)
    capsys.readouterr()
    assert ssl_cli.main(["pretrain", "--config", str(config), "--resume", "last"]) == 0
    assert "nothing to train" in capsys.readouterr().out
    assert (last.read_bytes(), last.stat().st_mtime_ns) == before


def test_make_demo_resumes_an_existing_pretraining_run(tmp_path):
    root = Path(__file__).resolve().parents[2]
    dry = ["make", "-n", "--no-print-directory", "-C", str(root), "demo", f"DEMO={tmp_path}"]
    fresh = subprocess.run(dry, capture_output=True, text=True).stdout  # the sub-make fails: -n
    pretrain_line = next(line for line in fresh.splitlines() if " pretrain " in line)
    assert "--resume" not in pretrain_line
    (tmp_path / "byol" / "checkpoints").mkdir(parents=True)
    (tmp_path / "byol" / "checkpoints" / "step-00000040.ckpt").write_bytes(b"x")
    again = subprocess.run(dry, capture_output=True, text=True).stdout
    assert next(line for line in again.splitlines() if " pretrain " in line).endswith(
        "--resume last"
    )
