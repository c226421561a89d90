"""Foundation-model releases (DINOv2, DINOv3, BioCLIP / open_clip) in their own key layouts, imported
through timm's checkpoint filters: features equal a reference forward, at another image size too.

Files are built from small random models in each release's key structure (the documented renames
applied backwards to a timm model, or open_clip's own CLIP with `pretrained=None`); full-size
checks use tensors expanded from one number, which save in a few bytes, and never run a forward.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from fixtures.foundation import TINY_VIT_KWARGS, dinov2_release, seeded
from safetensors.torch import load_file, save_file
from timm.layers import resample_abs_pos_embed
from torch import Tensor, nn

from hml_finetune.finetune.config import BackboneConfig
from hml_finetune.finetune.model import build_backbone
from ssl_benthic.cli import main
from ssl_benthic.core.errors import BackboneError
from ssl_benthic.weights.arch_detect import meta_model
from ssl_benthic.weights.backbones import create_backbone, feature_dim
from ssl_benthic.weights.import_weights import import_weights
from ssl_benthic.weights.presets_foundation import CLIP_MEAN, CLIP_STD
from ssl_benthic.weights.vit_features import apply_pool, backbone_img_size

ATOL = 1e-5
TINY = TINY_VIT_KWARGS


@torch.no_grad()
def _features(model: nn.Module, x: Tensor) -> Tensor:
    return model.eval()(x)


def _expanded(model_name: str, **kwargs) -> dict[str, Tensor]:
    """A full-size state dict of the right shapes, every tensor one number expanded (tiny file)."""
    return {
        k: torch.zeros(1).expand(*v.shape) if v.ndim else torch.zeros(())
        for k, v in meta_model(model_name, kwargs).state_dict().items()
    }


# ----- DINOv2 ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dinov2_reg(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module]:
    model = seeded("vit_small_patch14_reg4_dinov2", 0, img_size=70, **TINY)  # 5x5 patches
    path = tmp_path_factory.mktemp("dinov2") / "dinov2_vitt14_reg4_pretrain.pth"
    torch.save(dinov2_release(model, 1), path)
    return path, model


def test_dinov2_release_with_registers(dinov2_reg, tmp_path: Path) -> None:
    path, model = dinov2_reg
    result = import_weights(path, tmp_path / "d")
    meta = result.meta
    assert meta["layout"] == "DINOv2 release (facebookresearch/dinov2)"
    assert meta["timm_name"] == "vit_small_patch14_reg4_dinov2"
    assert meta["model_kwargs"]["img_size"] == 70 and meta["img_size"] == 70
    assert result.heads == {"mask_token": 1}
    x = torch.randn(2, 3, 70, 70)
    got = _features(create_backbone(meta["timm_name"], weights=result.out), x)
    torch.testing.assert_close(got, _features(model, x), rtol=0, atol=ATOL)


def test_dinov2_at_another_size_resamples_in_import_and_in_finetuning(
    dinov2_reg, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The reported bug: an import used at another image size failed inside the model with an
    AssertionError; the fine-tuning stage now builds it for the input size, resampled."""
    path, model = dinov2_reg
    out = import_weights(path, tmp_path / "d").out
    x = torch.randn(2, 3, 42, 42)
    with pytest.raises(AssertionError):  # what fine-tuning at 42 px did with the 70 px export
        _features(
            build_backbone(BackboneConfig(name="vit_small_patch14_reg4_dinov2", weights=str(out))),
            x,
        )
    size, note = backbone_img_size(str(out), None, 42)
    assert size == 42 and "made for 70 px" in note
    assert backbone_img_size(str(out), None, 70) == (None, None)
    cfg = BackboneConfig(name="vit_small_patch14_reg4_dinov2", weights=str(out), img_size=size)
    reference = timm.create_model(
        "vit_small_patch14_reg4_dinov2", pretrained=False, num_classes=0, img_size=42, **TINY
    )
    state = model.state_dict()
    state["pos_embed"] = resample_abs_pos_embed(state["pos_embed"], [3, 3], [5, 5], 0)
    reference.load_state_dict(state)
    expected = _features(reference, x)
    torch.testing.assert_close(_features(build_backbone(cfg), x), expected, rtol=0, atol=ATOL)
    # at import time too, said so
    args = ["import-weights", str(path), "--out", str(tmp_path / "s"), "--img-size", "42"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "layout: DINOv2 release" in printed
    assert (
        "resampled by timm (bicubic) from the release's 5x5 patches (70 px) to 3x3 (42 px)"
        in printed
    )
    got = _features(create_backbone("vit_small_patch14_reg4_dinov2", weights=tmp_path / "s"), x)
    torch.testing.assert_close(got, expected, rtol=0, atol=ATOL)


def test_timm_dinov2_safetensors_with_its_preset(tmp_path: Path) -> None:
    model = seeded("vit_small_patch14_reg4_dinov2", 2, img_size=28)  # a real ViT-S, 2x2 patches
    path = tmp_path / "model.safetensors"
    save_file(model.state_dict(), str(path))
    result = import_weights(path, tmp_path / "d", preset="dinov2_vits14_reg4")
    assert (result.meta["timm_name"], result.meta["model_kwargs"]) == (
        "vit_small_patch14_reg4_dinov2",
        {"img_size": 28},
    )
    x = torch.randn(1, 3, 28, 28)
    got = _features(create_backbone("vit_small_patch14_reg4_dinov2", weights=result.out), x)
    torch.testing.assert_close(got, _features(model, x), rtol=0, atol=ATOL)


def test_register_mix_up_and_vit_l_as_vit_b_fail(tmp_path: Path) -> None:
    reg = tmp_path / "dinov2_vits14_reg4_pretrain.pth"
    torch.save(_dinov2_release_shapes("vit_small_patch14_reg4_dinov2"), reg)
    with pytest.raises(
        BackboneError,
        match=r"preset 'dinov2_vits14' is vit_small_patch14, but the keys say "
        r"vit_small_patch14_reg4 \(ViT-S/14, 518 px .*4 registers\)\): wrong file or wrong preset",
    ):
        import_weights(reg, tmp_path / "out", preset="dinov2_vits14")
    plain = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(_dinov2_release_shapes("vit_small_patch14_dinov2"), plain)
    with pytest.raises(
        BackboneError, match=r"is vit_small_patch14_reg4, but the keys say vit_small_patch14 "
    ):
        import_weights(plain, tmp_path / "out", preset="dinov2_vits14_reg4")
    large = tmp_path / "dinov2_vitl14_pretrain.pth"
    torch.save(_dinov2_release_shapes("vit_large_patch14_dinov2"), large)
    with pytest.raises(
        BackboneError,
        match=r"preset 'dinov2_vitb14' is vit_base_patch14, but the keys say vit_large_patch14 "
        r"\(ViT-L/14, 518 px",
    ):
        import_weights(large, tmp_path / "out", preset="dinov2_vitb14")
    assert not (tmp_path / "out").exists()


def _dinov2_release_shapes(name: str) -> dict[str, Tensor]:
    state = _expanded(name)
    if "reg_token" in state:
        state["register_tokens"] = state.pop("reg_token")
        state["pos_embed"] = torch.zeros(1).expand(1, 1 + 37 * 37, state["cls_token"].shape[-1])
    state["mask_token"] = torch.zeros(1, state["cls_token"].shape[-1])
    return state


# ----- DINOv3 ---------------------------------------------------------------------------------
def _dinov3_release(model: nn.Module, seed: int, zero_bias: bool = False) -> dict[str, Tensor]:
    """timm's DINOv3 Eva written back in the release's layout: storage_tokens, ls1/ls2.gamma,
    qkv.bias (a k part, masked off by bias_mask), mask_token, RoPE periods."""
    torch.manual_seed(seed)
    out: dict[str, Tensor] = {"mask_token": torch.randn(1, 64), "rope_embed.periods": torch.rand(8)}
    for key, value in model.state_dict().items():
        key = key.replace("reg_token", "storage_tokens")
        key = key.replace("gamma_1", "ls1.gamma").replace("gamma_2", "ls2.gamma")
        if key.endswith("attn.q_bias"):
            q, v = value, model.state_dict()[key.replace("q_bias", "v_bias")]
            bias = torch.cat([q, torch.randn_like(q), v])
            out[key.replace("q_bias", "qkv.bias")] = bias * 0 if zero_bias else bias
            out[key.replace("q_bias", "qkv.bias_mask")] = torch.cat(
                [torch.ones_like(q), torch.zeros_like(q), torch.ones_like(v)]
            )
        elif not key.endswith("attn.v_bias"):
            out[key] = value.clone()
    return out


@pytest.fixture(scope="module")
def dinov3(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module]:
    model = seeded("vit_small_patch16_dinov3_qkvb", 3, global_pool="token", **TINY)
    path = tmp_path_factory.mktemp("dinov3") / "dinov3_vitt16_pretrain.pth"
    torch.save(_dinov3_release(model, 4), path)
    return path, model


def test_dinov3_release_with_qkv_bias_and_the_three_pools(dinov3, tmp_path: Path) -> None:
    path, model = dinov3
    result = import_weights(path, tmp_path / "d3")
    meta = result.meta
    assert meta["layout"] == "DINOv3 ViT release (facebookresearch/dinov3)"
    assert meta["timm_name"] == "vit_small_patch16_dinov3_qkvb"
    assert meta["model_kwargs"]["global_pool"] == "token"
    assert any("k bias has no effect" in n for n in result.notes)
    x = torch.randn(2, 3, 48, 48)  # RoPE: any multiple of the patch
    cls = _features(create_backbone(meta["timm_name"], weights=result.out), x)
    torch.testing.assert_close(cls, _features(model, x), rtol=0, atol=ATOL)
    mean = _features(create_backbone(meta["timm_name"], weights=result.out, pool="mean"), x)
    model.global_pool = "avg"  # timm's avg skips the class and 4 register tokens
    torch.testing.assert_close(mean, _features(model, x), rtol=0, atol=ATOL)
    model.global_pool = "token"
    both = create_backbone(meta["timm_name"], weights=result.out, pool="cls+mean")
    assert feature_dim(both) == 128
    torch.testing.assert_close(_features(both, x), torch.cat([cls, mean], 1), rtol=0, atol=ATOL)


def test_dinov3_zero_biases_pick_the_plain_variant_and_timm_files_import(tmp_path: Path) -> None:
    model = seeded("vit_small_patch16_dinov3", 5, global_pool="token", **TINY)
    plain = tmp_path / "zero.pth"
    as_qkvb = seeded("vit_small_patch16_dinov3_qkvb", 5, global_pool="token", **TINY)
    as_qkvb.load_state_dict(model.state_dict(), strict=False)  # same weights, biases then zeroed
    torch.save(_dinov3_release(as_qkvb, 6, zero_bias=True), plain)
    result = import_weights(plain, tmp_path / "p")
    assert result.meta["timm_name"] == "vit_small_patch16_dinov3"
    assert any("all zero" in n for n in result.notes)
    x = torch.randn(1, 3, 32, 32)
    got = _features(create_backbone("vit_small_patch16_dinov3", weights=result.out), x)
    torch.testing.assert_close(got, _features(model, x), rtol=0, atol=ATOL)
    timm_file = tmp_path / "model.safetensors"  # timm's own DINOv3 safetensors (Eva keys)
    save_file(model.state_dict(), str(timm_file))
    again = import_weights(timm_file, tmp_path / "t")
    assert again.meta["layout"].startswith("timm DINOv3 ViT (Eva")
    got = _features(create_backbone(again.meta["timm_name"], weights=again.out), x)
    torch.testing.assert_close(got, _features(model, x), rtol=0, atol=ATOL)


def test_dinov3_convnext_release(tmp_path: Path) -> None:
    kwargs = {"depths": (1, 1, 1, 1), "dims": (8, 16, 32, 64)}
    model = seeded("convnext_tiny", 7, **kwargs)
    fb = {}
    for key, value in model.state_dict().items():  # timm -> facebookresearch ConvNeXt names
        key = key.replace("stem.", "downsample_layers.0.").replace("head.norm", "norm")
        key = key.replace("conv_dw", "dwconv").replace("mlp.fc", "pwconv")
        for i in range(4):
            key = key.replace(f"stages.{i}.downsample.", f"downsample_layers.{i}.")
            key = key.replace(f"stages.{i}.blocks.", f"stages.{i}.")
        fb[key] = value.clone()
    path = tmp_path / "dinov3_convnext_tiny_pretrain.pth"
    torch.save(fb, path)
    result = import_weights(path, tmp_path / "c")
    assert result.meta["layout"] == "DINOv3 ConvNeXt release (facebookresearch/dinov3)"
    assert result.meta["timm_name"] == "convnext_tiny"
    x = torch.randn(1, 3, 64, 64)
    got = _features(create_backbone("convnext_tiny", weights=result.out), x)
    torch.testing.assert_close(got, _features(model, x), rtol=0, atol=ATOL)


# ----- BioCLIP (open_clip) --------------------------------------------------------------------
@pytest.fixture(scope="module")
def clip_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module]:
    """A small open_clip CLIP (QuickGELU, as BioCLIP's OpenAI start): image and text towers."""
    open_clip = pytest.importorskip("open_clip")
    torch.manual_seed(8)
    vision = {"image_size": 32, "layers": 2, "width": 128, "patch_size": 16, "head_width": 64}
    text = {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}
    model = open_clip.CLIP(embed_dim=24, vision_cfg=vision, text_cfg=text, quick_gelu=True).eval()
    with torch.no_grad():
        for key, value in model.visual.named_parameters():
            if "ln_" in key or key.endswith("bias"):
                value.normal_(0, 0.5)
    path = tmp_path_factory.mktemp("clip") / "open_clip_pytorch_model.bin"
    torch.save(model.state_dict(), path)
    return path, model


def test_bioclip_layout_trunk_feature_and_projection(clip_file, tmp_path: Path) -> None:
    path, model = clip_file
    name = "vit_base_patch16_clip_quickgelu_224"  # the timm name a bioclip preset gives
    result = import_weights(path, tmp_path / "b", timm_name=name)
    meta = result.meta
    assert meta["layout"] == "open_clip / OpenAI CLIP (visual.* image tower)"
    assert (meta["mean"], meta["std"]) == (list(CLIP_MEAN), list(CLIP_STD))
    assert any(n.startswith("dropped the text tower") for n in result.notes)
    assert set(load_file(str(result.out / "heads.safetensors"))) == {"visual.proj"}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        projected = model.encode_image(x)
        proj, model.visual.proj = model.visual.proj, None
        trunk = model.visual(x)  # ln_post of the class token, before the projection
        model.visual.proj = proj
    backbone = create_backbone(name, weights=result.out)
    assert feature_dim(backbone) == 128
    torch.testing.assert_close(_features(backbone, x), trunk, rtol=0, atol=ATOL)
    emb = import_weights(path, tmp_path / "e", timm_name=name, clip_projection=True)
    assert emb.meta["model_kwargs"]["num_classes"] == 24
    backbone = create_backbone(name, weights=emb.out)
    assert feature_dim(backbone) == 24
    torch.testing.assert_close(_features(backbone, x), projected, rtol=0, atol=ATOL)
    gelu = import_weights(path, tmp_path / "g")  # no name: GELU, and said so
    assert gelu.meta["timm_name"] == "vit_base_patch16_clip_224"
    assert any("GELU or QuickGELU" in n for n in gelu.notes)


# ----- pooling --------------------------------------------------------------------------------
def test_pool_choices_and_refusals() -> None:
    vit = create_backbone("vit_tiny_patch16_224", img_size=32, pool="cls+mean")
    assert feature_dim(vit) == 384 and _features(vit, torch.randn(1, 3, 32, 32)).shape == (1, 384)
    with pytest.raises(BackboneError, match=r"cls\+mean is for ViTs"):
        create_backbone("resnet18", pool="cls+mean")
    assert feature_dim(create_backbone("resnet18", pool="mean")) == 512
    with pytest.raises(BackboneError, match=r"pools by average \(fc_norm"):
        apply_pool(
            timm.create_model("vit_tiny_patch16_224", num_classes=0, global_pool="avg"), "cls"
        )
    with pytest.raises(BackboneError, match=r"must be one of cls, mean, cls\+mean"):
        create_backbone("resnet18", pool="max")


def test_export_json_is_what_timm_loads(dinov2_reg, tmp_path: Path) -> None:
    path, model = dinov2_reg
    out = import_weights(path, tmp_path / "d").out
    meta = json.loads((out / "backbone.json").read_text())
    built = timm.create_model(
        meta["timm_name"], pretrained=False, num_classes=0, **meta["model_kwargs"]
    )
    built.load_state_dict(load_file(str(out / "backbone.safetensors")))
    x = torch.randn(1, 3, 70, 70)
    torch.testing.assert_close(_features(built, x), _features(model, x), rtol=0, atol=ATOL)
