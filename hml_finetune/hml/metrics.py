"""HML metrics on constrained probabilities: AU(PRC), node-wise and micro P/R/F1, per-depth scores.

Roots are never evaluated and masked entries (m = 0) are excluded everywhere. `evaluate` scores the
coherent predicted sets of `label_rules.coherent_sets` (prob >= threshold, a float or a per-node (K,)
tensor, and every non-root parent predicted): the sets `predict` writes.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torchmetrics.functional.classification import binary_average_precision

from hml_finetune.hml.hierarchy import Hierarchy
from hml_finetune.hml.label_rules import coherent_sets


def apply_thresholds(probs: torch.Tensor, threshold: float | torch.Tensor) -> torch.Tensor:
    """Boolean predictions probs >= threshold (scalar, or (K,) broadcast over the batch)."""
    return probs >= torch.as_tensor(threshold, dtype=probs.dtype, device=probs.device)


def stat_counts(
    preds: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-node (tp, fp, fn) over known entries, from boolean predictions (B, K)."""
    known = mask != 0
    pos = (targets > 0.5) & known
    pred = preds.bool() & known
    tp = (pred & pos).sum(0)
    fp = (pred & ~pos).sum(0)
    fn = (~pred & pos).sum(0)
    return tp, fp, fn


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den with 0 where den == 0 (sklearn's zero_division=0)."""
    num, den = num.double(), den.double()
    return torch.where(den > 0, num / den.clamp(min=1), torch.zeros_like(num))


def prf(
    tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Precision, recall, F1 = 2tp / (2tp + fp + fn), each 0 where undefined."""
    return _ratio(tp, tp + fp), _ratio(tp, tp + fn), _ratio(2 * tp, 2 * tp + fp + fn)


def eval_columns(hierarchy: Hierarchy, exclude_nodes: Iterable[str] | None = None) -> torch.Tensor:
    """Indices of the evaluated nodes: all but the roots and `exclude_nodes` (names)."""
    drop = set(hierarchy.roots) | set(exclude_nodes or ())
    for name in drop:
        if name not in hierarchy.index:
            raise ValueError(f"excluded node {name!r} is not in the hierarchy")
    return torch.tensor([i for i, n in enumerate(hierarchy.nodes) if n not in drop])


def au_prc(
    probs: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    columns: torch.Tensor | None = None,
) -> float:
    """Micro average precision over the known (sample, node) entries of the given columns.

    Equals sklearn `average_precision_score` on the flattened known entries (the C-HMCNN number).
    NaN when no known entry is positive.
    """
    if columns is not None:
        probs, targets, mask = probs[:, columns], targets[:, columns], mask[:, columns]
    known = mask != 0
    t = (targets[known] > 0.5).long()
    if t.sum() == 0:
        return float("nan")
    return float(binary_average_precision(probs[known].double(), t))


def _depth_scores(
    tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, depth: torch.Tensor
) -> dict[int, dict[str, float]]:
    """Per depth: micro precision/recall/F1 (pooled counts) and macro recall/F1 over nodes with
    positives. A depth without known positives has no recall or F1 (NaN, not 0), one without
    predictions no precision."""
    out = {}
    nan = float("nan")
    for d in sorted(set(depth.tolist())):
        sel = depth == d
        t, f_p, f_n = tp[sel].sum(), fp[sel].sum(), fn[sel].sum()
        p, r, f = prf(t, f_p, f_n)
        has = sel & ((tp + fn) > 0)
        _, rn, fnode = prf(tp[has], fp[has], fn[has])
        out[int(d)] = {
            "n_nodes": int(sel.sum()),
            "n_nodes_with_positives": int(has.sum()),
            "precision_micro": float(p) if t + f_p > 0 else nan,
            "recall_micro": float(r) if has.any() else nan,
            "f1_micro": float(f) if has.any() else nan,
            "recall_macro": float(rn.mean()) if has.any() else nan,
            "f1_macro": float(fnode.mean()) if has.any() else nan,
        }
    return out


def prediction_depth(
    preds: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, depth: torch.Tensor
) -> dict[str, float]:
    """Mean depth of the deepest predicted vs deepest true known node (0 = none), per sample."""
    known = mask != 0
    d = depth.to(preds.device).unsqueeze(0).expand_as(known)
    zero = torch.zeros_like(d)
    pred_d = torch.where(preds.bool() & known, d, zero).amax(1).double()
    true_d = torch.where((targets > 0.5) & known, d, zero).amax(1).double()
    rows = known.any(1)
    if not rows.any():
        return {"pred_depth": float("nan"), "true_depth": float("nan"), "depth_gap": float("nan")}
    pred_d, true_d = pred_d[rows], true_d[rows]
    return {
        "pred_depth": float(pred_d.mean()),
        "true_depth": float(true_d.mean()),
        "depth_gap": float((pred_d - true_d).mean()),
    }


def evaluate(
    probs: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    hierarchy: Hierarchy,
    threshold: float | torch.Tensor = 0.5,
    exclude_nodes: Iterable[str] | None = None,
) -> dict:
    """All metrics on constrained probabilities (B, K); roots and `exclude_nodes` not evaluated;
    P/R/F1 of the coherent sets at `threshold`.

    Keys: au_prc; macro_{precision,recall,f1} ('all nodes': a node without positives scores 0);
    macro_{...}_pos (nodes with known positives only); micro_{...}; per_depth; pred_depth,
    true_depth, depth_gap; n_nodes, n_nodes_with_positives.
    """
    cols = eval_columns(hierarchy, exclude_nodes).to(probs.device)
    p, y, m = probs[:, cols], targets[:, cols], mask[:, cols]
    preds = coherent_sets(probs, threshold, hierarchy)[:, cols]
    tp, fp, fn = stat_counts(preds, y, m)
    P, R, F = prf(tp, fp, fn)
    has = (tp + fn) > 0
    mp, mr, mf = prf(tp.sum(), fp.sum(), fn.sum())
    depth = torch.from_numpy(hierarchy.depth_array)[cols.cpu()]
    out = {
        "au_prc": au_prc(p, y, m),
        "macro_precision": float(P.mean()),
        "macro_recall": float(R.mean()),
        "macro_f1": float(F.mean()),
        "macro_precision_pos": float(P[has].mean()) if has.any() else float("nan"),
        "macro_recall_pos": float(R[has].mean()) if has.any() else float("nan"),
        "macro_f1_pos": float(F[has].mean()) if has.any() else float("nan"),
        "micro_precision": float(mp),
        "micro_recall": float(mr),
        "micro_f1": float(mf),
        "n_nodes": int(cols.numel()),
        "n_nodes_with_positives": int(has.sum()),
        "per_depth": _depth_scores(tp.cpu(), fp.cpu(), fn.cpu(), depth),
    }
    out.update(prediction_depth(preds, y, m, depth))
    return out
