"""Underwater camera effects for the synthetic sample, and the one entry point that draws a scene.

Water absorbs red first, so each channel is scaled by a transmission t_c and hazed toward the water
colour w: I' = I * t * (1 - k) + w * k. Then uneven lighting (a vignette 1 - a r^2 and a linear
gradient), defocus blur and sensor noise. Each site has its own water, each image jitters around it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from ssl_benthic.data.sample.biota import draw_biota
from ssl_benthic.data.sample.labels import Scene
from ssl_benthic.data.sample.substrate import F32, draw_substrate, grid

N_SITES = 12


def site_water(site: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed per-site water: transmission (R, G, B) and haze colour, from its own seeded generator."""
    rng = np.random.default_rng([7919, site])
    trans = np.array(
        [rng.uniform(0.55, 0.92), rng.uniform(0.85, 1.0), rng.uniform(0.92, 1.08)], F32
    )
    haze = np.array(
        [rng.uniform(0.08, 0.22), rng.uniform(0.32, 0.48), rng.uniform(0.42, 0.60)], F32
    )
    return trans, haze


def _water(rng: np.random.Generator, img: np.ndarray, site: int) -> np.ndarray:
    trans, haze = site_water(site)
    trans = np.clip(trans * rng.uniform(0.92, 1.08, 3), 0.3, 1.1).astype(F32)
    k = rng.uniform(0.05, 0.25)
    return img * trans * (1 - k) + haze * k


def _lighting(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    y, x = grid(img.shape[0])
    cy, cx = rng.uniform(0.35, 0.65, 2)
    vignette = 1 - rng.uniform(0.2, 0.8) * ((y - cy) ** 2 + (x - cx) ** 2) * 2
    th = rng.uniform(0, 2 * np.pi)
    gradient = 1 + rng.uniform(-0.3, 0.3) * ((x - 0.5) * np.cos(th) + (y - 0.5) * np.sin(th)) * 2
    return img * (rng.uniform(0.7, 1.45) * vignette * gradient)[..., None]


def _sensor(rng: np.random.Generator, img: np.ndarray) -> Image.Image:
    size = img.shape[0]
    img = img + rng.normal(0, rng.uniform(0.003, 0.015), img.shape).astype(F32)
    pil = Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), "RGB")
    radius = rng.uniform(0, 0.9) * size / 64
    return pil.filter(ImageFilter.GaussianBlur(radius)) if radius > 0.15 else pil


def render_scene(rng: np.random.Generator, scene: Scene, size: int, site: int) -> Image.Image:
    """Draw one RGB image of `scene`: substrate, biota in order, then water, lighting, blur and noise.
    The camera altitude sets a scale in [0.75, 1.35] that sizes textures and objects alike."""
    scale = float(rng.uniform(0.75, 1.35))
    el, az = rng.uniform(0.5, 1.1), rng.uniform(0, 2 * np.pi)
    light = np.array([np.cos(el) * np.sin(az), np.cos(el) * np.cos(az), np.sin(el)], F32)
    img, _ = draw_substrate(rng, scene.substrate, size, scale, scene.relief, light)
    for name in scene.biota:
        img = draw_biota(rng, img, name, scale, light)
    return _sensor(rng, _lighting(rng, _water(rng, img.astype(F32), site)))
