"""The Trainer and SLURM: outside a job, no notice that `srun` is installed but unused (it used to
print on every run of a machine with SLURM); inside a job step, Lightning's SLURM environment
without its auto-requeue (the sbatch scripts requeue; SIGTERM saves last.ckpt)."""

from __future__ import annotations

import warnings

from lightning_fabric.plugins.environments import slurm as fabric_slurm
from pytorch_lightning.plugins.environments import SLURMEnvironment

from ssl_benthic.core.checkpoints import RunCheckpoint, checkpoint_dir
from ssl_benthic.core.trainer import make_trainer

SLURM_VARS = ("SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_NTASKS_PER_NODE", "SLURM_JOB_NAME")


def _trainer(tmp_path, monkeypatch, **env: str):
    for name in SLURM_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(fabric_slurm.shutil, "which", lambda name: f"/usr/bin/{name}")
    ckpt = RunCheckpoint(dirpath=checkpoint_dir(tmp_path), filename="last", monitor=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = make_trainer(tmp_path, ckpt, csv=False, accelerator="cpu", devices=1)
        SLURMEnvironment.detect()  # as fit and test do again when given no checkpoint path
    return trainer, [str(w.message) for w in caught if "srun" in str(w.message)]


def test_no_srun_notice_outside_a_job(tmp_path, monkeypatch):
    assert _trainer(tmp_path, monkeypatch)[1] == []


def test_the_notice_stays_inside_a_job_run_without_srun(tmp_path, monkeypatch):
    notices = _trainer(tmp_path, monkeypatch, SLURM_JOB_ID="7")[1]
    assert notices and "is available on your system but is not used" in notices[0]


def test_a_job_step_gets_slurm_without_auto_requeue(tmp_path, monkeypatch):
    env = dict(SLURM_JOB_ID="7", SLURM_NTASKS="1", SLURM_NTASKS_PER_NODE="1")
    env.update(SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_NODEID="0", SLURM_JOB_NODELIST="vm")
    trainer, notices = _trainer(tmp_path, monkeypatch, **env)
    environment = trainer._accelerator_connector.cluster_environment
    assert isinstance(environment, SLURMEnvironment) and environment.auto_requeue is False
    assert notices == []
