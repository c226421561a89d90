"""A method's lightly transform, read into a worker half and a device half per view.

Every view of a lightly transform (multi-view, or single-view as MAE's) is a torchvision `Compose`.
Its first op must be a `RandomResizedCrop`: that is the worker half (decode, crop, uint8). Each later
op becomes a batched device op with the parameters read off the constructed object (probabilities,
ranges, sigmas, thresholds, mean and std), in the Compose's order; `ToTensor` marks the switch to
float (the device ops run on float from the start, as every op before it is pointwise or a blur). An op that is not
translated fails, naming the view and the op, unless it never fires (probability 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lightly.transforms.gaussian_blur import GaussianBlur as LightlyBlur
from lightly.transforms.rotation import RandomRotate, RandomRotateDegrees
from lightly.transforms.solarize import RandomSolarization
from lightly.transforms.torchvision_v2_compatibility import ToTensor as LightlyToTensor
from torchvision import transforms as v1
from torchvision.transforms import v2

from ssl_benthic.core.errors import ConfigError
from ssl_benthic.pretrain.augment import ops

__all__ = ["ViewPlan", "plan_views", "view_composes"]

_CROP = (v2.RandomResizedCrop, v1.RandomResizedCrop)
_COMPOSE = (v2.Compose, v1.Compose)
_TO_TENSOR = (LightlyToTensor, v1.ToTensor)
_HFLIP = (v2.RandomHorizontalFlip, v1.RandomHorizontalFlip)
_VFLIP = (v2.RandomVerticalFlip, v1.RandomVerticalFlip)
_APPLY = (v2.RandomApply, v1.RandomApply)
_JITTER = (v2.ColorJitter, v1.ColorJitter)
_GRAY = (v2.RandomGrayscale, v1.RandomGrayscale)
_NORMALIZE = (v2.Normalize, v1.Normalize)


@dataclass(frozen=True)
class ViewPlan:
    """One view: its random resized crop (run in the loader workers) and its device ops, in order."""

    crop: Any  # the view's own RandomResizedCrop object (it draws the crop box)
    ops: tuple[ops.DeviceOp, ...]

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the view."""
        h, w = self.crop.size
        return int(h), int(w)


def _refuse(view: int, op: Any, why: str) -> ConfigError:
    """The one-line error for an op the device half cannot take."""
    what = " ".join(repr(op).split())  # nested transforms print over several lines
    return ConfigError(
        f"transform.device: accelerator cannot run view {view}'s {what} on the accelerator ({why}); "
        "use transform.device: cpu for this transform"
    )


def view_composes(transform: Any) -> list[Sequence[Any]]:
    """The op list of every view of a lightly transform: one Compose per view of a multi-view
    transform (`transforms`), or the one Compose of a single-view one (`transform`, e.g. MAE's)."""
    views = getattr(transform, "transforms", None)
    if views is None and isinstance(getattr(transform, "transform", None), _COMPOSE):
        views = [transform.transform]
    if not isinstance(views, Sequence) or not views:
        raise ConfigError(
            f"transform.device: accelerator needs a lightly view transform, got {transform!r}"
        )
    out = []
    for i, view in enumerate(views):
        compose = view if isinstance(view, _COMPOSE) else getattr(view, "transform", None)
        if not isinstance(compose, _COMPOSE):
            raise _refuse(i, view, "not a torchvision Compose of ops")
        out.append(list(compose.transforms))
    return out


def _jitter_ranges(jitter: Any) -> tuple[tuple[float, float] | None, ...]:
    """(brightness, contrast, saturation, hue) ranges of a ColorJitter; None where it is off."""

    def as_range(value: Any, center: float) -> tuple[float, float] | None:
        if value is None:  # torchvision stores (min, max), or None for an op it skips
            return None
        lo, hi = float(value[0]), float(value[1])
        return None if lo == hi == center else (lo, hi)

    return (
        as_range(jitter.brightness, 1.0),
        as_range(jitter.contrast, 1.0),
        as_range(jitter.saturation, 1.0),
        as_range(jitter.hue, 0.0),
    )


def _rotation(view: int, op: RandomRotate, size: tuple[int, int]) -> ops.DeviceOp | None:
    """lightly's RandomRotate as quarter turns (square views for odd turns); None when p = 0."""
    if op.prob == 0:
        return None
    turns, rest = divmod(op.angle, 90)
    if rest:
        raise _refuse(view, op, f"rotation by {op.angle} degrees is not a quarter turn")
    if turns % 2 and size[0] != size[1]:
        raise _refuse(view, op, f"a quarter turn changes the shape of a {size} view")
    return ops.Rot90(p=float(op.prob), quarter_turns=int(turns) % 4)


def _device_op(view: int, op: Any, size: tuple[int, int]) -> ops.DeviceOp | None:
    """The device op of one Compose entry after the crop (None: nothing to do); refuses the rest."""
    if isinstance(op, _HFLIP + _VFLIP):
        return ops.Flip(p=float(op.p), vertical=isinstance(op, _VFLIP)) if op.p else None
    if isinstance(op, RandomRotate):
        return _rotation(view, op, size)
    if isinstance(op, _APPLY):
        inner = list(op.transforms)
        if op.p == 0:
            return None
        if len(inner) != 1 or not isinstance(inner[0], _JITTER):
            raise _refuse(view, op, "only RandomApply([ColorJitter]) is translated")
        return ops.ColorJitter(p=float(op.p), ranges=_jitter_ranges(inner[0]))
    if isinstance(op, _JITTER):
        return ops.ColorJitter(p=1.0, ranges=_jitter_ranges(op))
    if isinstance(op, _GRAY):
        return ops.Grayscale(p=float(op.p)) if op.p else None
    if isinstance(op, LightlyBlur):
        lo, hi = (float(s) for s in op.sigmas)
        return ops.GaussianBlur(p=float(op.prob), sigmas=(lo, hi)) if op.prob else None
    if isinstance(op, RandomSolarization):
        threshold = float(op.threshold) / 255.0
        return ops.Solarize(p=float(op.prob), threshold=threshold) if op.prob else None
    if isinstance(op, RandomRotateDegrees):
        if op.transform.p == 0:
            return None
        raise _refuse(view, op, "rotation by an arbitrary angle is not translated")
    raise _refuse(view, op, "no batched version of this op")


def _plan_view(view: int, entries: Sequence[Any]) -> ViewPlan:
    """Crop first, pointwise ops and blur before ToTensor, at most a Normalize after it."""
    if not entries or not isinstance(entries[0], _CROP):
        first = entries[0] if entries else None
        raise _refuse(view, first, "a view must start with RandomResizedCrop")
    crop = entries[0]
    size = (int(crop.size[0]), int(crop.size[1]))
    device: list[ops.DeviceOp] = []
    to_tensor = False
    for op in entries[1:]:
        if isinstance(op, _TO_TENSOR):
            if to_tensor:
                raise _refuse(view, op, "a second ToTensor")
            to_tensor = True
        elif to_tensor:
            if not isinstance(op, _NORMALIZE) or (device and isinstance(device[-1], ops.Normalize)):
                raise _refuse(view, op, "only one Normalize may follow ToTensor")
            device.append(ops.Normalize(tuple(map(float, op.mean)), tuple(map(float, op.std))))
        elif isinstance(op, _CROP):
            raise _refuse(view, op, "a second crop")
        elif isinstance(op, _NORMALIZE):
            raise _refuse(view, op, "Normalize before ToTensor")
        elif (translated := _device_op(view, op, size)) is not None:
            device.append(translated)
    if not to_tensor:
        raise _refuse(view, entries[-1], "the view never becomes a tensor (no ToTensor)")
    return ViewPlan(crop=crop, ops=tuple(device))


def plan_views(transform: Any) -> list[ViewPlan]:
    """Every view of a lightly transform as (worker crop, device ops); fails clearly on
    an op that has no batched version."""
    return [_plan_view(i, entries) for i, entries in enumerate(view_composes(transform))]
