"""Batched image ops with per-sample random parameters: the accelerator half of the views.

Each op draws the parameters of a whole batch at once (`draw(n, generator)`: tensors of n rows, on the
CPU) from the distribution of the torchvision / lightly transform it stands for, then applies them to
a float32 batch in [0, 1] on any device (`apply(x, params)`). An op computes each sample once: the
samples it touches are picked on the host from the CPU-drawn parameters, so nothing waits for the
accelerator. Images are float32 here, never reduced precision (the ops run outside autocast).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as nnf
from torch import Tensor
from torchvision.transforms.v2 import functional as F

# torchvision's own batched RGB <-> HSV math (what `adjust_hue` runs), reused for per-sample hue factors
from torchvision.transforms.v2.functional._color import _hsv_to_rgb, _rgb_to_hsv

__all__ = [
    "DeviceOp",
    "Flip",
    "Rot90",
    "ColorJitter",
    "Grayscale",
    "GaussianBlur",
    "Solarize",
    "Normalize",
    "Params",
    "apply_where",
]

Params = dict[str, Tensor]


def _uniform(n: int, gen: torch.Generator, low: float = 0.0, high: float = 1.0) -> Tensor:
    """n draws from U[low, high) on the CPU."""
    return torch.rand(n, generator=gen).mul_(high - low).add_(low)


def _per_sample(v: Tensor) -> Tensor:
    """(n,) factors shaped to broadcast over (n, C, H, W)."""
    return v.view(-1, 1, 1, 1)


def apply_where(x: Tensor, mask: Tensor, fn: Callable[..., Tensor], *args: Tensor) -> Tensor:
    """`x` with `fn(samples, *args)` applied to the samples where `mask` (CPU) is true, each once."""
    count = int(mask.sum())
    if count == 0:
        return x
    moved = [a[mask].to(x.device, non_blocking=True) for a in args]
    if count == mask.numel():
        return fn(x, *moved).contiguous()
    idx = mask.nonzero().squeeze(1).to(x.device, non_blocking=True)
    return x.index_copy_(0, idx, fn(x.index_select(0, idx), *moved))


class DeviceOp:
    """One augmentation: per-sample parameters drawn on the CPU, applied batched on the device."""

    def draw(self, n: int, gen: torch.Generator) -> Params:
        """Parameters of `n` samples (CPU tensors with n rows)."""
        raise NotImplementedError

    def apply(self, x: Tensor, params: Params) -> Tensor:
        """The op on a float32 batch (n, C, H, W) in [0, 1] with the drawn parameters."""
        raise NotImplementedError


@dataclass(frozen=True)
class RandomApplied(DeviceOp):
    """An op applied with probability `p` per sample and no other parameter."""

    p: float

    def draw(self, n: int, gen: torch.Generator) -> Params:
        return {"apply": _uniform(n, gen) < self.p}

    def apply(self, x: Tensor, params: Params) -> Tensor:
        return apply_where(x, params["apply"], self.op)

    def op(self, x: Tensor) -> Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class Flip(RandomApplied):
    """RandomHorizontalFlip (`vertical` False) or RandomVerticalFlip."""

    vertical: bool = False

    def op(self, x: Tensor) -> Tensor:
        return F.vertical_flip(x) if self.vertical else F.horizontal_flip(x)


@dataclass(frozen=True)
class Rot90(RandomApplied):
    """lightly's RandomRotate by a multiple of 90 degrees, counter-clockwise (as PIL rotates)."""

    quarter_turns: int = 1

    def op(self, x: Tensor) -> Tensor:
        return torch.rot90(x, self.quarter_turns, dims=(-2, -1))


@dataclass(frozen=True)
class Grayscale(RandomApplied):
    """RandomGrayscale: luma in all three channels."""

    def op(self, x: Tensor) -> Tensor:
        return F.rgb_to_grayscale(x, num_output_channels=3)


@dataclass(frozen=True)
class Solarize(RandomApplied):
    """lightly's RandomSolarization: values at or above `threshold` (in [0, 1]) become 1 - value."""

    threshold: float = 128 / 255

    def op(self, x: Tensor) -> Tensor:
        return F.solarize(x, self.threshold)


def _blend(x: Tensor, other: Tensor, ratio: Tensor) -> Tensor:
    """torchvision's `_blend` with one ratio per sample: ratio * x + (1 - ratio) * other, clamped."""
    r = _per_sample(ratio)
    return x.mul(r).add_(other.mul(1.0 - r)).clamp_(0.0, 1.0)


def _brightness(x: Tensor, factor: Tensor) -> Tensor:
    return x.mul(_per_sample(factor)).clamp_(0.0, 1.0)


def _contrast(x: Tensor, factor: Tensor) -> Tensor:
    mean = F.rgb_to_grayscale(x).mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(x, mean, factor)


def _saturation(x: Tensor, factor: Tensor) -> Tensor:
    return _blend(x, F.rgb_to_grayscale(x), factor)


def _hue(x: Tensor, factor: Tensor) -> Tensor:
    h, s, v = _rgb_to_hsv(x).unbind(dim=-3)
    h = h.add(factor.view(-1, 1, 1)).remainder_(1.0)
    return _hsv_to_rgb(torch.stack((h, s, v), dim=-3))


# torchvision's ColorJitter numbers its four adjustments in this order (`fn_idx` 0..3)
JITTER_FNS = (_brightness, _contrast, _saturation, _hue)
JITTER_NEUTRAL = (1.0, 1.0, 1.0, 0.0)


@dataclass(frozen=True)
class ColorJitter(DeviceOp):
    """RandomApply([ColorJitter], p): per sample, brightness, contrast, saturation and hue factors
    uniform in their ranges, applied in a random order (a random permutation per sample, as
    torchvision draws `randperm(4)` per call). `ranges[k]` is None where torchvision skips the op."""

    p: float
    ranges: tuple[tuple[float, float] | None, ...]

    def draw(self, n: int, gen: torch.Generator) -> Params:
        apply = _uniform(n, gen) < self.p
        order = torch.rand(n, 4, generator=gen).argsort(dim=1)  # a uniform permutation per row
        factors = torch.empty(n, 4)
        for k, r in enumerate(self.ranges):
            u = _uniform(n, gen)
            factors[:, k] = JITTER_NEUTRAL[k] if r is None else u.mul_(r[1] - r[0]).add_(r[0])
        return {"apply": apply, "order": order, "factors": factors}

    def apply(self, x: Tensor, params: Params) -> Tensor:
        apply, order, factors = params["apply"], params["order"], params["factors"]
        for position in range(4):
            for k, fn in enumerate(JITTER_FNS):
                if self.ranges[k] is not None:
                    mask = apply & (order[:, position] == k)
                    x = apply_where(x, mask, fn, factors[:, k])
        return x


def _gaussian_kernels(sigma: Tensor, radius: int) -> Tensor:
    """(n, 2 * radius + 1) normalised 1-D Gaussian kernels, one per sigma."""
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=sigma.device)
    k = torch.exp(-(t**2) / (2.0 * sigma.view(-1, 1) ** 2))
    return k / k.sum(dim=1, keepdim=True)


def _blur(x: Tensor, sigma: Tensor, radius: int) -> Tensor:
    """Separable Gaussian blur, one sigma per sample: a depthwise conv over the (n * C) channels,
    edges extended (as PIL's blur does)."""
    n, c, h, w = x.shape
    k = _gaussian_kernels(sigma, radius).repeat_interleave(c, dim=0)  # (n * c, K)
    y = x.reshape(1, n * c, h, w)
    y = nnf.conv2d(
        nnf.pad(y, (radius, radius, 0, 0), mode="replicate"), k[:, None, None, :], groups=n * c
    )
    y = nnf.conv2d(
        nnf.pad(y, (0, 0, radius, radius), mode="replicate"), k[:, None, :, None], groups=n * c
    )
    return y.reshape(n, c, h, w)


@dataclass(frozen=True)
class GaussianBlur(DeviceOp):
    """lightly's GaussianBlur: with probability p, a Gaussian of sigma uniform in `sigmas`; every
    kernel has the size of the largest sigma's (3 sigma each side)."""

    p: float
    sigmas: tuple[float, float]

    @property
    def radius(self) -> int:
        return max(1, math.ceil(3.0 * self.sigmas[1]))

    def draw(self, n: int, gen: torch.Generator) -> Params:
        apply = _uniform(n, gen) < self.p
        return {"apply": apply, "sigma": _uniform(n, gen, *self.sigmas)}

    def apply(self, x: Tensor, params: Params) -> Tensor:
        return apply_where(
            x, params["apply"], lambda s, sigma: _blur(s, sigma, self.radius), params["sigma"]
        )


@dataclass(frozen=True)
class Normalize(DeviceOp):
    """Normalize(mean, std) of every sample."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def draw(self, n: int, gen: torch.Generator) -> Params:
        return {}

    def apply(self, x: Tensor, params: Params) -> Tensor:
        return F.normalize(x, list(self.mean), list(self.std))
