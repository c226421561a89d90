"""The command's exit status: 2 for bad input, 143 for SIGTERM, and the files the sbatch scripts
read (the first failure's status; the word that a run was interrupted)."""

from __future__ import annotations

import os
import subprocess
import sys

from ssl_benthic.cli import FAILED_ENV, INTERRUPTED_ENV, main


def test_a_bad_key_exits_2_and_the_first_failure_is_kept(tmp_path, monkeypatch, capsys):
    """Two ranks fail in turn: the file keeps the first status (a later one does not overwrite)."""
    status = tmp_path / "failed"
    monkeypatch.setenv(FAILED_ENV, str(status))
    config = tmp_path / "missing.yaml"
    assert main(["pretrain", "--config", str(config)]) == 2
    assert "missing.yaml" in capsys.readouterr().err
    assert status.read_text() == "2\n"
    status.write_text("1\n")
    assert main(["pretrain", "--config", str(config)]) == 2
    assert status.read_text() == "1\n"


def test_no_status_file_without_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv(FAILED_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["pretrain", "--config", "missing.yaml"]) == 2
    assert list(tmp_path.iterdir()) == []


def test_a_sigterm_outside_training_exits_143_and_asks_for_a_requeue(tmp_path):
    """A command's work outside a fit (building, caching features, scoring) stops on SIGTERM with
    status 143 and the file the sbatch scripts requeue on; the default action would kill it
    unseen (status -15, no file: the job is not requeued)."""
    (tmp_path / "slow_command.py").write_text(
        "import os, signal, time\n"
        "def run(args):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(30)\n"
        "    return 0\n"
    )
    code = (
        "import argparse, sys\n"
        "from ssl_benthic.cli import run_handler\n"
        "sys.exit(run_handler(argparse.Namespace(handler='slow_command:run')))\n"
    )
    mark = tmp_path / "interrupted"
    env = {**os.environ, INTERRUPTED_ENV: str(mark)}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 143, done.stderr
    assert "interrupted by SIGTERM" in done.stderr
    assert mark.is_file()
