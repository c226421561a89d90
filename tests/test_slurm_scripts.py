"""The sbatch scripts without a cluster: they parse, and slurm/common.sh maps an allocation to the
trainer's layout and its exit statuses to a requeue (srun and scontrol replaced by stubs)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((REPO / "slurm").glob("*.sh")) + sorted((REPO / "slurm").glob("*.sbatch"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse(script):
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0


def _common(tmp_path: Path, body: str, **env: str) -> subprocess.CompletedProcess:
    """Run `body` after sourcing common.sh, with stub srun (exit $SRUN_STATUS) and scontrol."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    srun = (
        '#!/bin/bash\necho "srun $*"\n[[ -n $MARK ]] && touch "$SSL_BENTHIC_INTERRUPTED"\n'
        '[[ -n $FIRST_FAILURE ]] && echo "$FIRST_FAILURE" > "$SSL_BENTHIC_FAILED"\n'
    )
    (bin_dir / "srun").write_text(srun + "exit ${SRUN_STATUS:-0}\n")
    (bin_dir / "scontrol").write_text('#!/bin/bash\necho "scontrol $*"\n')
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    script = f'source "{REPO}/slurm/common.sh"\n{body}\n'
    full = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SSL_BENTHIC_PYTHON": "/bin/true",
        "SLURM_JOB_ID": "42",
        "SLURM_NTASKS_PER_NODE": "2",
        "SLURM_JOB_NUM_NODES": "3",
        "TMPDIR": str(tmp_path),
        **env,
    }
    return subprocess.run(["bash", "-c", script], env=full, capture_output=True, text=True)


def test_the_allocation_sets_accelerator_and_layout(tmp_path):
    show = 'ssl_benthic_setup; echo "${TRAINER_ARGS[*]}"'
    cpu = _common(tmp_path, show)
    assert cpu.stdout.splitlines()[-1] == (
        "trainer.accelerator=cpu trainer.strategy=ddp trainer.devices=2 trainer.num_nodes=3"
    )
    gpu = _common(tmp_path, show, SLURM_GPUS_ON_NODE="2", SLURM_NTASKS_PER_NODE="2(x3)")
    assert gpu.stdout.splitlines()[-1].startswith(
        "trainer.accelerator=gpu trainer.strategy=ddp trainer.devices=2"
    )
    wrong = _common(tmp_path, show, SLURM_GPUS_ON_NODE="8")
    assert wrong.returncode == 2 and "8 GPUs and 2 tasks per node" in wrong.stderr
    forced = _common(tmp_path, show, SLURM_GPUS_ON_NODE="8", SSL_BENTHIC_ACCELERATOR="cpu")
    assert "trainer.accelerator=cpu" in forced.stdout


@pytest.mark.parametrize(
    ("status", "saved", "requeued"),
    [
        (0, False, False),
        (143, True, True),
        (143, False, False),
        (2, False, False),
        (1, False, False),
    ],
)
def test_only_a_run_that_saved_on_sigterm_is_requeued(tmp_path, status, saved, requeued):
    """143 without the run's word for it: a bad config on rank 0, its peer killed by srun."""
    mark = {"MARK": "1"} if saved else {}
    done = _common(tmp_path, "ssl_benthic_srun python -m x", SRUN_STATUS=str(status), **mark)
    assert done.returncode == status
    assert ("scontrol requeue 42" in done.stdout) == requeued
    assert not (tmp_path / "ssl-benthic-interrupted-42").exists()


def test_a_failed_job_exits_with_the_first_failure_not_srun_highest(tmp_path):
    """Rank 0 fails on a bad config (2); srun kills its peer (143) and reports 143."""
    done = _common(tmp_path, "ssl_benthic_srun python -m x", SRUN_STATUS="143", FIRST_FAILURE="2")
    assert done.returncode == 2
    assert "scontrol requeue" not in done.stdout
    assert not (tmp_path / "ssl-benthic-failed-42").exists()
