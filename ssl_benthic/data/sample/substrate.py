"""Seafloor substrate textures for the synthetic sample, drawn with vectorised numpy.

Each drawer returns an albedo (H, W, 3) and a height field (H, W) in [0, 1]-ish units; `draw_substrate`
shades the height with a light direction (Lambert: n . L with n = (-dh/dx, -dh/dy, 1) / |.|), so the
classes differ in grain size, sorting, ripples, colour and relief, as their CATAMI definitions do.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
from PIL import Image

F32 = np.float32
Gen = np.random.Generator
Layers = tuple[np.ndarray, np.ndarray]  # albedo (H, W, 3), height (H, W)
Drawer = Callable[[Gen, int, float, float], Layers]


@lru_cache(maxsize=8)
def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x) in [0, 1), shape (size, size) each."""
    c = (np.arange(size, dtype=F32) + 0.5) / size
    return np.meshgrid(c, c, indexing="ij")


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Value noise in [0, 1]: a (cells+1)^2 random grid resized bicubically to size x size."""
    low = rng.random((cells + 1, cells + 1), dtype=F32)
    return np.asarray(Image.fromarray(low, mode="F").resize((size, size), Image.BICUBIC))


def fbm(rng: np.random.Generator, size: int, cells: int, octaves: int = 3) -> np.ndarray:
    """Fractal noise: octaves of value noise at doubling frequency and halving amplitude, centred on 0."""
    out = np.zeros((size, size), F32)
    for k in range(octaves):
        out += (smooth_noise(rng, size, min(cells * 2**k, size)) - 0.5) * 0.5**k
    return out


def worley(rng: np.random.Generator, size: int, cells: int) -> tuple[np.ndarray, ...]:
    """Cellular noise on a jittered grid: distance to the nearest and second-nearest seed (in cell units),
    the nearest seed's flat cell id, and the offset (dy, dx) from that seed."""
    pts = (
        np.mgrid[-1 : cells + 1, -1 : cells + 1].transpose(1, 2, 0)
        + rng.random((cells + 2, cells + 2, 2))
    ).astype(F32)
    y, x = grid(size)
    gy, gx = y * cells, x * cells
    iy, ix = gy.astype(np.int64), gx.astype(np.int64)
    dists, ids, offs = [], [], []
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            p = pts[iy + dy, ix + dx]
            oy, ox = gy - p[..., 0], gx - p[..., 1]
            dists.append(np.hypot(oy, ox))
            ids.append((iy + dy) * (cells + 2) + ix + dx)
            offs.append((oy, ox))
    d = np.stack(dists)
    order = np.argsort(d, axis=0)
    nearest = order[0]
    d1 = np.take_along_axis(d, order[:2], axis=0)
    cell = np.take_along_axis(np.stack(ids), nearest[None], axis=0)[0]
    oy = np.take_along_axis(np.stack([o[0] for o in offs]), nearest[None], axis=0)[0]
    ox = np.take_along_axis(np.stack([o[1] for o in offs]), nearest[None], axis=0)[0]
    return d1[0], d1[1], cell, oy, ox


def _tone(
    rng: np.random.Generator, base: tuple[float, float, float], jitter: float = 0.06
) -> np.ndarray:
    return np.clip(np.asarray(base, F32) + rng.normal(0, jitter, 3).astype(F32), 0.05, 1.0)


def _sand(
    rng: np.random.Generator, size: int, base: tuple[float, float, float], grain: float
) -> np.ndarray:
    """Sand albedo: a jittered tone, broad patches and per-pixel grain of amplitude `grain`."""
    tone = _tone(rng, base)
    shade = (
        1
        + 0.12 * (smooth_noise(rng, size, 3) - 0.5)
        + grain * rng.standard_normal((size, size), F32)
    )
    return tone * shade[..., None]


def _ripples(rng: np.random.Generator, size: int, wavelength: float, sharp: float) -> np.ndarray:
    """Asymmetric ripple crests along a random direction, warped by smooth noise."""
    y, x = grid(size)
    th = rng.uniform(0, np.pi)
    warp = 1.5 * (smooth_noise(rng, size, 2) - 0.5)
    phase = (
        2 * np.pi * ((x * np.cos(th) + y * np.sin(th)) * size / wavelength) + warp * 2 * np.pi / 3
    )
    return np.sin(phase) + sharp * np.sin(2 * phase + 0.8)


def fine_sand(rng: Gen, size: int, scale: float, relief: float) -> Layers:
    return _sand(rng, size, (0.80, 0.72, 0.55), 0.035), 0.3 * fbm(rng, size, 4, 2)


def rippled_sand(rng: Gen, size: int, scale: float, relief: float) -> Layers:
    h = 0.9 * _ripples(rng, size, size / rng.uniform(5.5, 8.5) * scale, 0.35)
    return _sand(rng, size, (0.80, 0.72, 0.55), 0.035), h


def coarse_sand(rng: Gen, size: int, scale: float, relief: float) -> Layers:
    alb = _sand(rng, size, (0.66, 0.55, 0.40), 0.09)
    flecks = rng.random((size, size)) < 0.05
    alb[flecks] = _tone(rng, (0.95, 0.93, 0.86), 0.03)
    return alb, 0.4 * fbm(rng, size, 6, 2)


def sand_waves(rng: Gen, size: int, scale: float, relief: float) -> Layers:
    alb, _ = coarse_sand(rng, size, scale, relief)
    return alb, 2.8 * _ripples(rng, size, size / rng.uniform(1.6, 2.4) * scale, 0.5)


def mud(rng: Gen, size: int, scale: float, relief: float) -> Layers:
    alb = _sand(rng, size, (0.48, 0.44, 0.36), 0.015)
    holes = rng.random((size, size)) < 0.012 / scale**2
    alb[holes] *= 0.25
    return alb, 0.25 * fbm(rng, size, 3, 2)


def _stones(rng, size, cells, matrix, base, spread, dome, rough):
    """Stones as Worley cells: a colour per stone, domed height, dark crevices; where a pixel lies
    farther than `matrix` (cell units) from its stone centre, sand fills the gap."""
    d1, d2, cell, _, _ = worley(rng, size, cells)
    n = (cells + 2) ** 2
    colours = np.clip(
        np.asarray(base, F32) * rng.uniform(1 - spread, 1 + spread, (n, 1)).astype(F32)
        + rng.normal(0, 0.04, (n, 3)).astype(F32),
        0.03,
        1,
    )
    alb = colours[cell]
    radius = np.minimum(matrix, 0.5 * (d1 + d2))  # edge of the stone
    h = dome * np.sqrt(np.clip(1 - (d1 / radius) ** 2, 0, 1)) + rough * fbm(rng, size, 8, 2)
    gap = (d1 > matrix) | (d2 - d1 < 0.06)
    sand = _sand(rng, size, (0.72, 0.64, 0.48), 0.05)
    alb = np.where(gap[..., None], sand * 0.55, alb)
    return alb, h


def gravel(rng: Gen, size: int, scale: float, relief: float) -> Layers:
    return _stones(
        rng, size, max(4, round(size / 3.2 / scale)), 0.55, (0.62, 0.58, 0.52), 0.35, 0.8, 0.05
    )


def pebble(rng: Gen, size: int, scale: float, relief: float) -> Layers:
    return _stones(
        rng, size, max(3, round(size / 8 / scale)), 0.42, (0.58, 0.56, 0.52), 0.3, 1.6, 0.05
    )


def shell_hash(rng: Gen, size: int, scale: float, relief: float) -> Layers:
    """Sand strewn with pale shell crescents: Worley rings cut in half along a random direction per cell."""
    d1, _, cell, oy, ox = worley(rng, size, max(4, round(size / 5 / scale)))
    th = rng.uniform(0, 2 * np.pi, (cell.max() + 1,)).astype(F32)[cell]
    shell = (d1 > 0.18) & (d1 < 0.38) & (oy * np.cos(th) + ox * np.sin(th) > 0)
    alb = _sand(rng, size, (0.72, 0.62, 0.46), 0.05)
    alb[shell] = _tone(rng, (0.96, 0.92, 0.84), 0.03) * rng.uniform(
        0.85, 1.05, (int(shell.sum()), 1)
    ).astype(F32)
    return alb, 0.6 * shell + 0.2 * fbm(rng, size, 6, 2)


def cobbles(rng: Gen, size: int, scale: float, relief: float) -> Layers:
    return _stones(
        rng, size, max(2, round(size / 15 / scale)), 0.9, (0.52, 0.50, 0.46), 0.3, 4.0, 0.3
    )


def boulders(rng: Gen, size: int, scale: float, relief: float) -> Layers:
    alb, h = _stones(rng, size, 2, 0.95, (0.50, 0.50, 0.47), 0.25, 9.0 * relief, 0.8)
    film = smooth_noise(rng, size, 6)[..., None]  # green-brown biofilm
    return alb * (0.8 + 0.3 * film) * np.asarray([0.95, 1.0, 0.85], F32), h


def rock(rng: Gen, size: int, scale: float, relief: float) -> Layers:
    """Rugged reef: fractal height, grey-brown stone, pink coralline crust patches and dark cracks."""
    h = 3.5 * relief * fbm(rng, size, 3, 4)
    alb = _tone(rng, (0.50, 0.46, 0.42)) * (0.85 + 0.3 * smooth_noise(rng, size, 8))[..., None]
    pink = smooth_noise(rng, size, 4) > 0.62
    alb = np.where(pink[..., None], _tone(rng, (0.78, 0.45, 0.55), 0.04), alb)
    d1, d2, *_ = worley(rng, size, 3)
    alb = alb * np.where(d2 - d1 < 0.05, 0.35, 1.0).astype(F32)[..., None]
    return alb, h


DRAWERS: dict[str, Drawer] = {
    "fine_sand": fine_sand,
    "rippled_sand": rippled_sand,
    "sand_waves": sand_waves,
    "coarse_sand": coarse_sand,
    "mud": mud,
    "gravel": gravel,
    "pebble": pebble,
    "shell_hash": shell_hash,
    "cobbles": cobbles,
    "boulders": boulders,
    "rock": rock,
}
RELIEF_GAIN = {"flat": 0.6, "low": 1.0, "moderate": 1.4, "high": 1.8}


def hillshade(h: np.ndarray, light: np.ndarray) -> np.ndarray:
    """Lambert shading n . L of a height field in pixel units, normalised so flat ground gives 1."""
    hy, hx = np.gradient(h)
    n = np.stack([-hy, -hx, np.ones_like(h)], axis=-1)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    return np.clip(n @ light / light[2], 0.15, 1.6)


def draw_substrate(
    rng: np.random.Generator, name: str, size: int, scale: float, relief: str, light: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The shaded substrate (H, W, 3) in [0, 1] and its height field; `relief` scales the height."""
    gain = RELIEF_GAIN[relief]
    alb, h = DRAWERS[name](rng, size, scale, gain)
    h = h.astype(F32) * gain * size / 64
    if relief == "high":  # a drop-off: the ground falls away into shadow along a random direction
        y, x = grid(size)
        th = rng.uniform(0, 2 * np.pi)
        t = (x - 0.5) * np.cos(th) + (y - 0.5) * np.sin(th)
        alb = alb * np.clip(1.0 - 1.3 * t, 0.25, 1.2)[..., None]
    return np.clip(alb * hillshade(h, light)[..., None], 0, 1), h
