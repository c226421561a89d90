"""Each method trains, its loss falls on a fixed batch, and its teacher follows the momentum schedule."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from fixtures.pretrain import TINY_PARAMS, make_shards, tiny_config
from lightly.models.utils import update_momentum
from lightly.utils.scheduler import cosine_schedule
from PIL import Image
from torch import nn

from ssl_benthic.core.config import ConfigError, load_config
from ssl_benthic.pretrain.config import PretrainConfig
from ssl_benthic.pretrain.methods import get_method, method_names
from ssl_benthic.pretrain.run import load_recipe, pretrain

METHODS = method_names()  # every registered method; each needs its TINY_PARAMS entry
TEACHER_FREE = {"barlowtwins", "simclr", "simsiam", "mae"}
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shards(tmp_path_factory.mktemp("shards") / "unlabelled")


def _losses(run: Path) -> list[float]:
    rows = list(csv.DictReader(next(run.rglob("metrics.csv")).open()))
    return [float(r["train_loss"]) for r in rows if r.get("train_loss")]


def test_registry_lists_the_methods() -> None:
    assert {"byol", "mocov2", "mocov3", "dino", "barlowtwins", "simclr", "simsiam", "mae"} <= set(
        METHODS
    )
    missing = sorted(set(METHODS) - set(TINY_PARAMS))
    assert not missing, f"registered methods without tiny test parameters: {missing}"
    with pytest.raises(ValueError, match=r"unknown method 'byl'.*did you mean 'byol'"):
        get_method("byl")


@pytest.mark.parametrize("name", METHODS)
def test_method_trains_a_few_steps(name: str, shards: Path, tmp_path: Path) -> None:
    cfg = tiny_config(name, shards, tmp_path / "run")
    pretrain(cfg)
    losses = _losses(tmp_path / "run")
    assert len(losses) == 4  # 2 epochs x 8 samples / batch 4
    assert all(math.isfinite(x) for x in losses)
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "run" / "config.yaml").is_file()
    rows = list(csv.DictReader(next((tmp_path / "run").rglob("metrics.csv")).open()))
    assert any(r.get("momentum") for r in rows) == (name not in TEACHER_FREE)


def test_dino_with_a_vit_and_local_crops(shards: Path, tmp_path: Path) -> None:
    cfg = tiny_config(
        "dino",
        shards,
        tmp_path / "run",
        backbone={"name": "vit_tiny_patch16_224", "img_size": 32, "patch_size": 8},
        optimizer={"name": "adamw", "lr": 1e-3, "weight_decay_end": 0.4},
        trainer={"max_epochs": 1},
    )
    pretrain(cfg)
    losses = _losses(tmp_path / "run")
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses), losses  # 8 samples / 4


def _fixed_views(name: str, n: int = 8) -> list[torch.Tensor]:
    cfg = tiny_config(name, Path("unused"), Path("unused"))
    transform = get_method(name).build_transform(cfg.transform)
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    images = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]
    per_image = [transform(im) for im in images]
    return [torch.stack(v) for v in zip(*per_image, strict=True)]


@pytest.mark.parametrize("name", METHODS)
def test_loss_falls_on_a_fixed_batch(name: str) -> None:
    torch.manual_seed(0)
    params = dict(TINY_PARAMS[name])
    if name == "mocov2":  # a queue of mostly random negatives: with a tiny one the batch's own keys
        params["memory_bank_size"] = 4096  # fill it and make the loss rise on a fixed batch
    cfg = tiny_config(name, Path("unused"), Path("unused"), method={"params": params})
    model = get_method(name)(cfg)
    views = _fixed_views(name)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-3)
    losses = []
    for _ in range(12):
        loss = model.compute_loss(views)
        opt.zero_grad()
        loss.backward()
        opt.step()
        for student, teacher in model.teacher_pairs():
            update_momentum(student, teacher, m=0.9)
        losses.append(loss.item())
    assert all(math.isfinite(x) for x in losses)
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses


class MomentumProbe(pl.Callback):
    """Checks teacher_after = m * teacher_before + (1 - m) * student_after for every optimiser step."""

    def __init__(self, start: float, end: float) -> None:
        self.start, self.end, self.errors, self.moved = start, end, [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.before = {
            k: v.detach().clone() for k, v in pl_module.teacher_backbone.named_parameters()
        }
        self.step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        m = cosine_schedule(
            self.step, int(trainer.estimated_stepping_batches), self.start, self.end
        )
        student = dict(pl_module.backbone.named_parameters())
        after = dict(pl_module.teacher_backbone.named_parameters())
        self.errors.append(
            max(
                (after[k] - (m * self.before[k] + (1 - m) * student[k])).abs().max().item()
                for k in after
            )
        )
        self.moved.append(max((after[k] - self.before[k]).abs().max().item() for k in after))


@pytest.mark.parametrize("name", ["byol", "dino"])
def test_teacher_follows_the_momentum_schedule(name: str, shards: Path, tmp_path: Path) -> None:
    params = {**TINY_PARAMS[name], "momentum_start": 0.9, "momentum_end": 1.0}
    cfg = tiny_config(name, shards, tmp_path / "run", method={"params": params})
    probe = MomentumProbe(0.9, 1.0)
    pretrain(cfg, extra_callbacks=[probe])
    assert len(probe.errors) == 4
    assert max(probe.errors) < 1e-6, probe.errors
    assert probe.moved[0] > 1e-4  # m = 0.9 at step 0: the teacher really moves
    assert probe.moved[-1] == 0.0  # m = 1.0 at the last step: it does not


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_unknown_method_fails_before_training(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "bad.yaml", "method: {name: mocov4}\nbackbone: {name: resnet18}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*unknown method 'mocov4'.*did you mean"):
        load_recipe(cfg)


def test_unknown_backbone_fails_before_training(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "bad.yaml", "method: {name: byol}\nbackbone: {name: resnet5O}\n")
    with pytest.raises(
        ConfigError, match=r"backbone\.name: unknown timm model 'resnet5O'.*'resnet50'"
    ):
        load_config(PretrainConfig, cfg)


def test_unknown_method_param_fails_with_near_miss(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "bad.yaml", "method: {name: mocov2, params: {temprature: 0.1}}\n")
    with pytest.raises(
        ConfigError, match=r"method\.params\.temprature.*did you mean 'method\.params\.temperature'"
    ):
        load_recipe(cfg)


def test_overrides_reach_the_recipe(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "ok.yaml", "method: {name: byol}\nbackbone: {name: resnet18}\n")
    loaded = load_config(
        PretrainConfig,
        cfg,
        ["trainer.max_steps=7", "trainer.max_epochs=3", "data.shards=/x/y", "output_dir=/o"],
    )
    assert (loaded.trainer.max_steps, loaded.trainer.max_epochs) == (7, 3)
    assert (loaded.data.shards, loaded.output_dir) == ("/x/y", "/o")


@pytest.mark.parametrize(
    "recipe", sorted((REPO / "configs" / "pretrain").glob("*.yaml")), ids=lambda p: p.name
)
def test_recipe_loads_and_makes_its_views(recipe: Path) -> None:
    """A recipe trains the method its file is named for, a _sample recipe reads the sample's shards
    (its kNN monitor too) and only it does, and every view has the recipe's sizes."""
    cfg = load_recipe(recipe)  # validates method, params and backbone names; the method's checks
    method, _, kind = recipe.stem.partition("_")
    assert cfg.method.name == method and kind in ("", "sample", "continue")
    shards = [cfg.data.shards]
    if cfg.monitor.knn is not None:
        shards += [cfg.monitor.knn.shards, cfg.monitor.knn.bank_shards]
    on_sample = [s.startswith("shards/sample/") for s in shards]
    assert on_sample == [kind == "sample"] * len(shards), shards
    views = get_method(cfg.method.name).build_transform(cfg.transform)(Image.new("RGB", (80, 80)))
    size, local = cfg.transform.input_size, cfg.transform.local_crop_size
    count = {"dino": 2 + cfg.transform.n_local_views, "mae": 1}.get(cfg.method.name, 2)
    shapes = [(3, size, size)] * min(count, 2) + [(3, local, local)] * (count - 2)
    assert [tuple(v.shape) for v in views] == shapes


def test_barlowtwins_projector_takes_a_solo_learn_projector() -> None:
    """solo-learn's `projector.{0,1,3,4,6}` are our `projection_head.layers.{0,1,3,4,6}`; its Linear layers
    0 and 3 have biases that ours (Linear before BN) lack: they fold into the BN's running mean."""
    torch.manual_seed(0)
    model = get_method("barlowtwins")(tiny_config("barlowtwins", Path("x"), Path("x")))
    d, h, o = model.dim, 32, 32
    solo = nn.Sequential(
        nn.Linear(d, h), nn.BatchNorm1d(h), nn.ReLU(),
        nn.Linear(h, h), nn.BatchNorm1d(h), nn.ReLU(),
        nn.Linear(h, o),
    )  # fmt: skip
    for i in (1, 4):  # trained-looking BN statistics and affine parameters
        bn = solo[i]
        bn.running_mean.normal_(), bn.running_var.uniform_(0.5, 2), bn.weight.data.normal_()
        bn.bias.data.normal_()
    state = {f"projector.{k}": v for k, v in solo.state_dict().items()}

    mapped = {}
    for key, value in state.items():
        index, field = key.removeprefix("projector.").split(".", 1)
        if index in ("0", "3") and field == "bias":
            continue
        if field == "running_mean" and index in ("1", "4"):
            value = value - state[f"projector.{int(index) - 1}.bias"]
        mapped[f"layers.{index}.{field}"] = value
    model.projection_head.load_state_dict(mapped, strict=True)

    x = torch.randn(16, d)
    for train in (False, True):
        solo.train(train), model.projection_head.train(train)
        torch.testing.assert_close(model.projection_head(x), solo(x), rtol=1e-4, atol=1e-4)


class RecordingNegCos(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[bool, bool]] = []

    def forward(self, p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        self.calls.append((p.requires_grad, z.requires_grad))
        return -F.cosine_similarity(p, z).mean()


def test_simsiam_predicts_a_stop_gradient_target() -> None:
    model = get_method("simsiam")(tiny_config("simsiam", Path("x"), Path("x")))
    model.criterion = RecordingNegCos()
    loss = model.compute_loss(_fixed_views("simsiam", n=4))
    assert model.criterion.calls == [
        (True, False),
        (True, False),
    ]  # both directions, target detached
    assert -1.0 <= loss.item() <= 1.0
