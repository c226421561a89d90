"""MAE: masks keep the prefix tokens and a quarter of the patches, the loss is the MSE to the masked
patches' normalised pixels (sliced out by hand), the prediction never sees a masked pixel, the export
is the encoder alone and loads in timm, and continued pretraining keeps an imported DINOv2 as it is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from fixtures.foundation import TINY_VIT_KWARGS, dinov2_release, seeded
from fixtures.pretrain import TINY_VIT, make_shards, tiny_config
from safetensors.torch import load_file
from torch import Tensor

from ssl_benthic.core.errors import ConfigError
from ssl_benthic.pretrain.methods import get_method
from ssl_benthic.pretrain.run import load_recipe, pretrain
from ssl_benthic.weights.backbones import create_backbone
from ssl_benthic.weights.export import export_backbone
from ssl_benthic.weights.import_weights import import_weights

PATCH, GRID = 8, 4  # the tiny ViT: 32 px in 8 px patches, 16 patches, 4 of them kept


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shards(tmp_path_factory.mktemp("shards") / "unlabelled", n=16)


def _mae(**sections) -> torch.nn.Module:
    torch.manual_seed(0)
    return get_method("mae")(tiny_config("mae", Path("unused"), Path("unused"), **sections))


def test_masks_keep_the_prefix_and_a_quarter_of_the_patches() -> None:
    model = _mae()
    n = 4000
    keep, masked = model.mask(n, torch.device("cpu"))
    assert keep.shape == (n, 1 + 4) and masked.shape == (n, 12)  # int(16 * 0.25) patches kept
    assert torch.equal(keep[:, 0], torch.zeros(n, dtype=torch.long))  # the class token, always
    every = torch.cat([keep, masked], dim=1).sort(dim=1).values
    assert torch.equal(every, torch.arange(17).expand(n, 17))  # a partition of the sequence
    rate = torch.zeros(17).scatter_add_(0, masked.flatten(), torch.ones(masked.numel())) / n
    assert rate[0] == 0 and ((rate[1:] - 0.75).abs() < 0.035).all(), rate  # 4.5 s.e. of 0.75

    registers = _mae(backbone={"kwargs": {**TINY_VIT["kwargs"], "reg_tokens": 4}})
    keep, masked = registers.mask(8, torch.device("cpu"))
    assert keep.shape == (8, 5 + 4) and torch.equal(keep[:, :5], torch.arange(5).expand(8, 5))
    assert masked.shape == (8, 12) and bool((masked >= 5).all())


def test_the_encoder_sees_only_the_kept_tokens_and_the_decoder_predicts_the_rest() -> None:
    model = _mae()
    seen: dict[str, tuple[int, ...]] = {}

    def record(name: str, shape: torch.Size) -> None:  # a hook returning a value replaces it
        seen[name] = tuple(shape)

    model.backbone.blocks[0].register_forward_pre_hook(lambda m, a: record("encoder", a[0].shape))
    model.decoder_pred.register_forward_hook(lambda m, a, out: record("predicted", out.shape))
    model.compute_loss([torch.randn(3, 3, 32, 32)])
    assert seen == {"encoder": (3, 1 + 4, 32), "predicted": (3, 12, PATCH * PATCH * 3)}


def test_every_trainable_parameter_gets_a_gradient() -> None:
    """DDP stalls on a trainable parameter the loss never reaches: an average-pooling ViT's fc_norm
    (after the tokens) is frozen, everything else trains."""
    vit = {"kwargs": {**TINY_VIT["kwargs"], "global_pool": "avg", "fc_norm": True}, "pool": "mean"}
    model = _mae(backbone=vit)
    model.compute_loss([torch.randn(2, 3, 32, 32)]).backward()
    trainable = {k for k, p in model.named_parameters() if p.requires_grad}
    assert trainable == {k for k, p in model.named_parameters() if p.grad is not None}
    assert not any(k.startswith("backbone.fc_norm") for k in trainable)
    assert "backbone.blocks.1.mlp.fc2.weight" in trainable and "decoder.mask_token" in trainable


def _fixed_mask(model: torch.nn.Module, n: int) -> tuple[Tensor, Tensor]:
    torch.manual_seed(5)
    keep, masked = model.mask(n, torch.device("cpu"))
    model.mask = lambda batch, device: (keep, masked)
    return keep, masked


def _patch(x: Tensor, b: int, j: int) -> Tensor:
    """Patch j (row-major) of image b, flattened as (row, column, channel)."""
    r, c = divmod(j, GRID)
    return x[b, :, r * PATCH : (r + 1) * PATCH, c * PATCH : (c + 1) * PATCH].permute(1, 2, 0)


@pytest.mark.parametrize("norm_pix", [True, False])
def test_loss_is_the_mse_to_the_masked_patches_normalised_pixels(norm_pix: bool) -> None:
    params = {"decoder_dim": 32, "decoder_depth": 1, "decoder_num_heads": 2}
    model = _mae(method={"params": {**params, "norm_pix_loss": norm_pix}})
    x = torch.randn(2, 3, 32, 32)
    _, masked = _fixed_mask(model, 2)
    out: list[Tensor] = []
    model.decoder_pred.register_forward_hook(lambda m, args, o: out.append(o))
    loss = model.compute_loss([x])
    errors = []
    for b in range(2):
        for i, token in enumerate(masked[b].tolist()):
            target = _patch(x, b, token - 1).reshape(-1)
            if norm_pix:
                target = (target - target.mean()) / (target.var() + 1e-6).sqrt()
            errors.append(((out[0][b, i] - target) ** 2).mean())
    torch.testing.assert_close(loss, torch.stack(errors).mean(), rtol=1e-5, atol=1e-6)


def test_the_prediction_never_sees_a_masked_pixel() -> None:
    model = _mae().eval()
    x = torch.randn(2, 3, 32, 32)
    keep, masked = _fixed_mask(model, 2)
    out: list[Tensor] = []
    model.decoder_pred.register_forward_hook(lambda m, args, o: out.append(o))

    def with_noise_in(tokens: Tensor) -> Tensor:
        y = x.clone()
        for b in range(2):
            for token in tokens[b].tolist():
                _patch(y, b, token - 1).copy_(torch.randn(PATCH, PATCH, 3))
        return y

    with torch.no_grad():
        for images in (x, with_noise_in(masked), with_noise_in(keep[:, 1:])):
            model.compute_loss([images])
    torch.testing.assert_close(out[1], out[0], rtol=0, atol=1e-6)  # masked pixels: no effect
    assert not torch.allclose(out[2], out[0], atol=1e-3)  # kept pixels: the prediction moves


def test_mae_refuses_a_cnn_a_wrong_grid_and_views_it_does_not_make(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("method: {name: mae}\nbackbone: {name: resnet18}\n")
    with pytest.raises(ConfigError, match=r"r\.yaml.*'resnet18' is not one"):
        load_recipe(recipe)
    recipe.write_text("method: {name: mae}\nbackbone: {name: vit_tiny_patch16_224}\n")
    with pytest.raises(ConfigError, match=r"transform\.vf_prob: MAE's view"):
        load_recipe(recipe, ["transform.vf_prob=0.5"])
    with pytest.raises(ValueError, match=r"input_size 32 differs from the ViT's 64 px"):
        _mae(backbone={"img_size": 64})


def test_export_is_the_encoder_and_loads_in_timm(shards: Path, tmp_path: Path) -> None:
    cfg = tiny_config("mae", shards, tmp_path / "run", trainer={"max_epochs": 1})
    pretrain(cfg)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    out = export_backbone(ckpt, tmp_path / "export")
    meta = json.loads((out / "backbone.json").read_text())
    assert (meta["method"], meta["timm_name"], meta["step"]) == ("mae", TINY_VIT["name"], 2)
    model = get_method("mae")(cfg)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict(state, strict=True)
    model.eval()
    exported = load_file(str(out / "backbone.safetensors"))
    assert set(exported) == {
        k.removeprefix("backbone.") for k in state if k.startswith("backbone.")
    }
    assert not any(k.startswith("decoder") for k in exported)  # the decoder is dropped
    by_timm = timm.create_model(
        TINY_VIT["name"],
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(out / "backbone.safetensors")),
        num_classes=0,
        **meta["model_kwargs"],
    ).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = model.encoder(x)  # lightly's masked encoder, nothing masked: the class token
        torch.testing.assert_close(by_timm(x), expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(model.backbone(x), expected, rtol=0, atol=1e-5)
    assert not model.backbone.pos_embed.requires_grad  # from random: MAE's fixed sine-cosine


@pytest.fixture(scope="module")
def dinov2_import(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny DINOv2 release with registers (70 px, 5x5 patches of 14), imported."""
    root = tmp_path_factory.mktemp("dinov2")
    model = seeded("vit_small_patch14_reg4_dinov2", 0, img_size=70, **TINY_VIT_KWARGS)
    torch.save(dinov2_release(model, 1), root / "dinov2_vitt14_reg4_pretrain.pth")
    return import_weights(root / "dinov2_vitt14_reg4_pretrain.pth", root / "import").out


def test_continued_from_a_dinov2_import_with_a_fresh_decoder(
    dinov2_import: Path, shards: Path, tmp_path: Path
) -> None:
    backbone = {
        "name": "vit_small_patch14_reg4_dinov2",
        "weights": str(dinov2_import),
        "img_size": None,
        "patch_size": None,
        "kwargs": {},
    }
    cfg = tiny_config(
        "mae",
        shards,
        tmp_path / "run",
        backbone=backbone,
        transform={"input_size": 70},
        trainer={"max_epochs": 1},
    )
    model = get_method("mae")(cfg).eval()
    expected = load_file(str(dinov2_import / "backbone.safetensors"))
    got = model.backbone.state_dict()
    assert got.keys() == expected.keys() and all(
        torch.equal(got[k], v) for k, v in expected.items()
    )
    assert model.prefix == 5 and model.num_patches == 25 and model.backbone.pos_embed.requires_grad
    assert model.heads_init and all("fresh" in line for line in model.heads_init)
    x = torch.randn(2, 3, 70, 70)
    with torch.no_grad():  # lightly's encoder on the import (registers, no class position) = timm's
        reference = create_backbone(backbone["name"], weights=dinov2_import).eval()(x)
        torch.testing.assert_close(model.encoder(x), reference, rtol=0, atol=1e-5)
    pretrain(cfg)
    out = export_backbone(tmp_path / "run" / "checkpoints" / "last.ckpt", tmp_path / "export")
    trained = create_backbone(backbone["name"], weights=out).eval()
    with torch.no_grad():
        assert not torch.allclose(trained(x), reference, atol=1e-4)  # it did train
