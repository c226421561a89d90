"""`ssl-benthic import-weights`: published encoders (solo-learn / BenthicNet, DINO, torchvision, timm,
safetensors, this toolkit's checkpoints) become exports whose features equal the source weights'."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from hml_finetune.finetune.config import BackboneConfig
from hml_finetune.finetune.model import build_backbone
from ssl_benthic.cli import main
from ssl_benthic.core.errors import BackboneError
from ssl_benthic.core.normalization import (
    BENTHICNET_UNLABELLED_MEAN,
    BENTHICNET_UNLABELLED_STD,
    IMAGENET_MEAN,
)
from ssl_benthic.weights.arch_detect import detect, meta_model, resolve_vit, vit_signature
from ssl_benthic.weights.backbones import create_backbone
from ssl_benthic.weights.import_weights import import_weights
from ssl_benthic.weights.presets import PRESETS

VIT_S = "vit_small_patch16_224"
MCV3_S = "benthicnet_mcv3_vit-s_e200_prod"


class Thing:
    """A class torch.load(weights_only=True) must refuse to unpickle."""


def _model(name: str, seed: int, **kwargs) -> nn.Module:
    """A timm backbone at a seeded random init, BN statistics randomised too, in eval mode."""
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.num_batches_tracked.fill_(7)
    return model.eval()


def _mlp(*dims: int, seed: int) -> nn.Sequential:
    """A projector-like MLP (Linear, BN, ReLU ...) with seeded weights."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers += [nn.BatchNorm1d(b), nn.ReLU()]
    return nn.Sequential(*layers)


def _prefixed(prefix: str, module: nn.Module | dict[str, Tensor]) -> dict[str, Tensor]:
    state = module if isinstance(module, dict) else module.state_dict()
    return {f"{prefix}{k}": v.clone() for k, v in state.items()}


def _save_lightning(path: Path, state_dict: dict[str, Tensor]) -> Path:
    """A solo-learn checkpoint as BenthicNet releases it (Lightning, saved weights-only)."""
    ckpt = {
        "epoch": 399,
        "global_step": 125_000,
        "pytorch-lightning_version": "1.9.5",
        "state_dict": state_dict,
        "loops": {},
    }
    torch.save(ckpt, path)
    return path


@torch.no_grad()
def _features(model: nn.Module, x: Tensor) -> Tensor:
    return model.eval()(x)


def _via_timm(out: Path, x: Tensor) -> Tensor:
    """Features of the export loaded by timm's own pretrained-file path."""
    meta = json.loads((out / "backbone.json").read_text())
    model = timm.create_model(
        meta["timm_name"],
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(out / "backbone.safetensors")),
        num_classes=0,
        **meta["model_kwargs"],
    )
    return _features(model, x)


# ----- solo-learn / BenthicNet ----------------------------------------------------------------
@pytest.fixture(scope="module")
def barlow_rn50(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module, dict]:
    """A Barlow Twins ResNet-50 run: backbone, 3-layer projector, online classifier."""
    backbone = _model("resnet50", seed=0)
    heads = _prefixed("projector.", _mlp(2048, 32, 32, 16, seed=1))
    torch.manual_seed(2)
    heads |= {"classifier.weight": torch.randn(5, 2048), "classifier.bias": torch.randn(5)}
    path = tmp_path_factory.mktemp("bt") / "benthicnet_bt_rn50_e400.ckpt"
    _save_lightning(path, _prefixed("backbone.", backbone) | heads)
    return path, backbone, heads


def test_barlow_twins_resnet50_imports_exactly(barlow_rn50, tmp_path: Path) -> None:
    path, backbone, heads = barlow_rn50
    result = import_weights(path, tmp_path / "bt", preset="benthicnet_bt_rn50_e400")
    out = result.out
    meta = json.loads((out / "backbone.json").read_text())
    assert meta == {
        "format": "ssl-benthic-backbone/1",
        "timm_name": "resnet50",
        "model_kwargs": {},
        "img_size": 224,
        "mean": list(BENTHICNET_UNLABELLED_MEAN),
        "std": list(BENTHICNET_UNLABELLED_STD),
        "num_features": 2048,
        "architecture": "ResNet-50 (Bottleneck blocks 3-4-6-3)",
        "source": "benthicnet_bt_rn50_e400.ckpt",
        "source_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "source_format": "Lightning checkpoint ('state_dict')",
        "source_url": "https://huggingface.co/MLIsaac/benthicnet_bt_rn50_e400",
        "branch": "backbone",
        "preset": "benthicnet_bt_rn50_e400",
        "method": "Barlow Twins",
        "epoch": 399,
        "global_step": 125_000,
    }
    x = torch.randn(2, 3, 64, 64)
    expected = _features(backbone, x)
    torch.testing.assert_close(_via_timm(out, x), expected, rtol=0, atol=0)
    from_dir = create_backbone("resnet50", weights=out)
    torch.testing.assert_close(_features(from_dir, x), expected, rtol=0, atol=0)
    for key, value in backbone.state_dict().items():  # BN statistics and counters too
        assert torch.equal(from_dir.state_dict()[key], value), key
    # the projector and classifier are kept, under their own names
    kept = load_file(str(out / "heads.safetensors"))
    assert kept.keys() == heads.keys()
    assert all(torch.equal(kept[k], v) for k, v in heads.items())
    assert json.loads((out / "heads.json").read_text())["prefixes"] == {
        "projector": 16,
        "classifier": 2,
    }
    assert result.notes == [
        "branch: backbone (backbone.*, 318 tensors)",
        "not part of the backbone, kept in heads.safetensors: projector (16), classifier (2)",
    ]


@pytest.fixture(scope="module")
def mocov3_vits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module, nn.Module]:
    """A MoCo v3 ViT-S/16 run with 12 heads (64 px to stay light): online and momentum encoders,
    projectors, predictor, classifier."""
    online = _model(VIT_S, seed=3, img_size=64, num_heads=12)
    momentum = _model(VIT_S, seed=4, img_size=64, num_heads=12)
    state = _prefixed("backbone.", online) | _prefixed("momentum_backbone.", momentum)
    state |= _prefixed("projector.", _mlp(384, 32, 32, 16, seed=5))
    state |= _prefixed("momentum_projector.", _mlp(384, 32, 32, 16, seed=6))
    state |= _prefixed("predictor.", _mlp(16, 32, 16, seed=7))
    state |= {"classifier.weight": torch.zeros(3, 384), "classifier.bias": torch.zeros(3)}
    path = tmp_path_factory.mktemp("mcv3") / "last.ckpt"
    return _save_lightning(path, state), online, momentum


def test_mocov3_vit_small_needs_its_head_count(mocov3_vits, tmp_path: Path) -> None:
    path, _, _ = mocov3_vits
    with pytest.raises(
        BackboneError,
        match=r"last\.ckpt: the number of attention heads of this ViT-S/16, 64 px .* is not in the "
        r"weights \(timm, DeiT and DINO use 6 heads, MoCo v3 \(so BenthicNet\) and solo-learn's "
        r"MAE 12; .*pass "
        r"--preset .* or --model-kwargs",
    ):
        import_weights(path, tmp_path / "out")
    with pytest.raises(BackboneError, match="number of attention heads"):
        import_weights(path, tmp_path / "out", timm_name=VIT_S)  # a name alone does not say
    assert not (tmp_path / "out").exists()


def test_mocov3_vit_small_imports_with_12_heads(mocov3_vits, tmp_path: Path) -> None:
    path, online, _ = mocov3_vits
    result = import_weights(path, tmp_path / "s", preset=MCV3_S)
    meta = result.meta
    assert (meta["timm_name"], meta["model_kwargs"]) == (VIT_S, {"img_size": 64, "num_heads": 12})
    assert (meta["img_size"], meta["branch"], meta["method"]) == (64, "backbone", "MoCo v3")
    assert meta["architecture"] == "ViT-S/16, 64 px (4x4 patches, class token), 12 heads"
    x = torch.randn(2, 3, 64, 64)
    expected = _features(online, x)
    torch.testing.assert_close(_via_timm(result.out, x), expected, rtol=0, atol=0)
    built = create_backbone(VIT_S, weights=result.out)
    assert [b.attn.num_heads for b in built.blocks] == [12] * 12
    torch.testing.assert_close(_features(built, x), expected, rtol=0, atol=0)
    stage2 = build_backbone(BackboneConfig(name=VIT_S, weights=str(result.out)))  # backbone.weights
    assert stage2.blocks[0].attn.num_heads == 12
    torch.testing.assert_close(_features(stage2, x), expected, rtol=0, atol=0)
    assert result.heads == {
        "projector": 16,
        "momentum_projector": 16,
        "predictor": 9,
        "classifier": 2,
    }
    assert (
        "not imported: momentum_backbone.* (150 tensors; --branch momentum_backbone imports it)"
        in (result.notes)
    )
    same = import_weights(path, tmp_path / "k", model_kwargs={"num_heads": 12})
    assert same.meta["model_kwargs"] == {"img_size": 64, "num_heads": 12}


def test_six_heads_load_strictly_and_compute_other_features(mocov3_vits, tmp_path: Path) -> None:
    """The trap is real: the 12-head weights fill a 6-head ViT-S without a missing key."""
    path, online, _ = mocov3_vits
    six = timm.create_model(VIT_S, pretrained=False, num_classes=0, img_size=64)
    six.load_state_dict(online.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    expected = _features(online, x)
    assert not torch.allclose(_features(six, x), expected, atol=1e-3)
    as_timm = import_weights(path, tmp_path / "t", preset="timm")  # timm's convention: 6
    assert as_timm.meta["model_kwargs"] == {"img_size": 64}
    assert not torch.allclose(_via_timm(as_timm.out, x), expected, atol=1e-3)


def test_momentum_branch_imports_the_other_encoder(mocov3_vits, tmp_path: Path) -> None:
    path, online, momentum = mocov3_vits
    result = import_weights(path, tmp_path / "m", preset=MCV3_S, branch="momentum_backbone")
    assert result.meta["branch"] == "momentum_backbone"
    written = load_file(str(result.out / "backbone.safetensors"))
    assert written.keys() == momentum.state_dict().keys()
    assert all(torch.equal(written[k], v) for k, v in momentum.state_dict().items())
    x = torch.randn(1, 3, 64, 64)
    got = _features(create_backbone(VIT_S, weights=result.out), x)
    torch.testing.assert_close(got, _features(momentum, x), rtol=0, atol=0)
    assert not torch.allclose(got, _features(online, x))


# ----- DINO, torchvision, safetensors, this toolkit -------------------------------------------
def test_dino_teacher_student_checkpoint(tmp_path: Path) -> None:
    """DINO's layout: `teacher` / `student` dicts, `backbone.` prefixes, DDP's `module.`."""
    teacher = _model("vit_tiny_patch16_224", seed=8, img_size=32)
    student = _model("vit_tiny_patch16_224", seed=9, img_size=32)
    head = {"head.mlp.0.weight": torch.ones(8, 192), "head.last_layer.weight": torch.ones(4, 8)}
    ckpt = {
        "teacher": _prefixed("backbone.", teacher) | head,
        "student": _prefixed("module.backbone.", student) | _prefixed("module.", head),
        "epoch": 100,
    }
    path = tmp_path / "checkpoint.pth"
    torch.save(ckpt, path)
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(BackboneError, match=r"timm and DeiT use 3 heads, MoCo v3 and MAE"):
        import_weights(path, tmp_path / "t")  # solo-learn's MoCo v3 ViT-Ti has 12
    result = import_weights(path, tmp_path / "t", model_kwargs={"num_heads": 3})
    assert (result.meta["branch"], result.meta["timm_name"]) == ("teacher", "vit_tiny_patch16_224")
    assert result.meta["model_kwargs"] == {"img_size": 32, "num_heads": 3}  # as given
    assert result.meta["mean"] == list(IMAGENET_MEAN)
    assert result.heads == {"teacher.head": 2, "student.head": 2}
    assert set(load_file(str(result.out / "heads.safetensors"))) == {
        "teacher.head.mlp.0.weight",
        "teacher.head.last_layer.weight",
        "student.head.mlp.0.weight",
        "student.head.last_layer.weight",
    }
    torch.testing.assert_close(_via_timm(result.out, x), _features(teacher, x), rtol=0, atol=0)
    other = import_weights(path, tmp_path / "s", branch="student", preset="dino")
    torch.testing.assert_close(_via_timm(other.out, x), _features(student, x), rtol=0, atol=0)


def test_torchvision_resnet18_state_dict_keeps_fc_as_a_head(tmp_path: Path) -> None:
    torch.manual_seed(10)
    source = torchvision.models.resnet18(weights=None).eval()
    folder = tmp_path / "download"
    folder.mkdir()
    torch.save(source.state_dict(), folder / "resnet18.pth")
    result = import_weights(folder, tmp_path / "r18", preset="torchvision-resnet")  # the one file
    assert (result.meta["timm_name"], result.meta["source"]) == ("resnet18", "resnet18.pth")
    assert (result.meta["architecture"], result.meta["branch"]) == (
        "ResNet-18 (BasicBlock blocks 2-2-2-2)",
        None,
    )
    assert result.heads == {"fc": 2}
    kept = load_file(str(result.out / "heads.safetensors"))
    assert torch.equal(kept["fc.weight"], source.fc.weight)
    reference = timm.create_model("resnet18", pretrained=False, num_classes=0)
    reference.load_state_dict({k: v for k, v in source.state_dict().items() if "fc." not in k})
    x = torch.randn(2, 3, 64, 64)
    expected = _features(reference, x)
    torch.testing.assert_close(_via_timm(result.out, x), expected, rtol=0, atol=0)
    source.fc = nn.Identity()
    torch.testing.assert_close(_features(source, x), expected)  # torchvision computes the same


def test_dinov2_style_safetensors_with_registers(tmp_path: Path) -> None:
    """A flat safetensors file in DINOv2's naming (register_tokens, mask_token, layer scale,
    no position embedding for the prefix tokens)."""
    model = _model("vit_small_patch14_reg4_dinov2", seed=11, img_size=28)
    state = {k.replace("reg_token", "register_tokens"): v for k, v in model.state_dict().items()}
    state["mask_token"] = torch.zeros(1, 384)
    path = tmp_path / "dinov2_vits14_reg4.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    result = import_weights(path, tmp_path / "d", preset="dino")  # no branches: preset's ignored
    assert result.meta["model_kwargs"] == {
        "img_size": 28,
        "patch_size": 14,
        "reg_tokens": 4,
        "no_embed_class": True,
        "init_values": 1e-05,
    }
    assert (result.meta["source_format"], result.heads) == ("safetensors", {"mask_token": 1})
    x = torch.randn(2, 3, 28, 28)
    torch.testing.assert_close(_via_timm(result.out, x), _features(model, x), rtol=0, atol=0)


def test_own_pretraining_checkpoint_student_and_teacher(tmp_path: Path) -> None:
    student, teacher = _model("resnet18", seed=12), _model("resnet18", seed=13)
    recipe = {"transform": {"input_size": 48, "mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6]}}
    ckpt = {
        "ssl_benthic": {
            "timm_name": "resnet18",
            "model_kwargs": {},
            "method": "byol",
            "config": recipe,
        },
        "global_step": 20,
        "epoch": 1,
        "state_dict": _prefixed("backbone.", student)
        | _prefixed("teacher_backbone.", teacher)
        | _prefixed("projection_head.", _mlp(512, 16, 8, seed=14))
        | _prefixed("teacher_projection_head.", _mlp(512, 16, 8, seed=14)),
    }
    path = tmp_path / "last.ckpt"
    torch.save(ckpt, path)
    x = torch.randn(1, 3, 48, 48)
    result = import_weights(path, tmp_path / "s")
    assert (result.meta["branch"], result.meta["method"], result.meta["img_size"]) == (
        "backbone",
        "byol",
        48,
    )
    assert (result.meta["mean"], result.meta["std"]) == ([0.1, 0.2, 0.3], [0.4, 0.5, 0.6])
    assert result.heads == {"projection_head": 9, "teacher_projection_head": 9}
    torch.testing.assert_close(_via_timm(result.out, x), _features(student, x), rtol=0, atol=0)
    other = import_weights(path, tmp_path / "t", branch="teacher")
    assert other.notes[0] == "branch: teacher (teacher_backbone.*, 120 tensors)"
    torch.testing.assert_close(_via_timm(other.out, x), _features(teacher, x), rtol=0, atol=0)


# ----- refusals -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def solo_rn18() -> dict[str, Tensor]:
    return _prefixed("backbone.", _model("resnet18", seed=15)) | {"classifier.bias": torch.ones(2)}


def test_an_extra_or_missing_backbone_key_fails_naming_it(solo_rn18, tmp_path: Path) -> None:
    extra = _save_lightning(
        tmp_path / "extra.ckpt", solo_rn18 | {"backbone.extra.weight": torch.ones(1)}
    )
    with pytest.raises(BackboneError, match=r"extra\.ckpt: .*unexpected 1 keys \(extra\.weight\)$"):
        import_weights(extra, tmp_path / "out")
    state = dict(solo_rn18)
    del state["backbone.layer1.0.bn1.weight"]
    missing = _save_lightning(tmp_path / "missing.ckpt", state)
    with pytest.raises(
        BackboneError, match=r"missing\.ckpt: .*missing 1 keys \(layer1\.0\.bn1\.weight\)$"
    ):
        import_weights(missing, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    torch.save({"state_dict": Thing()}, tmp_path / "thing.ckpt")
    with pytest.raises(
        BackboneError,
        match=r"thing\.ckpt: refused: the file holds a pickled Python object \(.*\.Thing\), not only tensors",
    ):
        import_weights(tmp_path / "thing.ckpt", tmp_path / "out")
    torch.save(nn.Linear(2, 2), tmp_path / "module.pt")
    with pytest.raises(
        BackboneError, match=r"pickled Python object \(torch\.nn\.modules\.linear\.Linear\)"
    ):
        import_weights(tmp_path / "module.pt", tmp_path / "out")


def test_a_corrupt_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bad.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(
        BackboneError, match=r"bad\.ckpt: not a readable weights file, corrupt or of another format"
    ):
        import_weights(tmp_path / "bad.ckpt", tmp_path / "out")


def test_timm_name_imports_what_the_keys_cannot_tell(tmp_path: Path) -> None:
    """A deep-stem ResNet (timm's resnet10t) is not detected; --timm-name names it."""
    model = _model("resnet10t", seed=18)
    path = tmp_path / "r10t.pth"
    torch.save({"model": model.state_dict()}, path)
    with pytest.raises(BackboneError, match=r"r10t\.pth: cannot tell .*deep stem.*--timm-name"):
        import_weights(path, tmp_path / "out")
    result = import_weights(path, tmp_path / "out", timm_name="resnet10t")
    assert result.meta["architecture"].startswith("resnet10t (as named; not detected: a ResNet")
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(_via_timm(result.out, x), _features(model, x), rtol=0, atol=0)


def test_a_preset_must_agree_with_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "vit.safetensors"
    save_file(_model("vit_tiny_patch16_224", seed=16, img_size=32).state_dict(), str(path))
    with pytest.raises(
        BackboneError,
        match=r"preset 'benthicnet_bt_rn50_e400' is resnet50, but the keys say vit_tiny_patch16 "
        r"\(ViT-Ti/16, 32 px .*\): wrong file or wrong preset",
    ):
        import_weights(path, tmp_path / "out", preset="benthicnet_bt_rn50_e400")
    with pytest.raises(
        BackboneError, match=r"preset 'torchvision-resnet' is a resnet, but the keys say vit"
    ):
        import_weights(path, tmp_path / "out", preset="torchvision-resnet")
    with pytest.raises(
        BackboneError,
        match=r"unknown preset 'benthicnet_bt_rn50_e40'.*did you mean 'benthicnet_bt_rn50_e400'",
    ):
        import_weights(path, tmp_path / "out", preset="benthicnet_bt_rn50_e40")
    with pytest.raises(BackboneError, match=r"one plain state dict, no 'teacher' branch"):
        import_weights(path, tmp_path / "out", branch="teacher")


def test_an_export_is_replaced_only_with_overwrite(solo_rn18, tmp_path: Path) -> None:
    path = _save_lightning(tmp_path / "rn18.ckpt", solo_rn18)
    out = import_weights(path, tmp_path / "out").out
    assert (out / "heads.safetensors").is_file()
    plain = tmp_path / "plain.safetensors"
    save_file(_model("resnet18", seed=17).state_dict(), str(plain))
    with pytest.raises(
        BackboneError, match=r"already holds an export \(backbone\.safetensors\): pass --overwrite"
    ):
        import_weights(plain, out)
    import_weights(plain, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["backbone.json", "backbone.safetensors"]
    assert json.loads((out / "backbone.json").read_text())["source"] == "plain.safetensors"


# ----- command line and detection -------------------------------------------------------------
def test_command_line(mocov3_vits, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path, _, _ = mocov3_vits
    assert main(["import-weights", "--list-presets"]) == 0
    listed = capsys.readouterr().out
    assert all(f"{name}:" in listed for name in PRESETS)
    assert "huggingface.co/MLIsaac/benthicnet_mcv3_vit-s_e200_prod" in listed
    assert main(["import-weights", str(path), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "--model-kwargs" in err
    args = [
        "import-weights",
        str(path),
        "--out",
        str(tmp_path / "x"),
        "--model-kwargs",
        "{num_heads: 12}",
    ]
    assert main(args) == 2
    assert "--model-kwargs: not JSON" in capsys.readouterr().err
    args[-1] = '{"num_heads": 12}'
    assert main([*args, "--mean", "0.1", "0.2", "0.3", "--std", "0.3", "0.2", "0.1"]) == 0
    printed = capsys.readouterr().out
    assert "architecture: ViT-S/16, 64 px (4x4 patches, class token), 12 heads" in printed
    assert f"backbone.name={VIT_S} backbone.weights={tmp_path / 'x'}" in printed
    meta = json.loads((tmp_path / "x" / "backbone.json").read_text())
    assert (meta["mean"], meta["std"], meta["preset"]) == ([0.1, 0.2, 0.3], [0.3, 0.2, 0.1], None)


@pytest.mark.parametrize(
    "name,label",
    [
        ("resnet18", "resnet18"),
        ("resnet34", "resnet34"),
        ("resnet50", "resnet50"),
        ("resnet101", "resnet101"),
        ("resnet152", "resnet152"),
        ("wide_resnet50_2", "wide_resnet50_2"),
        ("resnext50_32x4d", "resnext50_32x4d"),
    ],
)
def test_resnets_are_told_apart(name: str, label: str) -> None:
    with torch.device("meta"):
        state = getattr(torchvision.models, name)().state_dict()
    assert detect(state, name).label == label


@pytest.mark.parametrize(
    "name,label,heads",
    [
        ("vit_tiny_patch16_224", "vit_tiny_patch16", 3),
        ("vit_small_patch16_224", "vit_small_patch16", 6),
        ("vit_base_patch16_224", "vit_base_patch16", 12),
        ("vit_large_patch16_224", "vit_large_patch16", 16),
        ("vit_base_patch32_384", "vit_base_patch32", 12),
        ("vit_base_patch14_dinov2", "vit_base_patch14", 12),
        ("vit_medium_patch16_gap_256", "vit_w512_d12_patch16", 8),
    ],
)
def test_vits_resolve_to_a_model_of_the_same_shapes(name: str, label: str, heads: int) -> None:
    """Detected kwargs rebuild every tensor shape of the source (on the meta device)."""
    source = meta_model(name, {})
    state = source.state_dict()
    arch = detect(state, name)
    assert arch.label == label
    timm_name, kwargs = resolve_vit(arch, list(arch.names), heads, {}, name)
    rebuilt = meta_model(timm_name, kwargs)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in state.items()
    }
    assert vit_signature(rebuilt) == vit_signature(source)
