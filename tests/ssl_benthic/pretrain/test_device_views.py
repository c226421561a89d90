"""`transform.device: accelerator`: the device half draws what the lightly transforms draw, its ops do
what torchvision's and PIL's do, the worker half cuts uint8 crops, and training resumes exactly."""

from __future__ import annotations

import csv
import io
import math
from itertools import permutations
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from fixtures.pretrain import Crash, make_shards, tiny_config
from lightly.transforms.gaussian_blur import GaussianBlur as LightlyBlur
from lightly.transforms.multi_view_transform import MultiViewTransform
from lightly.transforms.rotation import RandomRotate, RandomRotateDegrees
from lightly.transforms.solarize import RandomSolarization
from lightly.transforms.torchvision_v2_compatibility import ToTensor as LightlyToTensor
from PIL import Image, ImageFilter, ImageOps
from scipy.stats import ks_2samp
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from ssl_benthic.core.config import ConfigError
from ssl_benthic.pretrain.augment import (
    DeviceViews,
    WorkerCrops,
    augment_generator,
    decode_for_crops,
    ops,
    plan_views,
)
from ssl_benthic.pretrain.augment.translate import view_composes
from ssl_benthic.pretrain.config import TransformConfig
from ssl_benthic.pretrain.methods import get_method, method_names
from ssl_benthic.pretrain.run import pretrain

METHODS = method_names()  # every registered method
N = 20_000  # parameter draws per view
Z = 4.5  # binomial tolerance in standard errors: a false alarm about once in 150,000 checks


def _transform(name: str, **overrides) -> MultiViewTransform:
    """The method's lightly transform at 224 px (DINO: 2 global + 6 local crops of 96 px)."""
    return get_method(name).build_transform(TransformConfig(**overrides))


def _tolerance(p: float, n: int) -> float:
    return Z * math.sqrt(p * (1 - p) / n) + 1e-12


def _assert_rate(mask: torch.Tensor, p: float, what: str) -> None:
    rate = mask.float().mean().item()
    assert abs(rate - p) <= _tolerance(p, mask.numel()), f"{what}: rate {rate:.4f}, lightly p={p}"


def _lightly_probabilities(entries: list) -> dict[str, float]:
    """What the CPU path fires with, read straight off the lightly view's ops (0: op absent)."""
    found = dict.fromkeys(["hflip", "vflip", "jitter", "gray", "blur", "solarize", "rotate"], 0.0)
    for op in entries:
        if isinstance(op, v2.RandomHorizontalFlip):
            found["hflip"] = op.p
        elif isinstance(op, v2.RandomVerticalFlip):
            found["vflip"] = op.p
        elif isinstance(op, v2.RandomApply):
            found["jitter"] = op.p
        elif isinstance(op, v2.RandomGrayscale):
            found["gray"] = op.p
        elif isinstance(op, LightlyBlur):
            found["blur"] = op.prob
        elif isinstance(op, RandomSolarization):
            found["solarize"] = op.prob
        elif isinstance(op, RandomRotate):
            found["rotate"] = op.prob
    return found


_KINDS = {
    ops.Grayscale: "gray",
    ops.GaussianBlur: "blur",
    ops.Solarize: "solarize",
    ops.ColorJitter: "jitter",
    ops.Rot90: "rotate",
}


def _kind(op: ops.DeviceOp) -> str | None:
    if isinstance(op, ops.Flip):
        return "vflip" if op.vertical else "hflip"
    return _KINDS.get(type(op))


def _drawn_masks(view: DeviceViews, index: int, n: int = N) -> dict[str, torch.Tensor]:
    """The 'applied' mask of every op of view `index` over n draws, by kind."""
    params = view.draw(n, augment_generator(7, 0, 0))[index]
    return {
        _kind(op): p["apply"]
        for op, p in zip(view.views[index].ops, params, strict=True)
        if "apply" in p
    }


# ----- the parameter distributions of every method ---------------------------------------------


@pytest.mark.parametrize("name", METHODS)
def test_drawn_rates_match_the_lightly_probabilities(name: str) -> None:
    """Per view, every op fires at the rate the lightly object says (absent ops never fire)."""
    transform = _transform(name, vf_prob=0.3, rr_prob=0.25)  # flips and rotations switched on too
    device = DeviceViews.from_transform(transform)
    entries = view_composes(transform)
    assert len(device.views) == len(entries) == len(transform(Image.new("RGB", (240, 240))))
    for i, lightly_view in enumerate(entries):
        masks = _drawn_masks(device, i)
        for kind, p in _lightly_probabilities(lightly_view).items():
            if p == 0:
                assert kind not in masks, f"view {i}: {kind} is off in lightly but drawn"
            else:
                _assert_rate(masks[kind], p, f"{name} view {i} {kind}")


def test_byol_views_are_asymmetric_as_in_the_paper() -> None:
    """View 1: blur always, never solarised; view 2: blur 0.1, solarise 0.2; both jitter 0.8, gray 0.2."""
    device = DeviceViews.from_transform(_transform("byol"))
    v1, v2_ = _drawn_masks(device, 0), _drawn_masks(device, 1)
    assert bool(v1["blur"].all()) and "solarize" not in v1
    _assert_rate(v2_["blur"], 0.1, "view 2 blur")
    _assert_rate(v2_["solarize"], 0.2, "view 2 solarize")
    for masks in (v1, v2_):
        _assert_rate(masks["jitter"], 0.8, "jitter")
        _assert_rate(masks["gray"], 0.2, "gray")
        _assert_rate(masks["hflip"], 0.5, "hflip")


def test_dino_global_and_local_views() -> None:
    """Blur 1.0 / 0.1 / 0.5 on global 1 / global 2 / locals, solarise 0.2 on global 2 only."""
    device = DeviceViews.from_transform(_transform("dino"))
    assert [v.size for v in device.views] == [(224, 224)] * 2 + [(96, 96)] * 6
    expected = [(1.0, 0.0), (0.1, 0.2)] + [(0.5, 0.0)] * 6
    params = device.draw(N, augment_generator(3, 5, 0))
    for i, (blur, solarize) in enumerate(expected):
        masks = {
            _kind(op): p.get("apply") for op, p in zip(device.views[i].ops, params[i], strict=True)
        }
        _assert_rate(masks["blur"], blur, f"view {i} blur")
        if solarize:
            _assert_rate(masks["solarize"], solarize, f"view {i} solarize")
        else:
            assert "solarize" not in masks
    # the local crops share one lightly object, yet each view draws its own (op 1: the jitter)
    locals_ = [params[i][1]["apply"] for i in range(2, 8)]
    assert not all(torch.equal(locals_[0], m) for m in locals_[1:])


@pytest.mark.parametrize("name", ["byol", "simclr", "dino"])
def test_jitter_factors_sigmas_and_order(name: str) -> None:
    """Factors uniform over the lightly ColorJitter's ranges, sigmas over the blur's, and the four
    adjustments in a uniformly random order per sample (each of the 24 orders about 1/24)."""
    transform = _transform(name)
    entries = transform.transforms[0].transform.transforms
    jitter = next(op for op in entries if isinstance(op, v2.RandomApply)).transforms[0]
    blur = next(op for op in entries if isinstance(op, LightlyBlur))
    ranges = [jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue]
    device = DeviceViews.from_transform(transform)
    view = device.views[0]
    params = dict(zip(map(_kind, view.ops), view.draw(N, augment_generator(1, 2, 3)), strict=True))
    factors = params["jitter"]["factors"]
    for k, (lo, hi) in enumerate(ranges):
        f = factors[:, k]
        assert lo <= f.min().item() and f.max().item() <= hi, (k, lo, hi)
        for q in (0.25, 0.5, 0.75):  # quartiles of a uniform over [lo, hi]
            _assert_rate(f < lo + q * (hi - lo), q, f"jitter factor {k} quantile {q}")
    sigma = params["blur"]["sigma"]
    assert blur.sigmas[0] <= sigma.min().item() and sigma.max().item() <= blur.sigmas[1]
    _assert_rate(sigma < sum(blur.sigmas) / 2, 0.5, "sigma median")
    order = params["jitter"]["order"]
    assert torch.equal(order.sort(dim=1).values, torch.arange(4).expand(N, 4))
    for perm in permutations(range(4)):
        _assert_rate((order == torch.tensor(perm)).all(dim=1), 1 / 24, f"order {perm}")


def test_draws_follow_seed_step_and_rank() -> None:
    device = DeviceViews.from_transform(_transform("byol"))
    crops = [torch.randint(0, 256, (6, 3, 224, 224), dtype=torch.uint8) for _ in range(2)]
    a = device(crops, augment_generator(0, 5, 0))
    b = device(crops, augment_generator(0, 5, 0))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    for other in (
        augment_generator(1, 5, 0),
        augment_generator(0, 6, 0),
        augment_generator(0, 5, 1),
    ):
        c = device(crops, other)
        assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("name", ["byol", "dino", "mae"])
def test_views_are_distributed_as_the_cpu_paths(name: str) -> None:
    """End to end on one image, 1,000 views per path: the per-view mean and contrast (std) of the
    accelerator path's views follow the CPU path's distribution (two-sample KS test, seeded)."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).resize((96, 96))
    transform = get_method(name).build_transform(
        TransformConfig(input_size=32, local_crop_size=16, n_local_views=2)
    )
    torch.manual_seed(0), np.random.seed(0)
    cpu = [torch.stack(v) for v in zip(*(transform(image) for _ in range(1000)), strict=True)]
    crops = WorkerCrops(plan_views(transform))
    uint8 = [torch.stack(v) for v in zip(*(crops(image) for _ in range(1000)), strict=True)]
    ours = DeviceViews.from_transform(transform)(uint8, augment_generator(0, 0, 0))
    for i, (a, b) in enumerate(zip(cpu, ours, strict=True)):
        assert a.shape == b.shape and a.dtype == b.dtype
        for stat in (torch.mean, torch.std):
            p = ks_2samp(stat(a, dim=(1, 2, 3)).numpy(), stat(b, dim=(1, 2, 3)).numpy()).pvalue
            assert p > 1e-3, (i, stat.__name__, p)


# ----- the ops do what torchvision and PIL do --------------------------------------------------


def _images(n: int, size: int = 24, seed: int = 0) -> torch.Tensor:
    """n smooth random uint8 images (upsampled noise, so blur and contrast have work to do)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        small = Image.fromarray(rng.integers(0, 256, (size // 4, size // 4, 3), dtype=np.uint8))
        out.append(F.pil_to_tensor(small.resize((size, size), Image.BICUBIC)))
    return torch.stack(out)


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return F.to_dtype(x, torch.float32, scale=True)


def test_jitter_equals_torchvision_per_sample_in_each_samples_order() -> None:
    """Batched jitter == torchvision's adjust_* per sample, with that sample's factors and order."""
    op = ops.ColorJitter(p=0.8, ranges=((0.6, 1.4), (0.5, 1.5), (0.2, 1.8), (-0.2, 0.2)))
    x = _as_float(_images(64))
    params = op.draw(64, augment_generator(0, 0, 0))
    got = op.apply(x.clone(), params)
    fns = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue)
    for i in range(64):
        want = x[i]
        if params["apply"][i]:
            for k in params["order"][i].tolist():
                want = fns[k](want, float(params["factors"][i, k]))
        torch.testing.assert_close(got[i], want, atol=2e-6, rtol=0)


def test_pixel_ops_equal_pil_and_torchvision() -> None:
    """Flips, quarter turns and solarisation exactly as PIL; grayscale within a rounding step."""
    crops = _images(4)
    x = _as_float(crops)
    pil = [F.to_pil_image(c) for c in crops]
    every = torch.ones(4, dtype=torch.bool)

    def pil_batch(fn) -> torch.Tensor:
        return _as_float(torch.stack([F.pil_to_tensor(fn(im)) for im in pil]))

    cases = [
        (ops.Flip(p=1.0), lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT), 0.0),
        (
            ops.Flip(p=1.0, vertical=True),
            lambda im: im.transpose(Image.Transpose.FLIP_TOP_BOTTOM),
            0.0,
        ),
        (ops.Rot90(p=1.0, quarter_turns=1), lambda im: im.rotate(90), 0.0),
        (ops.Solarize(p=1.0, threshold=128 / 255), lambda im: ImageOps.solarize(im, 128), 1e-6),
        (ops.Grayscale(p=1.0), lambda im: im.convert("L").convert("RGB"), 1 / 255 + 1e-6),
    ]
    for op, fn, atol in cases:
        got = op.apply(x.clone(), {"apply": every})
        torch.testing.assert_close(got, pil_batch(fn), atol=atol, rtol=0, msg=repr(op))


def test_blur_is_pil_gaussian_blur_per_sample() -> None:
    """Each sample blurred with its own sigma, within about one grey level of PIL's GaussianBlur
    (PIL approximates the Gaussian with box filters); samples that are not drawn stay untouched."""
    op = ops.GaussianBlur(p=0.5, sigmas=(0.1, 2.0))
    crops = _images(32, size=48)
    x = _as_float(crops)
    params = op.draw(32, augment_generator(0, 1, 0))
    got = op.apply(x.clone(), params)
    for i in range(32):
        if not params["apply"][i]:
            assert torch.equal(got[i], x[i])
            continue
        im = F.to_pil_image(crops[i]).filter(ImageFilter.GaussianBlur(float(params["sigma"][i])))
        diff = (got[i] - _as_float(F.pil_to_tensor(im))).abs()
        assert diff.mean().item() < 1.5 / 255 and diff.max().item() < 10 / 255, i


def test_views_are_float32_normalised_and_shaped() -> None:
    """DINO at 32 px with 2 local crops of 16 px: uint8 crops in, float32 normalised views out."""
    cfg = tiny_config("dino", Path("x"), Path("x"))
    transform = get_method("dino").build_transform(cfg.transform)
    device = DeviceViews.from_transform(transform)
    crops = [torch.randint(0, 256, (5, 3, s, s), dtype=torch.uint8) for s in (32, 32, 16, 16)]
    views = device(crops, augment_generator(0, 0, 0))
    assert [tuple(v.shape) for v in views] == [(5, 3, 32, 32)] * 2 + [(5, 3, 16, 16)] * 2
    assert all(v.dtype == torch.float32 for v in views)
    mean, std = torch.tensor(cfg.transform.mean), torch.tensor(cfg.transform.std)
    lo, hi = (-mean / std).min().item(), ((1 - mean) / std).max().item()
    assert all(lo - 1e-5 <= v.min().item() and v.max().item() <= hi + 1e-5 for v in views)
    with pytest.raises(ValueError, match="expected uint8 crops of size"):
        device([c.float() for c in crops], augment_generator(0, 0, 0))


# ----- the worker half --------------------------------------------------------------------------


def _jpeg(width: int, height: int) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_worker_cuts_uint8_crops_at_every_views_size() -> None:
    plans = plan_views(_transform("dino"))
    crops = WorkerCrops(plans)
    views = crops(crops.decode(_jpeg(300, 260)))
    assert [tuple(v.shape) for v in views] == [(3, 224, 224)] * 2 + [(3, 96, 96)] * 6
    assert all(v.dtype == torch.uint8 for v in views)


def test_large_jpegs_are_drafted_only_while_crops_stay_at_most_half() -> None:
    """For 224 px views: 1800x1000 decodes at 1/2 (900x500, short side >= 448); 880x880 at full
    size (1/2 would give 440 < 448); a PNG always at full size."""
    assert decode_for_crops(_jpeg(1800, 1000), 224).size == (900, 500)
    assert decode_for_crops(_jpeg(4000, 3000), 224).size == (1000, 750)  # 1/4: 1/8 gives 375
    assert decode_for_crops(_jpeg(880, 880), 224).size == (880, 880)
    buf = io.BytesIO()
    Image.new("RGB", (2000, 2000)).save(buf, format="PNG")
    assert decode_for_crops(buf.getvalue(), 224).size == (2000, 2000)


# ----- what is refused --------------------------------------------------------------------------


def _one_view(*ops_: object) -> MultiViewTransform:
    return MultiViewTransform([v2.Compose([v2.RandomResizedCrop(32), *ops_, LightlyToTensor()])])


@pytest.mark.parametrize(
    ("transform", "match"),
    [
        (_one_view(v2.RandomRotation(30)), r"view 0's RandomRotation.*no batched version"),
        (_one_view(RandomRotateDegrees(prob=0.5, degrees=30)), r"arbitrary angle"),
        (_one_view(RandomRotate(prob=0.5, angle=45)), r"not a quarter turn"),
        (
            _one_view(v2.RandomApply([v2.RandomInvert()], p=0.5)),
            r"only RandomApply\(\[ColorJitter\]\)",
        ),
        (
            MultiViewTransform([v2.Compose([LightlyToTensor()])]),
            r"must start with RandomResizedCrop",
        ),
        (MultiViewTransform([v2.Compose([v2.RandomResizedCrop(32)])]), r"no ToTensor"),
    ],
)
def test_untranslated_ops_are_refused_by_name(transform: MultiViewTransform, match: str) -> None:
    with pytest.raises(ConfigError, match=r"transform\.device: accelerator cannot run .*" + match):
        plan_views(transform)


def test_ops_that_never_fire_are_dropped() -> None:
    plans = plan_views(
        _one_view(RandomRotateDegrees(prob=0.0, degrees=30), v2.RandomVerticalFlip(0.0))
    )
    assert plans[0].ops == ()


# ----- training through the accelerator path ----------------------------------------------------


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shards(tmp_path_factory.mktemp("shards") / "unlabelled", n=32, per_shard=4)


def _accelerator(name: str, shards: Path, out: Path, **sections: dict) -> object:
    transform = {
        "input_size": 32,
        "local_crop_size": 16,
        "n_local_views": 2,
        "device": "accelerator",
    }
    return tiny_config(name, shards, out, transform=transform, **sections)


class FinalState(pl.Callback):
    """The module's state dict and loss state at the end, and the first batch's views."""

    def __init__(self) -> None:
        self.first: list[torch.Tensor] | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.first is None:
            self.first = [v.clone() for v in batch[0]]

    def on_train_end(self, trainer, pl_module) -> None:
        self.step = trainer.global_step
        convs = [p for p in pl_module.parameters() if p.dim() == 4]
        self.channels_last = all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
        self.state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        self.extra = {k: v.detach().clone() for k, v in pl_module.extra_state().items()}


def _differing(a: dict, b: dict) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


@pytest.mark.parametrize(
    ("name", "k"), [("byol", 1), ("byol", 2), ("mocov2", 1), ("dino", 1), ("mae", 1)]
)
def test_accelerator_mode_resumes_exactly(name: str, k: int, shards: Path, tmp_path: Path) -> None:
    """2 epochs of 2 steps; crash after step k, resume 'last': bit-identical weights (and queue)."""
    full = FinalState()
    pretrain(_accelerator(name, shards, tmp_path / "full"), extra_callbacks=[full])
    assert [v.dtype for v in full.first] == [torch.float32] * len(full.first)  # finished on device
    part = _accelerator(name, shards, tmp_path / "part", trainer={"checkpoint_every_n_steps": 1})
    with pytest.raises(RuntimeError, match="simulated crash"):
        pretrain(part, extra_callbacks=[Crash(k)])
    resumed = FinalState()
    pretrain(
        _accelerator(name, shards, tmp_path / "part"), resume="last", extra_callbacks=[resumed]
    )
    assert full.step == resumed.step == 4
    assert _differing(full.state, resumed.state) == []
    assert _differing(full.extra, resumed.extra) == []


def _losses(run: Path) -> list[float]:
    rows = list(csv.DictReader(next(run.rglob("metrics.csv")).open()))
    return [float(r["train_loss"]) for r in rows if r.get("train_loss")]


def test_pretraining_through_the_accelerator_path_learns(shards: Path, tmp_path: Path) -> None:
    """SimCLR on the same 16 images, 24 steps of batch 16, channels-last: the loss falls."""
    cfg = _accelerator(
        "simclr",
        shards,
        tmp_path / "run",
        data={"batch_size": 16, "epoch_samples": 16, "shuffle_buffer": 0},
        optimizer={"name": "adamw", "lr": 1e-3, "warmup_steps": 0, "weight_decay": 0.0},
        trainer={"max_epochs": 24, "checkpoint_every_n_steps": 100, "channels_last": True},
    )
    cfg.transform.global_crop_scale = (0.5, 1.0)
    probe = FinalState()
    pretrain(cfg, extra_callbacks=[probe])
    assert all(v.is_contiguous(memory_format=torch.channels_last) for v in probe.first)
    assert probe.channels_last  # the model's convolution weights too
    losses = _losses(tmp_path / "run")
    assert len(losses) == 24 and all(math.isfinite(x) for x in losses)
    assert np.mean(losses[-6:]) < np.mean(losses[:6]) - 0.2, losses


def test_resume_needs_the_step_seeded_draws(shards: Path, tmp_path: Path, monkeypatch) -> None:
    """Negative control: with draws from a generator that ignores (seed, step, rank), the resumed
    run diverges from the uninterrupted one."""
    counter = iter(range(10**6))
    monkeypatch.setattr(
        "ssl_benthic.pretrain.augment.device.augment_generator",
        lambda *args: torch.Generator().manual_seed(next(counter)),
    )
    full = FinalState()
    pretrain(_accelerator("byol", shards, tmp_path / "full"), extra_callbacks=[full])
    part = _accelerator("byol", shards, tmp_path / "part", trainer={"checkpoint_every_n_steps": 1})
    with pytest.raises(RuntimeError, match="simulated crash"):
        pretrain(part, extra_callbacks=[Crash(2)])
    resumed = FinalState()
    pretrain(
        _accelerator("byol", shards, tmp_path / "part"), resume="last", extra_callbacks=[resumed]
    )
    assert _differing(full.state, resumed.state) != []
