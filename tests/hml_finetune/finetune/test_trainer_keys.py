"""Both stages take the same trainer keys (`SharedTrainerConfig`), and in each they reach Lightning's
Trainer: `trainer.enable_progress_bar` was a stage-2 key that pretraining refused as unknown."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from fixtures.finetune import make_cfg

from hml_finetune.finetune.config import TrainerConfig as FinetuneTrainer
from hml_finetune.finetune.train import build_trainer as finetune_trainer
from ssl_benthic.core.config import load_config
from ssl_benthic.core.trainer_config import SharedTrainerConfig
from ssl_benthic.pretrain.config import PretrainConfig
from ssl_benthic.pretrain.config import TrainerConfig as PretrainTrainer
from ssl_benthic.pretrain.run import build_trainer as pretrain_trainer

SHARED = (
    "trainer.enable_progress_bar=false",
    "trainer.max_epochs=3",
    "trainer.log_every_n_steps=7",
)


def test_the_shared_keys_are_keys_of_both_stages() -> None:
    shared = {f.name for f in fields(SharedTrainerConfig)}
    assert {"accelerator", "devices", "precision", "enable_progress_bar"} <= shared
    for stage in (PretrainTrainer, FinetuneTrainer):
        assert shared <= {f.name for f in fields(stage)}, stage


def test_the_shared_keys_reach_the_trainer_in_both_stages(tmp_path: Path) -> None:
    recipe = tmp_path / "pretrain.yaml"
    recipe.write_text(
        f"method: {{name: byol}}\nbackbone: {{name: resnet10t}}\noutput_dir: {tmp_path}/p\n"
    )

    def pretraining(*overrides: str):
        return pretrain_trainer(
            load_config(PretrainConfig, recipe, ["trainer.accelerator=cpu", *overrides])
        )

    def finetuning(*overrides: str):
        return finetune_trainer(make_cfg(tmp_path, tmp_path / "f", *overrides))

    for trainer in (pretraining(*SHARED), finetuning(*SHARED)):
        assert trainer.progress_bar_callback is None
        assert (trainer.max_epochs, trainer.log_every_n_steps) == (3, 7)
    for trainer in (pretraining(), finetuning("trainer.enable_progress_bar=true")):
        assert trainer.progress_bar_callback is not None
