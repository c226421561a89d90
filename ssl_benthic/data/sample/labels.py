"""Label drawing for the synthetic sample: which CATAMI classes an image shows, and how it is annotated.

The true labels of an image are full CATAMI paths for all four heads. The annotation written to the
shards may then be shallower (a path cut to a prefix, `shallow_fraction`) or leave one head out
(`unannotated_fraction`), as BenthicNet labels do. Drawing labels needs no pixels, so the class
frequencies can be checked quickly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ssl_benthic.core.catami import SEP, depth_of, head_of

B = "[BIOTA] > Biota > "
S = "[SUBSTRATE] > Substrate > "

# Biota classes: name -> (CATAMI path, relative frequency). Long-tailed: the last ones are rare deep nodes.
BIOTA_CLASSES: dict[str, tuple[str, float]] = {
    "none": ("[BIOTA] > No visible biota", 0.20),
    "massive_sponge": (B + "Sponges > Massive forms", 0.14),
    "branching_sponge": (B + "Sponges > Erect forms > Branching", 0.10),
    "sea_star": (B + "Echinoderms > Sea stars", 0.10),
    "regular_urchin": (B + "Echinoderms > Sea urchins > Regular urchins", 0.08),
    "kelp": (B + "Macroalgae > Large canopy-forming > Brown", 0.08),
    "branching_coral": (B + "Cnidaria > Corals > Stony corals > Branching", 0.07),
    "massive_coral": (B + "Cnidaria > Corals > Stony corals > Massive", 0.05),
    "seagrass": (B + "Seagrasses > Strap-like leaves", 0.05),
    "irregular_urchin": (B + "Echinoderms > Sea urchins > Irregular urchins", 0.03),
    "crater_cone": ("[BIOTA] > Bioturbation > Dwelling traces > Crater cone", 0.03),
    "cup_sponge": (B + "Sponges > Cup-likes > Cups > Cup / goblet", 0.025),
    "stalked_ascidian": (B + "Ascidians > Stalked > Solitary", 0.02),
    "sea_fan": (
        B + "Cnidaria > Corals > Black & Octocorals > Fan (2D) > Fern-frond > Complex",
        0.015,
    ),
}

_RELIEF = {
    "flat": "[RELIEF] > Flat",
    "low": "[RELIEF] > Low / moderate > Low (<1m)",
    "moderate": "[RELIEF] > Low / moderate > Moderate (1-3m)",
    "high": "[RELIEF] > High > High (>3m)",
}
_BED = {
    "none": "[BEDFORMS] > None",
    "ripples": "[BEDFORMS] > Bedforms > 2D > Ripples (<10cm height)",
    "waves": "[BEDFORMS] > Bedforms > 2D > Waves (>10cm height)",
    "bioturbated": "[BEDFORMS] > Bedforms > Bioturbated",
}

# Substrate classes: name -> (substrate path, relief choices, bedform, relative frequency).
SUBSTRATE_CLASSES: dict[str, tuple[str, tuple[str, ...], str, float]] = {
    "fine_sand": (
        S + "Unconsolidated (soft) > Sand / mud (<2mm) > Fine sand (no shell fragments)",
        ("flat",),
        "none",
        0.20,
    ),
    "rippled_sand": (
        S + "Unconsolidated (soft) > Sand / mud (<2mm) > Fine sand (no shell fragments)",
        ("flat",),
        "ripples",
        0.15,
    ),
    "sand_waves": (
        S + "Unconsolidated (soft) > Sand / mud (<2mm) > Coarse sand (with shell fragments)",
        ("flat", "low"),
        "waves",
        0.06,
    ),
    "coarse_sand": (
        S + "Unconsolidated (soft) > Sand / mud (<2mm) > Coarse sand (with shell fragments)",
        ("flat",),
        "none",
        0.08,
    ),
    "mud": (
        S + "Unconsolidated (soft) > Sand / mud (<2mm) > Mud / silt (<64um)",
        ("flat",),
        "bioturbated",
        0.07,
    ),
    "gravel": (
        S + "Unconsolidated (soft) > Pebble / gravel > Gravel (2-10mm)",
        ("flat",),
        "none",
        0.10,
    ),
    "pebble": (
        S + "Unconsolidated (soft) > Pebble / gravel > Pebble (10-64mm)",
        ("flat", "low"),
        "none",
        0.08,
    ),
    "shell_hash": (
        S + "Unconsolidated (soft) > Pebble / gravel > Biologenic > Coquina / shellhash",
        ("flat",),
        "none",
        0.03,
    ),
    "cobbles": (S + "Consolidated (hard) > Cobbles", ("low",), "none", 0.08),
    "boulders": (S + "Consolidated (hard) > Boulders", ("low", "moderate"), "none", 0.07),
    "rock": (S + "Consolidated (hard) > Rock", ("low", "moderate", "high"), "none", 0.08),
}

# Deep nodes drawn with a frequency of a few percent or less (the tail a node-wise weighted loss targets).
RARE_PATHS: tuple[str, ...] = (
    BIOTA_CLASSES["sea_fan"][0],
    BIOTA_CLASSES["stalked_ascidian"][0],
    BIOTA_CLASSES["cup_sponge"][0],
    BIOTA_CLASSES["irregular_urchin"][0],
    BIOTA_CLASSES["crater_cone"][0],
    SUBSTRATE_CLASSES["shell_hash"][0],
)

SECOND_BIOTA_PROB = 0.15  # share of images showing a second biota class (multi-label)
_MIN_CUT_DEPTH = {
    "biota": 2,
    "substrate": 2,
    "relief": 1,
    "bedforms": 1,
}  # level 1 of these is generic


@dataclass(frozen=True)
class Scene:
    """What one image shows: the biota classes (drawing order), the substrate class and the relief name."""

    biota: tuple[str, ...]
    substrate: str
    relief: str

    def true_labels(self) -> dict[str, list[str]]:
        """Full CATAMI paths for all four heads."""
        path, _, bed, _ = SUBSTRATE_CLASSES[self.substrate]
        return {
            "biota": [BIOTA_CLASSES[b][0] for b in self.biota],
            "substrate": [path],
            "relief": [_RELIEF[self.relief]],
            "bedforms": [_BED[bed]],
        }


def _pick(rng: np.random.Generator, table: dict) -> str:
    names = list(table)
    freq = np.array([row[-1] for row in table.values()], dtype=float)
    return names[int(rng.choice(len(names), p=freq / freq.sum()))]


def draw_scene(rng: np.random.Generator) -> Scene:
    """Draw the classes one image shows, with the long-tailed frequencies of the tables above."""
    substrate = _pick(rng, SUBSTRATE_CLASSES)
    reliefs = SUBSTRATE_CLASSES[substrate][1]
    relief = reliefs[int(rng.integers(len(reliefs)))]
    first = _pick(rng, BIOTA_CLASSES)
    biota = (first,)
    if first != "none" and rng.random() < SECOND_BIOTA_PROB:
        second = _pick(rng, BIOTA_CLASSES)
        if second not in ("none", first):
            biota = (first, second)
    return Scene(biota=biota, substrate=substrate, relief=relief)


def cut_path(path: str, depth: int) -> str:
    """The prefix of `path` with `depth` levels below the head root."""
    return SEP.join(path.split(SEP)[: depth + 1])


def annotate(
    rng: np.random.Generator,
    true: dict[str, list[str]],
    shallow_fraction: float,
    unannotated_fraction: float,
) -> dict[str, list[str]]:
    """The labels written for an image: with probability `shallow_fraction` one label of one head is cut
    to a shallower prefix (never above level 2 for biota/substrate, level 1 for relief/bedforms);
    with probability `unannotated_fraction` another head is left out."""
    labels = {h: list(paths) for h, paths in true.items()}
    cut_head = None
    if rng.random() < shallow_fraction:
        options = [
            (h, i)
            for h, paths in labels.items()
            for i, p in enumerate(paths)
            if depth_of(p) > _MIN_CUT_DEPTH[head_of(p)]
        ]
        if options:
            cut_head, i = options[int(rng.integers(len(options)))]
            p = labels[cut_head][i]
            lo = _MIN_CUT_DEPTH[head_of(p)]
            labels[cut_head][i] = cut_path(p, int(rng.integers(lo, depth_of(p))))
    if rng.random() < unannotated_fraction:
        heads = [h for h in labels if h != cut_head]
        del labels[heads[int(rng.integers(len(heads)))]]
    return labels
