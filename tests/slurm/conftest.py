"""The SLURM tests' cluster and helpers: real `sbatch` jobs on a one-node cluster on this machine.

SSL_BENTHIC_SLURM=start starts one with slurm/local_cluster.sh for the session and stops it after
(`make test-slurm`); otherwise a running one is used (SLURM_CONF, or the local cluster's state folder),
and the tests are skipped when there is none. Jobs run this checkout's code with this Python
(PYTHONPATH, SSL_BENTHIC_PYTHON: sbatch passes the environment on to the job).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from ssl_benthic.data.sample.make_sample import make_sample

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "slurm" / "local_cluster.sh"
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "DEADLINE"}


def _cluster_env() -> dict[str, str]:
    out = subprocess.run([str(CLUSTER), "env"], capture_output=True, text=True, check=True).stdout
    return {"SLURM_CONF": out.strip().split("=", 1)[1]}


@pytest.fixture(scope="session")
def slurm_env() -> Iterator[dict[str, str]]:
    """The environment of the jobs: this checkout first on the path, this Python, the cluster."""
    start = os.environ.get("SSL_BENTHIC_SLURM") == "start"
    if start:
        subprocess.run([str(CLUSTER), "start"], check=True)
    env = dict(os.environ)
    if start or "SLURM_CONF" not in env:
        env.update(_cluster_env())
    if shutil.which("sbatch") is None or subprocess.run(["sinfo"], env=env).returncode != 0:
        pytest.skip("no SLURM cluster (make test-slurm starts one: SSL_BENTHIC_SLURM=start)")
    env.update(
        PYTHONPATH=str(REPO),
        SSL_BENTHIC_PYTHON=sys.executable,
        HF_HUB_OFFLINE="1",
        PYTHONHASHSEED="0",
    )
    yield env
    if start:
        subprocess.run([str(CLUSTER), "stop"], check=True)


class Jobs:
    """sbatch / scontrol / scancel on the test cluster, from the repository root."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs, self.submitted = env, logs, []

    def submit(self, name: str, script: str, *args: str, opts: tuple = (), **env: str) -> str:
        """Submit slurm/`script` with 2 CPU tasks on one node; returns the job id."""
        command = [
            "sbatch",
            "--parsable",
            f"--job-name={name}",
            f"--output={self.logs / name}.out",
            "--nodes=1",
            "--ntasks-per-node=2",
            "--gpus-per-node=0",
            "--cpus-per-task=1",
            "--mem=2000",
            "--time=10",
            *opts,
            f"slurm/{script}",
            *args,
        ]
        done = subprocess.run(
            command, cwd=REPO, env={**self.env, **env}, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        self.submitted.append(done.stdout.strip().split(";")[0])
        return self.submitted[-1]

    def show_all(self, job: str) -> list[dict[str, str]]:
        """The scontrol records of a job (one per task of an array)."""
        text = subprocess.run(
            ["scontrol", "show", "job", "-o", job], env=self.env, capture_output=True, text=True
        ).stdout
        return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in text.splitlines() if line]

    def show(self, job: str) -> dict[str, str]:
        return self.show_all(job)[0]

    def scontrol(self, *args: str) -> None:
        subprocess.run(["scontrol", *args], env=self.env, check=True)

    def scancel(self, *args: str) -> None:
        subprocess.run(["scancel", *args], env=self.env, check=True)

    def wait_for(self, path: Path, job: str, timeout: float = 240) -> None:
        """Until `path` exists (fails when the job ends first)."""
        end = time.monotonic() + timeout
        while not path.exists():
            state = self.show(job).get("JobState")
            assert state not in ENDED, f"job {job} ended ({state}) before {path} appeared"
            assert time.monotonic() < end, f"{path} never appeared"
            time.sleep(0.2)

    def wait_end(self, job: str, timeout: float = 400) -> list[dict[str, str]]:
        """Until the job (every task of an array) has ended; the scontrol records."""
        end = time.monotonic() + timeout
        while True:
            info = self.show_all(job)
            if all(i.get("JobState") in ENDED for i in info):
                return info
            assert time.monotonic() < end, f"job {job}: {[i.get('JobState') for i in info]}"
            time.sleep(1)

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.out").read_text(errors="replace")  # a bar cut mid-character


@pytest.fixture()
def jobs(slurm_env: dict[str, str], tmp_path: Path) -> Iterator[Jobs]:
    """Submits jobs for one test; cancels those still queued or running when it ends."""
    jobs = Jobs(slurm_env, tmp_path)
    yield jobs
    if jobs.submitted:
        subprocess.run(["scancel", *jobs.submitted], env=slurm_env)


@pytest.fixture(scope="session")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny sample at 32 px: 64 unlabelled images in 8 shards, 72/24/24 labelled."""
    out = tmp_path_factory.mktemp("slurm-sample")
    make_sample(out, seed=0, n_unlabelled=64, n_labelled=120, size=32)
    return out


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def differing(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]
