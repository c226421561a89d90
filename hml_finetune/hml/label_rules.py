"""From node marginals to answers: coherent predicted sets and the three label rules.

Coherent sets (top-down masking): node j is predicted iff p_j >= t_j and every parent of j that is
not a root is predicted. The set is closed under ancestors for any threshold (a number, or one per
node) and any DAG, even on probabilities that break the max-constraint. Tuned per-node thresholds
are also made monotone (`monotone_thresholds`, t(child) = max(t(child), t(parents))) right after
tuning, so that on constrained probabilities the masking changes nothing and the thresholds a
checkpoint stores are exactly the ones applied.

Label rules (one node per sample; a head's root, depth 0, means "nothing confident below it"):

- `expected-hops` (trees): with A(v) = v and its ancestors below the root and p_u the marginal of u,
  E[d(v, Y)] = sum_u p_u + sum_{u in A(v)} (1 - 2 p_u), so the label is
  argmin_v S(v), S(v) = sum_{u in A(v)} (1 - 2 p_u), S(root) = 0; ties go to the shallower node
  (then the more probable one).
- `threshold`: the deepest node of the coherent set, ties by probability; the root when it is empty.
- `min-probability`: from the root, step to the most probable child while its probability is at
  least `min_probability`; the last node reached.

A DAG (a node with two parents) has no single path to the root: `effective_rule` turns the other
rules into `threshold` there, with a warning.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from hml_finetune.hml.hierarchy import Hierarchy

__all__ = [
    "LABEL_RULES",
    "DEFAULT_MIN_PROBABILITY",
    "monotone_thresholds",
    "coherent_sets",
    "is_tree",
    "effective_rule",
    "expected_hops_labels",
    "threshold_labels",
    "min_probability_labels",
    "choose_labels",
]

LABEL_RULES = ("expected-hops", "threshold", "min-probability")
DEFAULT_MIN_PROBABILITY = 0.5


def _non_root_edges(h: Hierarchy) -> tuple[np.ndarray, np.ndarray]:
    """(parent, child) index arrays of the edges whose parent is not a root."""
    parent, child = h.edge_index()
    keep = np.array([h.nodes[p] not in h.roots for p in parent], dtype=bool)
    return parent[keep] if len(parent) else parent, child[keep] if len(child) else child


def monotone_thresholds(thresholds: torch.Tensor, h: Hierarchy) -> torch.Tensor:
    """(K,) thresholds with t(child) = max(t(child), t(parent) for every non-root parent), applied
    in topological order so the maximum runs down whole paths; roots' thresholds are kept and never
    passed on (roots are not predicted)."""
    t = thresholds.clone()
    parent, child = _non_root_edges(h)
    depth = h.depth_array[child] if len(child) else child
    for d in sorted(set(depth.tolist())):
        sel = depth == d
        c = torch.from_numpy(child[sel])
        p = torch.from_numpy(parent[sel])
        t = t.scatter_reduce(0, c, t[p], reduce="amax", include_self=True)
    return t


def coherent_sets(
    probs: torch.Tensor, thresholds: float | torch.Tensor, h: Hierarchy
) -> torch.Tensor:
    """Boolean (..., K): p_j >= t_j and every non-root parent of j in the set; roots never in it.
    Processed depth by depth (a parent's depth is always below its child's, even on a DAG)."""
    thr = torch.as_tensor(thresholds, dtype=probs.dtype, device=probs.device)
    passes = probs >= thr
    roots = torch.tensor([h.index[r] for r in h.roots], dtype=torch.long, device=probs.device)
    passes[..., roots] = False
    parent, child = _non_root_edges(h)
    depth = h.depth_array[child] if len(child) else child
    flat = passes.reshape(-1, probs.shape[-1])
    for d in sorted(set(depth.tolist())):
        sel = depth == d
        c = torch.from_numpy(child[sel]).to(probs.device)
        p = torch.from_numpy(parent[sel]).to(probs.device)
        failed = torch.zeros(flat.shape, dtype=torch.int32, device=probs.device)
        failed.index_add_(1, c, (~flat[:, p]).int())
        flat = flat & (failed == 0)
    return flat.reshape(probs.shape)


def is_tree(h: Hierarchy) -> bool:
    """One root and at most one parent per node: every node has one path to the root."""
    return len(h.roots) == 1 and all(len(ps) <= 1 for ps in h.parents.values())


def effective_rule(rule: str, h: Hierarchy, head: str = "") -> str:
    """`rule`, or `threshold` with a warning when `rule` needs a tree and `h` is a DAG."""
    if rule not in LABEL_RULES:
        raise ValueError(f"label rule {rule!r} is not one of {LABEL_RULES}")
    if rule != "threshold" and not is_tree(h):
        warnings.warn(
            f"head {head!r}: label rule {rule!r} needs a tree scheme (one parent per node); "
            "this one is a DAG: using 'threshold'",
            stacklevel=2,
        )
        return "threshold"
    return rule


def _best(score: torch.Tensor, depth: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """Per row the index with the highest score, then the shallowest, then the most probable
    (score -inf marks nodes that cannot be chosen); ties left over go to the lowest index."""
    d = depth.to(probs.dtype)
    top = score.max(-1, keepdim=True).values
    cand = score >= top - 1e-9
    dmin = torch.where(cand, d, torch.full_like(d, float("inf"))).min(-1, keepdim=True).values
    cand &= d <= dmin
    return torch.where(cand, probs, torch.full_like(probs, -1.0)).argmax(-1)


def expected_hops_labels(probs: torch.Tensor, h: Hierarchy) -> torch.Tensor:
    """(N,) argmin_v S(v), S(v) = sum_{u in A(v)} (1 - 2 p_u), S(root) = 0 (tree `h`), ties to the
    shallower node, then the more probable."""
    if not is_tree(h):
        raise ValueError("expected-hops labels need a tree (one root, one parent per node)")
    S = torch.zeros_like(probs, dtype=torch.float64)
    gain = 1.0 - 2.0 * probs.double()
    parent, child = h.edge_index()
    depth = h.depth_array[child] if len(child) else child
    for d in sorted(set(depth.tolist())):  # a parent's S is final before its children read it
        sel = depth == d
        c, p = torch.from_numpy(child[sel]), torch.from_numpy(parent[sel])
        S[:, c] = S[:, p] + gain[:, c]
    depth = torch.from_numpy(h.depth_array).to(probs.device)
    return _best(-S, depth.expand_as(S), probs.double())


def threshold_labels(probs: torch.Tensor, sets: torch.Tensor, h: Hierarchy) -> torch.Tensor:
    """(N,) the deepest node of each coherent set (ties by probability); the most probable root
    when the set is empty."""
    depth = torch.from_numpy(h.depth_array).to(probs.device).expand_as(probs)
    neg = torch.full_like(probs, -1.0)
    roots = torch.tensor([h.index[r] for r in h.roots], device=probs.device)
    is_root = torch.zeros(probs.shape[-1], dtype=torch.bool, device=probs.device)
    is_root[roots] = True
    score = torch.where(sets, depth.to(probs.dtype) + probs.clamp(0, 1) * 0.5, neg)
    deepest = score.argmax(-1)
    root = torch.where(is_root, probs, neg).argmax(-1)
    return torch.where(sets.any(-1), deepest, root)


def min_probability_labels(
    probs: torch.Tensor, h: Hierarchy, min_probability: float
) -> torch.Tensor:
    """(N,) from the most probable root, step to the most probable child while its probability is
    >= `min_probability` (first child in node order on a tie); the last node reached."""
    out = []
    for row in probs.tolist():
        node = max(h.roots, key=lambda r: row[h.index[r]])
        while h.children[node]:
            best = max(h.children[node], key=lambda c: row[h.index[c]])
            if row[h.index[best]] < min_probability:
                break
            node = best
        out.append(h.index[node])
    return torch.tensor(out, dtype=torch.long, device=probs.device)


def choose_labels(
    probs: torch.Tensor,
    thresholds: float | torch.Tensor,
    h: Hierarchy,
    rule: str,
    min_probability: float = DEFAULT_MIN_PROBABILITY,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels (N,), coherent sets (N, K)) of probabilities (N, K) under `rule` (already an
    `effective_rule` for `h`)."""
    sets = coherent_sets(probs, thresholds, h)
    if rule == "expected-hops":
        return expected_hops_labels(probs, h), sets
    if rule == "threshold":
        return threshold_labels(probs, sets, h), sets
    if rule == "min-probability":
        return min_probability_labels(probs, h, min_probability), sets
    raise ValueError(f"label rule {rule!r} is not one of {LABEL_RULES}")
