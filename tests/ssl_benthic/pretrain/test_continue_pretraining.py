"""Continued pretraining from an import: the step-0 backbone is the import, and the Barlow Twins
projector of a solo-learn (BenthicNet-shaped) checkpoint starts the recipe's projector when its
shapes match; otherwise, or when asked, the head starts fresh and the log says why."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from fixtures.pretrain import make_shards, tiny_config
from safetensors.torch import load_file
from torch import nn

from ssl_benthic.pretrain.methods import get_method
from ssl_benthic.weights.import_weights import import_weights

HIDDEN = 32


def solo_learn_projector(dim: int) -> nn.Sequential:
    """solo-learn's Barlow Twins projector: biases on every Linear, BN after the first two."""
    torch.manual_seed(1)
    proj = nn.Sequential(
        nn.Linear(dim, HIDDEN), nn.BatchNorm1d(HIDDEN), nn.ReLU(),
        nn.Linear(HIDDEN, HIDDEN), nn.BatchNorm1d(HIDDEN), nn.ReLU(),
        nn.Linear(HIDDEN, HIDDEN),
    )  # fmt: skip
    for bn in (proj[1], proj[4]):  # trained-looking statistics, so a wrong fold would show
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
    return proj


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Sequential, Path]:
    """(import folder, the source projector, shards) of a BenthicNet-shaped Barlow Twins checkpoint."""
    root = tmp_path_factory.mktemp("continue")
    backbone = timm.create_model("resnet50", num_classes=0)
    projector = solo_learn_projector(backbone.num_features)
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    state.update({f"projector.{k}": v for k, v in projector.state_dict().items()})
    ckpt = {
        "epoch": 399,
        "global_step": 1000,
        "pytorch-lightning_version": "1.9.0",
        "state_dict": state,
    }
    torch.save(ckpt, root / "bt.ckpt")
    import_weights(root / "bt.ckpt", root / "import", preset="benthicnet_bt_rn50_e400")
    return root / "import", projector.eval(), make_shards(root / "shards", n=8)


def build(imported, tmp_path: Path, hidden: int = HIDDEN, init_heads: str = "import"):
    folder, _, shards = imported
    params = {"proj_hidden_dim": hidden, "proj_dim": HIDDEN, "lambda_param": 5e-3}
    cfg = tiny_config(
        "barlowtwins",
        shards,
        tmp_path / "run",
        method={"params": params, "init_heads": init_heads},
        backbone={"name": "resnet50", "weights": str(folder)},
    )
    return get_method("barlowtwins")(cfg)


def test_the_import_starts_backbone_and_projector(imported, tmp_path):
    folder, projector, _ = imported
    method = build(imported, tmp_path).eval()
    expected = load_file(str(folder / "backbone.safetensors"))
    got = method.backbone.state_dict()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], v) for k, v in expected.items())  # step 0 = the import
    assert method.heads_init == [
        "heads: projection_head from the import's projector.* (16 tensors)"
    ]
    x = torch.randn(5, 2048)
    with torch.no_grad():  # eval mode: the folded biases give the source's outputs exactly
        torch.testing.assert_close(method.projection_head(x), projector(x), rtol=1e-5, atol=1e-5)


def test_a_head_that_does_not_fit_or_is_refused_starts_fresh(imported, tmp_path):
    fresh = build(imported, tmp_path, hidden=16)
    assert fresh.heads_init == [
        "heads: projection_head fresh (layers.0.weight (32, 2048) does not fit the recipe's head)"
    ]
    asked = build(imported, tmp_path, init_heads="fresh")
    assert asked.heads_init == ["heads: fresh (method.init_heads: fresh)"]
    assert not torch.equal(asked.projection_head.layers[0].weight, imported[1][0].weight)


def test_another_methods_import_keeps_its_heads_out(imported, tmp_path):
    folder, _, shards = imported
    cfg = tiny_config(
        "simclr", shards, tmp_path / "run", backbone={"name": "resnet50", "weights": str(folder)}
    )
    method = get_method("simclr")(cfg)
    assert method.heads_init == ["heads: fresh (the import's heads are Barlow Twins)"]
