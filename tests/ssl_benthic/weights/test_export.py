"""Export round-trip: the exported backbone loads with timm and with create_backbone, same features."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import timm
import torch
from fixtures.pretrain import make_shards, tiny_config
from safetensors.torch import save_file

from ssl_benthic.pretrain.methods import get_method
from ssl_benthic.pretrain.run import pretrain
from ssl_benthic.weights.backbones import BackboneError, create_backbone, feature_dim, read_export
from ssl_benthic.weights.export import export_backbone
from ssl_benthic.weights.load import weights_identity


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shards(tmp_path_factory.mktemp("shards") / "unlabelled", n=16)


def _checkpoint_backbone(ckpt: Path, cfg) -> torch.nn.Module:
    """Oracle: the whole LightningModule rebuilt from the recipe, loaded strictly from the checkpoint."""
    model = get_method(cfg.method.name)(cfg)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict(state, strict=True)
    return model.backbone.eval()


def _train(shards: Path, out: Path, **sections) -> tuple[Path, object]:
    cfg = tiny_config("byol", shards, out, trainer={"max_epochs": 1}, **sections)
    pretrain(cfg)
    return out / "checkpoints" / "last.ckpt", cfg


def test_export_round_trip_resnet(shards: Path, tmp_path: Path) -> None:
    ckpt, cfg = _train(shards, tmp_path / "run", transform={"mean": [0.1, 0.2, 0.3]})
    out = export_backbone(ckpt, tmp_path / "export")
    meta = json.loads((out / "backbone.json").read_text())
    assert meta["timm_name"] == "resnet10t" and meta["method"] == "byol"
    assert (meta["img_size"], meta["step"]) == (32, 2)
    assert meta["mean"] == [0.1, 0.2, 0.3] and meta["std"] == [0.207, 0.210, 0.183]

    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = _checkpoint_backbone(ckpt, cfg)(x)
        by_timm = timm.create_model(
            "resnet10t",
            pretrained=True,
            pretrained_cfg_overlay=dict(file=str(out / "backbone.safetensors")),
            num_classes=0,
        ).eval()(x)
        by_us = create_backbone("resnet10t", weights=out).eval()(x)
        fresh = create_backbone("resnet10t").eval()(x)
    torch.testing.assert_close(by_timm, expected, rtol=0, atol=0)
    torch.testing.assert_close(by_us, expected, rtol=0, atol=0)
    assert not torch.allclose(fresh, expected)


def test_export_round_trip_vit_keeps_its_shape_options(shards: Path, tmp_path: Path) -> None:
    vit = {"name": "vit_tiny_patch16_224", "img_size": 32, "patch_size": 8}
    ckpt, cfg = _train(shards, tmp_path / "run", backbone=vit)
    out = export_backbone(ckpt, tmp_path / "export")
    meta = json.loads((out / "backbone.json").read_text())
    assert meta["model_kwargs"] == {"img_size": 32, "patch_size": 8}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = _checkpoint_backbone(ckpt, cfg)(x)
        by_us = create_backbone(
            "vit_tiny_patch16_224", weights=out / "backbone.safetensors"
        ).eval()(x)
    torch.testing.assert_close(by_us, expected, rtol=0, atol=0)
    assert feature_dim(create_backbone("vit_tiny_patch16_224", weights=out)) == 192


def test_export_of_a_non_pretraining_checkpoint_fails(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {}}, bad)
    with pytest.raises(ValueError, match="not an ssl-benthic pretraining checkpoint"):
        export_backbone(bad, tmp_path / "out")


def test_unknown_backbone_name_suggests_near_misses() -> None:
    with pytest.raises(
        BackboneError, match=r"unknown timm model 'resnet1O'.*did you mean 'resnet18'"
    ):
        create_backbone("resnet1O")


def test_imagenet_weights_from_a_local_file(tmp_path: Path) -> None:
    source = timm.create_model("resnet10t", num_classes=1000)  # a stand-in "ImageNet" checkpoint
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    model = create_backbone("resnet10t", weights="imagenet", weights_file=path)
    torch.testing.assert_close(model.conv1[0].weight, source.conv1[0].weight, rtol=0, atol=0)
    with pytest.raises(BackboneError, match="weights_file not found"):
        create_backbone(
            "resnet10t", weights="imagenet", weights_file=tmp_path / "missing.safetensors"
        )


def test_shape_mismatch_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_file({"conv1.0.weight": torch.zeros(2, 3, 3, 3)}, str(path))
    with pytest.raises(BackboneError, match=r"shape mismatch at 'conv1\.0\.weight'"):
        create_backbone("resnet10t", weights=path)


def test_missing_and_unexpected_keys_fail_naming_them(tmp_path: Path) -> None:
    """Loading is strict: a missing or an unexpected key fails (it used to warn and train on)."""
    state = timm.create_model("resnet10t", num_classes=0).state_dict()
    state.pop("bn1.weight")
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(
        BackboneError,
        match=r"missing 1 keys \(bn1\.weight\); unexpected 1 keys \(extra\.weight\)",
    ):
        create_backbone("resnet10t", weights=path)


def test_a_classifier_in_the_file_is_left_out(tmp_path: Path) -> None:
    """An ImageNet-style file with `fc.*` loads into the classifier-free backbone, all else equal."""
    source = timm.create_model("resnet10t", num_classes=7)
    path = tmp_path / "with_fc.pt"
    torch.save({"state_dict": source.state_dict()}, path)
    model = create_backbone("resnet10t", weights=path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, source.state_dict()[key]), key


def test_a_foreign_training_checkpoint_is_refused_with_advice(tmp_path: Path) -> None:
    """A solo-learn style checkpoint (prefixed keys) names the problem and what to do."""
    state = timm.create_model("resnet10t", num_classes=0).state_dict()
    ckpt = {"state_dict": {f"backbone.{k}": v for k, v in state.items()}}
    path = tmp_path / "solo.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(BackboneError, match=r"missing \d+ keys .*training checkpoint.*export"):
        create_backbone("resnet10t", weights=path)


def test_a_pretraining_checkpoint_loads_as_its_student_backbone(
    shards: Path, tmp_path: Path
) -> None:
    """`weights: runs/.../last.ckpt` gives exactly the exported backbone (it used to load no key
    and train from random init), with the recipe's normalisation in its metadata."""
    ckpt, cfg = _train(shards, tmp_path / "run", transform={"mean": [0.1, 0.2, 0.3]})
    export = export_backbone(ckpt, tmp_path / "export")
    from_ckpt = create_backbone("resnet10t", weights=ckpt).state_dict()
    from_export = create_backbone("resnet10t", weights=export).state_dict()
    assert from_ckpt.keys() == from_export.keys()
    for key, value in from_export.items():
        assert torch.equal(from_ckpt[key], value), key
    assert read_export(ckpt)[1]["mean"] == [0.1, 0.2, 0.3]
    with pytest.raises(BackboneError, match="already holds an export: pass --overwrite"):
        export_backbone(ckpt, tmp_path / "export")
    export_backbone(ckpt, tmp_path / "export", overwrite=True)


def test_weights_identity_is_the_sha256_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_file({"a": torch.arange(4.0)}, str(path))
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert weights_identity(str(path), None) == {
        "source": str(path),
        "file": str(path),
        "sha256": expected,
    }
    assert weights_identity("imagenet", str(path))["sha256"] == expected
    assert weights_identity("random", None)["sha256"] is None
