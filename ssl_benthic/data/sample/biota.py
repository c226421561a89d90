"""Biota for the synthetic sample: each class drawn as objects of its own shape and colour.

A drawer paints the object's silhouette into a `body` mask and dark or pale details into a `detail`
mask (PIL ImageDraw), and returns the two colours; `draw_biota` composites them over the substrate
with a soft shadow, so a classifier can tell the classes apart from pixels alone.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ssl_benthic.data.sample.substrate import F32, smooth_noise

Colour = tuple[float, float, float]
Draw = ImageDraw.ImageDraw
Gen = np.random.Generator
Drawer = Callable[
    [ImageDraw.ImageDraw, ImageDraw.ImageDraw, np.random.Generator, int, float],
    tuple[Colour, Colour],
]


def _xy(rng: np.random.Generator, size: int, margin: float = 0.1) -> np.ndarray:
    return rng.uniform(margin * size, (1 - margin) * size, 2)


def _jit(rng: np.random.Generator, c: Colour, s: float = 0.05) -> Colour:
    return tuple(float(v) for v in np.clip(np.asarray(c) + rng.normal(0, s, 3), 0.02, 1))


def _polar(c: np.ndarray, r: np.ndarray, th: np.ndarray) -> list[tuple[float, float]]:
    return list(
        zip((c[0] + r * np.cos(th)).tolist(), (c[1] + r * np.sin(th)).tolist(), strict=True)
    )


def _branch(d: ImageDraw.ImageDraw, p, ang, length, width, depth, rng, tips=None):
    """A recursive Y-branch: each segment forks in two until `depth` runs out."""
    q = (p[0] + length * np.cos(ang), p[1] + length * np.sin(ang))
    d.line([p, q], fill=255, width=max(1, round(width)))
    if depth == 0:
        if tips is not None:
            tips.append(q)
        return
    for da in (-0.45, 0.45):
        _branch(
            d, q, ang + da + rng.normal(0, 0.15), length * 0.72, width * 0.75, depth - 1, rng, tips
        )


def massive_sponge(
    body: Draw, detail: Draw, rng: Gen, size: int, u: float
) -> tuple[Colour, Colour]:
    for _ in range(rng.integers(1, 4)):
        c, r = _xy(rng, size), rng.uniform(6, 11) * u
        th = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        rad = r * (
            1 + 0.2 * np.sin(rng.integers(2, 5) * th + rng.uniform(0, 6)) + rng.normal(0, 0.05, 24)
        )
        body.polygon(_polar(c, rad, th), fill=255)
        for _ in range(rng.integers(1, 4)):
            o = c + rng.normal(0, r / 3, 2)
            detail.ellipse(
                [o[0] - u * 1.3, o[1] - u * 1.3, o[0] + u * 1.3, o[1] + u * 1.3], fill=255
            )
    return _jit(rng, (0.95, 0.82, 0.18)), (0.25, 0.18, 0.05)


def branching_sponge(
    body: Draw, detail: Draw, rng: Gen, size: int, u: float
) -> tuple[Colour, Colour]:
    for _ in range(rng.integers(1, 3)):
        base, up = _xy(rng, size, 0.25), rng.uniform(0, 2 * np.pi)
        for a in up + rng.uniform(-0.9, 0.9, rng.integers(3, 6)):
            tips: list = []
            _branch(body, tuple(base), a, rng.uniform(9, 14) * u, 3.2 * u, 1, rng, tips)
            for t in tips:
                body.ellipse(
                    [t[0] - 1.8 * u, t[1] - 1.8 * u, t[0] + 1.8 * u, t[1] + 1.8 * u], fill=255
                )
    return _jit(rng, (0.95, 0.50, 0.12)), (0.98, 0.75, 0.35)


def cup_sponge(body: Draw, detail: Draw, rng: Gen, size: int, u: float) -> tuple[Colour, Colour]:
    c, w, h = _xy(rng, size, 0.3), rng.uniform(7, 10) * u, rng.uniform(12, 16) * u
    body.polygon(
        [
            (c[0] - w, c[1] - h / 2),
            (c[0] + w, c[1] - h / 2),
            (c[0] + w / 3, c[1] + h / 2),
            (c[0] - w / 3, c[1] + h / 2),
        ],
        fill=255,
    )
    body.ellipse([c[0] - w, c[1] - h / 2 - w / 2.5, c[0] + w, c[1] - h / 2 + w / 2.5], fill=255)
    detail.ellipse(
        [c[0] - 0.75 * w, c[1] - h / 2 - w / 4, c[0] + 0.75 * w, c[1] - h / 2 + w / 4], fill=255
    )
    return _jit(rng, (0.92, 0.80, 0.72)), (0.22, 0.15, 0.12)


def sea_star(body: Draw, detail: Draw, rng: Gen, size: int, u: float) -> tuple[Colour, Colour]:
    for _ in range(rng.integers(1, 4)):
        c, r = _xy(rng, size), rng.uniform(6, 10) * u
        th = rng.uniform(0, 2 * np.pi) + np.arange(10) * np.pi / 5
        body.polygon(_polar(c, np.where(np.arange(10) % 2 == 0, r, 0.33 * r), th), fill=255)
    return _jit(rng, (0.88, 0.16, 0.22)), (0.88, 0.16, 0.22)


def regular_urchin(
    body: Draw, detail: Draw, rng: Gen, size: int, u: float
) -> tuple[Colour, Colour]:
    for _ in range(rng.integers(2, 7)):
        c, r = _xy(rng, size), rng.uniform(2.5, 4.5) * u
        body.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=255)
        for p in _polar(
            c,
            np.full(14, 2.0 * r),
            np.linspace(0, 2 * np.pi, 14, endpoint=False) + rng.uniform(0, 1),
        ):
            body.line([tuple(c), p], fill=255, width=1)
    return _jit(rng, (0.22, 0.08, 0.26), 0.03), (0.22, 0.08, 0.26)


def irregular_urchin(
    body: Draw, detail: Draw, rng: Gen, size: int, u: float
) -> tuple[Colour, Colour]:
    for _ in range(rng.integers(1, 4)):
        c, r = _xy(rng, size), rng.uniform(4.5, 6.5) * u
        body.ellipse([c[0] - r, c[1] - 0.85 * r, c[0] + r, c[1] + 0.85 * r], fill=255)
        for p in _polar(c, np.full(5, 0.7 * r), np.arange(5) * 2 * np.pi / 5 + rng.uniform(0, 1)):
            detail.line([tuple(c), p], fill=255, width=max(1, round(u)))
    return _jit(rng, (0.93, 0.90, 0.95), 0.03), (0.45, 0.35, 0.48)


def kelp(body: Draw, detail: Draw, rng: Gen, size: int, u: float) -> tuple[Colour, Colour]:
    base = _xy(rng, size, 0.0)
    for a in rng.uniform(0, 2 * np.pi, rng.integers(3, 7)):
        length, w = rng.uniform(22, 36) * u, rng.uniform(3.5, 6) * u
        t = np.linspace(0, 1, 8)
        bend = rng.normal(0, 0.4)
        ang = a + bend * t
        spine = np.stack(
            [
                base[0] + np.cumsum(np.cos(ang)) * length / 8,
                base[1] + np.cumsum(np.sin(ang)) * length / 8,
            ],
            1,
        )
        normal = (
            np.stack([-np.sin(ang), np.cos(ang)], 1)
            * (w * np.sin(np.pi * (t * 0.9 + 0.1)))[:, None]
        )
        body.polygon(
            [tuple(p) for p in np.concatenate([spine + normal, (spine - normal)[::-1]])], fill=255
        )
        detail.line([tuple(p) for p in spine], fill=255, width=1)
    return _jit(rng, (0.42, 0.33, 0.10), 0.04), (0.30, 0.22, 0.05)


def branching_coral(
    body: Draw, detail: Draw, rng: Gen, size: int, u: float
) -> tuple[Colour, Colour]:
    for _ in range(rng.integers(1, 3)):
        base = _xy(rng, size, 0.2)
        for a in rng.uniform(0, 2 * np.pi) + np.array([0.0, 2.1, 4.2]):
            tips: list = []
            _branch(body, tuple(base), a, rng.uniform(6, 9) * u, 2.6 * u, 3, rng, tips)
            for t in tips:
                detail.ellipse([t[0] - u, t[1] - u, t[0] + u, t[1] + u], fill=255)
    return _jit(rng, (0.88, 0.68, 0.45)), (1.0, 0.97, 0.88)


def massive_coral(body: Draw, detail: Draw, rng: Gen, size: int, u: float) -> tuple[Colour, Colour]:
    c, r = _xy(rng, size, 0.25), rng.uniform(11, 16) * u
    th = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    body.polygon(_polar(c, r * (1 + rng.normal(0, 0.04, 32)), th), fill=255)
    return _jit(rng, (0.55, 0.56, 0.28)), (0.30, 0.30, 0.12)


def seagrass(body: Draw, detail: Draw, rng: Gen, size: int, u: float) -> tuple[Colour, Colour]:
    drift = rng.uniform(0, 2 * np.pi)
    for _ in range(rng.integers(18, 36)):
        p, length = _xy(rng, size, -0.1), rng.uniform(12, 24) * u
        a = drift + rng.normal(0, 0.25)
        mid = (p[0] + 0.5 * length * np.cos(a), p[1] + 0.5 * length * np.sin(a))
        a2 = a + rng.normal(0, 0.3)
        end = (mid[0] + 0.5 * length * np.cos(a2), mid[1] + 0.5 * length * np.sin(a2))
        body.line([tuple(p), mid, end], fill=255, width=max(1, round(1.4 * u)))
    return _jit(rng, (0.30, 0.68, 0.20)), (0.30, 0.68, 0.20)


def crater_cone(body: Draw, detail: Draw, rng: Gen, size: int, u: float) -> tuple[Colour, Colour]:
    for _ in range(rng.integers(2, 6)):
        c, r = _xy(rng, size), rng.uniform(3.5, 5.5) * u
        body.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=255)
        h = max(1.0, 0.35 * r)
        detail.ellipse([c[0] - h, c[1] - h, c[0] + h, c[1] + h], fill=255)
    return _jit(rng, (0.86, 0.80, 0.66), 0.03), (0.08, 0.06, 0.04)


def stalked_ascidian(
    body: Draw, detail: Draw, rng: Gen, size: int, u: float
) -> tuple[Colour, Colour]:
    for _ in range(rng.integers(1, 4)):
        base, a = _xy(rng, size, 0.2), rng.uniform(0, 2 * np.pi)
        top = base + 8 * u * np.array([np.cos(a), np.sin(a)])
        body.line([tuple(base), tuple(top)], fill=255, width=max(1, round(u)))
        r = 4 * u
        body.ellipse([top[0] - r, top[1] - r, top[0] + r, top[1] + r], fill=255)
        for s in (-1, 1):
            o = top + 0.45 * r * np.array([np.cos(a + s * 1.2), np.sin(a + s * 1.2)])
            detail.ellipse(
                [o[0] - 0.9 * u, o[1] - 0.9 * u, o[0] + 0.9 * u, o[1] + 0.9 * u], fill=255
            )
    return _jit(rng, (0.72, 0.88, 0.95), 0.03), (0.10, 0.18, 0.30)


def sea_fan(body: Draw, detail: Draw, rng: Gen, size: int, u: float) -> tuple[Colour, Colour]:
    base, a = _xy(rng, size, 0.3), rng.uniform(0, 2 * np.pi)
    length = rng.uniform(20, 28) * u
    rays = a + np.linspace(-0.9, 0.9, 11)
    for p in _polar(base, np.full(11, length), rays):
        body.line([tuple(base), p], fill=255, width=1)
    for frac in (0.35, 0.55, 0.75, 0.95):
        body.line(_polar(base, np.full(11, frac * length), rays), fill=255, width=1)
    body.line(
        [tuple(base), tuple(base - 3 * u * np.array([np.cos(a), np.sin(a)]))],
        fill=255,
        width=max(1, round(2 * u)),
    )
    return _jit(rng, (0.62, 0.18, 0.68)), (0.62, 0.18, 0.68)


DRAWERS: dict[str, Drawer] = {
    "massive_sponge": massive_sponge,
    "branching_sponge": branching_sponge,
    "cup_sponge": cup_sponge,
    "sea_star": sea_star,
    "regular_urchin": regular_urchin,
    "irregular_urchin": irregular_urchin,
    "kelp": kelp,
    "branching_coral": branching_coral,
    "massive_coral": massive_coral,
    "seagrass": seagrass,
    "crater_cone": crater_cone,
    "stalked_ascidian": stalked_ascidian,
    "sea_fan": sea_fan,
}


def _texture(rng: np.random.Generator, name: str, size: int) -> np.ndarray:
    """Surface modulation: brain-coral grooves for massive coral, mottling for everything else."""
    n = smooth_noise(rng, size, 5)
    if name == "massive_coral":
        return (0.75 + 0.35 * (np.sin(n * 45) > 0)).astype(F32)
    return (0.85 + 0.3 * n).astype(F32)


def draw_biota(
    rng: np.random.Generator, img: np.ndarray, name: str, scale: float, light: np.ndarray
) -> np.ndarray:
    """Composite one biota class (several instances) over `img` (H, W, 3), with a shadow cast away
    from the light."""
    if name == "none":
        return img
    size = img.shape[0]
    masks = [Image.new("L", (size, size)), Image.new("L", (size, size))]
    colour, detail_colour = DRAWERS[name](
        *(ImageDraw.Draw(m) for m in masks), rng, size, scale * size / 64
    )
    body = np.asarray(masks[0].filter(ImageFilter.BoxBlur(0.5)), F32) / 255
    detail = np.asarray(masks[1], F32)[..., None] / 255
    shift = np.round(-light[:2] / light[2] * 2.5 * scale * size / 64).astype(int)
    shadow = np.roll(body, tuple(shift), axis=(0, 1))
    img = img * (1 - 0.45 * shadow)[..., None]
    rgb = np.asarray(colour, F32) * _texture(rng, name, size)[..., None]
    rgb = rgb * (1 - detail) + np.asarray(detail_colour, F32) * detail
    a = body[..., None]
    return img * (1 - a) + rgb * a
