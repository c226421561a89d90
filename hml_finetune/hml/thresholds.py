"""Decision thresholds tuned on validation data: one global, or one per node with a fallback.

F1 is computed over known entries of the evaluated columns (pass `columns` to leave out roots);
prediction is prob >= threshold, as in `metrics.apply_thresholds`. A node with fewer than
`MIN_NODE_POSITIVES` known validation positives takes the tuned global threshold; a head with fewer
than `MIN_HEAD_POSITIVES` over its evaluated nodes is not tuned at all (`DEFAULT_THRESHOLD`): on
no positives every grid value scores F1 0 and the lowest one would "win".
"""

from __future__ import annotations

from typing import Literal

import torch

from hml_finetune.hml.hierarchy import Hierarchy
from hml_finetune.hml.label_rules import monotone_thresholds
from hml_finetune.hml.metrics import apply_thresholds, prf, stat_counts

__all__ = [
    "DEFAULT_THRESHOLD",
    "MIN_HEAD_POSITIVES",
    "MIN_NODE_POSITIVES",
    "apply_thresholds",
    "known_positives",
    "tune_global_threshold",
    "tune_per_node_thresholds",
]

DEFAULT_GRID = tuple(round(0.01 * i, 2) for i in range(1, 100))
DEFAULT_THRESHOLD = 0.5  # a head with too few validation positives to tune on
MIN_HEAD_POSITIVES = 5  # known validation positives over a head's evaluated nodes needed to tune
MIN_NODE_POSITIVES = 5  # known validation positives a node needs for its own per-node threshold


def _select(
    probs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, columns: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if columns is None:
        return probs, targets, mask
    return probs[:, columns], targets[:, columns], mask[:, columns]


def known_positives(
    targets: torch.Tensor, mask: torch.Tensor, columns: torch.Tensor | None = None
) -> int:
    """Known positive entries over the given columns (all columns when None)."""
    _, y, m = _select(targets, targets, mask, columns)
    return int(((y > 0.5) & (m != 0)).sum())


def tune_global_threshold(
    probs: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    grid: tuple[float, ...] = DEFAULT_GRID,
    average: Literal["micro", "macro"] = "macro",
    columns: torch.Tensor | None = None,
) -> float:
    """The grid threshold maximising F1: 'macro' = mean node F1 over nodes with known positives
    (default; same argmax as the all-nodes mean), 'micro' = F1 of the pooled counts. First max wins."""
    p, y, m = _select(probs, targets, mask, columns)
    best, best_t = -1.0, float(grid[0])
    for t in grid:
        tp, fp, fn = stat_counts(apply_thresholds(p, t), y, m)
        if average == "micro":
            score = float(prf(tp.sum(), fp.sum(), fn.sum())[2])
        elif average == "macro":
            has = (tp + fn) > 0
            score = float(prf(tp, fp, fn)[2][has].mean()) if has.any() else 0.0
        else:
            raise ValueError(f"average must be 'micro' or 'macro', got {average!r}")
        if score > best:
            best, best_t = score, float(t)
    return best_t


def tune_per_node_thresholds(
    probs: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    grid: tuple[float, ...] = DEFAULT_GRID,
    min_positives: int = MIN_NODE_POSITIVES,
    fallback: float | None = None,
    columns: torch.Tensor | None = None,
) -> torch.Tensor:
    """(K,) thresholds: per node the grid value maximising its F1 (first max wins) where it has at
    least `min_positives` known validation positives; elsewhere `fallback` (None: the tuned global
    macro-F1 threshold over `columns`)."""
    if fallback is None:
        fallback = tune_global_threshold(probs, targets, mask, grid, columns=columns)
    f1 = []
    for t in grid:
        tp, fp, fn = stat_counts(apply_thresholds(probs, t), targets, mask)
        f1.append(prf(tp, fp, fn)[2])
    best = torch.stack(f1).argmax(0)
    tuned = torch.tensor(grid, dtype=probs.dtype, device=probs.device)[best]
    positives = ((targets > 0.5) & (mask != 0)).sum(0)
    return torch.where(positives >= min_positives, tuned, torch.full_like(tuned, fallback))


def tune_rule(
    rule: str | float,
    probs: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    h: Hierarchy,
    columns: torch.Tensor | None = None,
) -> float | torch.Tensor:
    """The one threshold-rule dispatcher: a fixed number, or tuned on validation predictions,
    'global' (one value) or 'per-node' (K,) made monotone (t(child) = max(t(child), t(parents)))
    so the stored thresholds are the ones applied."""
    if rule == "global":
        return tune_global_threshold(probs, targets, mask, columns=columns)
    if rule == "per-node":
        tuned = tune_per_node_thresholds(probs, targets, mask, columns=columns)
        return monotone_thresholds(tuned, h)
    return float(rule)
