"""Temperature scaling of an HML head (Guo et al. 2017), fitted on the validation split.

The head's probabilities at temperature T are mean_h MCM(sigmoid(z_h / T)) (logits z of each
ensemble member divided by T before the sigmoid and the max-constraint). T minimises the masked
BCE over the known entries of the evaluated (non-root) nodes,
    L(T) = -1/|known| sum_known [y log p(T) + (1 - y) log(1 - p(T))],
searched over log T in [log T_MIN, log T_MAX] (scipy's bounded Brent). A head with fewer than
`MIN_HEAD_POSITIVES` known validation positives keeps T = 1 with a warning, as thresholds do.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from scipy.optimize import minimize_scalar

from hml_finetune.hml.hierarchy import Hierarchy
from hml_finetune.hml.metrics import eval_columns
from hml_finetune.hml.thresholds import MIN_HEAD_POSITIVES, known_positives

__all__ = ["CALIBRATIONS", "T_MIN", "T_MAX", "masked_bce", "fit_temperature", "choose_temperature"]

CALIBRATIONS = ("temperature", "none")
T_MIN, T_MAX = 0.05, 20.0
EPS = 1e-7


def masked_bce(probs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean BCE of probabilities (clamped to [EPS, 1 - EPS]) over the known entries (mask != 0)."""
    known = mask != 0
    p = probs[known].double().clamp(EPS, 1 - EPS)
    y = (targets[known] > 0.5).double()
    return float(-(y * p.log() + (1 - y) * (1 - p).log()).mean())


def fit_temperature(
    probs_at: Callable[[float], torch.Tensor],
    targets: torch.Tensor,
    mask: torch.Tensor,
    columns: torch.Tensor | None = None,
) -> float:
    """The T in [T_MIN, T_MAX] minimising `masked_bce(probs_at(T), targets, mask)` over `columns`
    (all when None), searched on log T."""
    cols = slice(None) if columns is None else columns
    y, m = targets[:, cols], mask[:, cols]

    def loss(log_t: float) -> float:
        return masked_bce(probs_at(math.exp(log_t))[:, cols], y, m)

    found = minimize_scalar(
        loss, bounds=(math.log(T_MIN), math.log(T_MAX)), method="bounded", options={"xatol": 1e-4}
    )
    return float(math.exp(found.x))


def choose_temperature(
    rule: str,
    probs_at: Callable[[float], torch.Tensor],
    targets: torch.Tensor,
    mask: torch.Tensor,
    h: Hierarchy,
    head: str,
) -> tuple[float, str]:
    """(T, how it was set): 'none' (T = 1), 'temperature' (fitted on the evaluated nodes), or
    T = 1 with a warning when the head has fewer than `MIN_HEAD_POSITIVES` known positives."""
    if rule not in CALIBRATIONS:
        raise ValueError(f"calibration {rule!r} is not one of {CALIBRATIONS}")
    if rule == "none":
        return 1.0, "none"
    cols = eval_columns(h)
    n = known_positives(targets, mask, cols)
    if n < MIN_HEAD_POSITIVES:
        why = f"{n} validation positives < {MIN_HEAD_POSITIVES}"
        warnings.warn(f"head {head!r}: {why}: temperature 1 (not fitted)", stacklevel=2)
        return 1.0, f"none: {why}"
    return fit_temperature(probs_at, targets, mask, cols), "temperature"
