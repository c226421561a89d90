"""The names of the HML losses and of the uncertainty measures that weight the focal ones.

Torch-free, so that a recipe check and a command's `--loss` / `--measure` choices list them without
building anything; `uncertainty.MEASURES` maps the same names to their functions (a test holds them
equal).
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["LOSSES", "MEASURES", "LossName"]

LossName = Literal["mcloss", "weighted", "focal", "weighted_focal"]  # the recipe's `loss.name`
LOSSES: tuple[str, ...] = get_args(LossName)
MEASURES = (
    "predictive",
    "aleatoric",
    "mutual_information",
    "epistemic_js",
    "epistemic_kl",
    "bma_margin",
    "gmu",
)
