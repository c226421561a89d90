"""Hierarchical scores of one head: hP/hR/hF, hop distance, mistake severity, label accuracy per
depth, calibration error. Every score reads only the entries known for a sample (mask != 0).

Notation for sample i: K_i its known nodes, P_i its predicted (coherent) set, T_i its true nodes and
all their ancestors, roots excluded from both. The *true labels* of a sample are its known positive
nodes without a known positive child (the deepest annotated nodes).

- hP = sum_i |P_i & T_i & K_i| / sum_i |P_i & K_i|, hR = sum_i |P_i & T_i & K_i| / sum_i |T_i & K_i|,
  hF = 2 hP hR / (hP + hR) (micro over samples; on coherent sets these are micro P/R/F1 over the
  non-root nodes).
- hops(a, b) = min over common ancestors c of up(a, c) + up(b, c), up = edges walked upwards: the
  path through the lowest common ancestor.
- hop distance of a sample: min over its true labels t of hops(label cut to depth(t), t), the label
  cut only when it lies in t's subtree (the truth says nothing below t), so there the distance is 0.
- mistake severity: over samples whose label lies on no true path (neither an ancestor nor in the
  subtree of a true label; a label stopping above the truth is coarse, not wrong), the mean height
  up(label, lca) of the lowest common ancestor of the label and the nearest true label.
- label accuracy at depth d: among samples with a known positive at depth d, the share whose label
  has an ancestor-or-self at depth d that is a known positive; `abstained` the share whose label is
  shallower than d (no answer at d, counted as not correct).
- ECE: torchmetrics' binary calibration error (15 equal-width bins, L1) over known evaluated entries.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torchmetrics.functional.classification import binary_calibration_error

from hml_finetune.hml.hierarchy import Hierarchy
from hml_finetune.hml.label_rules import LABEL_RULES, choose_labels, coherent_sets, is_tree

__all__ = [
    "ECE_BINS",
    "up_distances",
    "true_labels",
    "hierarchical_prf",
    "hop_distances",
    "mistake_severity",
    "label_accuracy_by_depth",
    "expected_calibration_error",
    "reliability_bins",
    "hierarchical_scores",
]

ECE_BINS = 15


def up_distances(h: Hierarchy) -> np.ndarray:
    """U (K, K) float: U[a, c] = fewest edges walked upwards from a to c (0 for c = a), inf where c
    is not an ancestor-or-self of a."""
    K = len(h)
    U = np.full((K, K), np.inf)
    for name in h.nodes:  # topological: every parent's row is final first
        a = h.index[name]
        for p in h.parents[name]:
            U[a] = np.minimum(U[a], U[h.index[p]] + 1)
        U[a, a] = 0.0
    return U


def true_labels(targets: torch.Tensor, mask: torch.Tensor, h: Hierarchy) -> list[list[int]]:
    """Per sample, its known positive nodes without a known positive child."""
    pos = ((targets > 0.5) & (mask != 0)).cpu().numpy()
    parent, child = h.edge_index()
    has_child = np.zeros_like(pos)
    if len(parent):
        np.logical_or.at(has_child, (slice(None), parent), pos[:, child])
    return [np.flatnonzero(row).tolist() for row in pos & ~has_child]


def hierarchical_prf(
    sets: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, h: Hierarchy
) -> dict[str, float]:
    """h_precision, h_recall, h_f1 (micro over samples, known non-root entries); NaN where a
    denominator is 0."""
    cols = [j for j, n in enumerate(h.nodes) if n not in h.roots]
    known = (mask[:, cols] != 0).cpu()
    P = sets[:, cols].cpu().bool() & known
    T = (targets[:, cols].cpu() > 0.5) & known
    hit, n_p, n_t = float((P & T).sum()), float(P.sum()), float(T.sum())
    hp = hit / n_p if n_p else math.nan
    hr = hit / n_t if n_t else math.nan
    if math.isnan(hp) or math.isnan(hr):
        hf = math.nan
    else:
        hf = 2 * hp * hr / (hp + hr) if hp + hr > 0 else 0.0
    return {"h_precision": hp, "h_recall": hr, "h_f1": hf}


def hop_distances(
    labels: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, h: Hierarchy
) -> tuple[np.ndarray, np.ndarray]:
    """(hop distance, nearest true label) per sample with a true label (NaN and -1 without one)."""
    U, R = up_distances(h), h.descendant_matrix()
    truths = true_labels(targets, mask, h)
    dist = np.full(len(truths), np.nan)
    nearest = np.full(len(truths), -1, dtype=np.int64)
    for i, (v, ts) in enumerate(zip(labels.tolist(), truths, strict=True)):
        for t in ts:
            d = 0.0 if R[t, v] else float(np.min(U[v] + U[t]))
            if np.isnan(dist[i]) or d < dist[i]:
                dist[i], nearest[i] = d, t
    return dist, nearest


def mistake_severity(
    labels: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, h: Hierarchy
) -> tuple[float, int]:
    """(mean height of lca(label, nearest true label) over the wrong samples, their number);
    NaN when no label is wrong."""
    U, R = up_distances(h), h.descendant_matrix()
    _, nearest = hop_distances(labels, targets, mask, h)
    truths = true_labels(targets, mask, h)
    heights = []
    for v, t, ts in zip(labels.tolist(), nearest.tolist(), truths, strict=True):
        if t < 0 or any(R[s, v] or R[v, s] for s in ts):
            continue
        c = int(np.argmin(U[v] + U[t]))
        heights.append(U[v, c])
    return (float(np.mean(heights)) if heights else math.nan), len(heights)


def label_accuracy_by_depth(
    labels: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, h: Hierarchy
) -> tuple[dict[int, float], dict[int, float]]:
    """({depth: label accuracy}, {depth: abstained share}) for depths 1..max; NaN where no sample's
    truth reaches the depth."""
    R = torch.from_numpy(h.descendant_matrix())
    depth = torch.from_numpy(h.depth_array)
    pos = ((targets > 0.5) & (mask != 0)).cpu()
    lab = labels.cpu()
    anc = R[:, lab].T  # (N, K): c is an ancestor-or-self of the label
    acc, abstained = {}, {}
    for d in range(1, int(h.depth_array.max(initial=0)) + 1):
        at_d = depth == d
        reach = (pos & at_d).any(1)
        n = int(reach.sum())
        correct = (anc & pos & at_d).any(1) & reach
        shallow = (depth[lab] < d) & reach
        acc[d] = int(correct.sum()) / n if n else math.nan
        abstained[d] = int(shallow.sum()) / n if n else math.nan
    return acc, abstained


def expected_calibration_error(
    probs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, h: Hierarchy
) -> float:
    """ECE (15 equal-width bins, L1) of the node marginals over known non-root entries; NaN when
    there are none."""
    cols = torch.tensor([j for j, n in enumerate(h.nodes) if n not in h.roots], dtype=torch.long)
    known = mask[:, cols] != 0
    if not known.any():
        return math.nan
    p = probs[:, cols][known].double().clamp(0, 1)
    t = (targets[:, cols][known] > 0.5).long()
    return float(binary_calibration_error(p, t, n_bins=ECE_BINS, norm="l1"))


def reliability_bins(
    probs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, h: Hierarchy
) -> dict[str, list[float]]:
    """The reliability diagram behind the ECE: per non-empty bin of `ECE_BINS` equal-width bins
    over (0, 1] (bin b holds (b/15, (b+1)/15], 0 in the first), the mean probability
    (`confidence`), the positive share (`accuracy`) and the `count` of known non-root entries."""
    cols = torch.tensor([j for j, n in enumerate(h.nodes) if n not in h.roots], dtype=torch.long)
    known = mask[:, cols] != 0
    p = probs[:, cols][known].double().clamp(0, 1)
    t = (targets[:, cols][known] > 0.5).double()
    b = (torch.ceil(p * ECE_BINS).long() - 1).clamp(0, ECE_BINS - 1)
    out: dict[str, list[float]] = {"confidence": [], "accuracy": [], "count": []}
    for k in range(ECE_BINS):
        sel = b == k
        if sel.any():
            out["confidence"].append(float(p[sel].mean()))
            out["accuracy"].append(float(t[sel].mean()))
            out["count"].append(int(sel.sum()))
    return out


def _mean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if len(finite) else math.nan


def hierarchical_scores(
    probs: torch.Tensor,
    raw_probs: torch.Tensor | None,
    targets: torch.Tensor,
    mask: torch.Tensor,
    h: Hierarchy,
    threshold: float | torch.Tensor,
    rule: str = "expected-hops",
    min_probability: float = 0.5,
) -> dict[str, Any]:
    """The `heads.<head>.hierarchical` block of metrics.json: h_precision/h_recall/h_f1 of the
    coherent sets; hop_distance, mistake_severity (n_mistakes), label_accuracy_by_depth and
    abstained_by_depth of the labels of `rule` (`label_rule`, threshold on a DAG);
    hop_distance_by_rule for every rule `h` allows; ece of `probs`, ece_uncalibrated of
    `raw_probs` (None: `probs`, no calibration) with their `reliability` bins; n_labelled
    (samples with a true label)."""
    rules = [r for r in LABEL_RULES if r == "threshold" or is_tree(h)]
    used = rule if rule in rules else "threshold"
    sets = coherent_sets(probs, threshold, h)
    out: dict[str, Any] = {**hierarchical_prf(sets, targets, mask, h), "label_rule": used}
    if used == "min-probability":
        out["min_probability"] = min_probability
    by_rule, chosen = {}, None
    for r in rules:
        labels, _ = choose_labels(probs, threshold, h, r, min_probability)
        dist, _ = hop_distances(labels, targets, mask, h)
        by_rule[r] = _mean(dist)
        if r == used:
            chosen, out["n_labelled"] = labels, int((~np.isnan(dist)).sum())
    out["hop_distance"] = by_rule[used]
    out["hop_distance_by_rule"] = by_rule
    out["mistake_severity"], out["n_mistakes"] = mistake_severity(chosen, targets, mask, h)
    acc, abstained = label_accuracy_by_depth(chosen, targets, mask, h)
    out["label_accuracy_by_depth"], out["abstained_by_depth"] = acc, abstained
    out["ece"] = expected_calibration_error(probs, targets, mask, h)
    raw = probs if raw_probs is None else raw_probs
    out["ece_uncalibrated"] = expected_calibration_error(raw, targets, mask, h)
    out["reliability"] = reliability_bins(probs, targets, mask, h)
    out["reliability_uncalibrated"] = reliability_bins(raw, targets, mask, h)
    return out
