"""CoralNet machine suggestions: label-map codes ranked by the probability that the code IS the
point's label, one quantity at every depth and in every head.

For a node v of a tree head with (calibrated, constrained) marginals p, the point's label stops at
v with probability s(v) = max(0, p_v - sum_{c child of v} p_c): a leaf scores its marginal, an inner
node (a coarse code) only the mass its children do not explain, never its marginal (which is never
below any child's, so it would win every point). On a DAG the children may overlap, so
p_v - sum_c p_c is a lower bound of p_v - P(any child) and is used as is.

Across heads: summed over a head's nodes below the root, s telescopes to the marginal mass of the
root's children, the trained probability that the point's label lies in that head (the root itself is
never trained, so its marginal carries no information). One label per point, so the heads compete:
score(v) = s(v) / max(1, Z), Z = sum of s over every head's non-root nodes, which is
P(head) * P(stop at v | head) with P(head) proportional to its mass. Dividing by Z only when it
exceeds 1 keeps the scores a distribution over the codes (confidences sum to at most 100%) without
inflating an unsure model. A single-label head's class probabilities enter as they are (mass 1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI imports writers, which imports this: keep the import light
    from hml_finetune.hml.hierarchy import Hierarchy
    from hml_finetune.hml.schemes import Scheme
    from hml_finetune.predict.labels import HeadPrediction

__all__ = ["stop_probabilities", "label_probabilities", "rank_codes"]


def stop_probabilities(marginals: dict[str, float], h: Hierarchy) -> dict[str, float]:
    """s(v) = max(0, p_v - sum over children c of p_c) for every non-root node v of `h`."""
    return {
        v: max(0.0, marginals[v] - sum(marginals[c] for c in h.children[v]))
        for v in h.nodes
        if v not in h.roots
    }


def label_probabilities(
    heads: dict[str, HeadPrediction],
    hierarchies: dict[str, Hierarchy],
    schemes: dict[str, Scheme],
) -> dict[str, dict[str, float]]:
    """Per head, {label as the scheme writes it: P(the point's label is it)}: stop probabilities
    of the HML heads' non-root nodes, a single-label head's class probabilities, all divided by
    max(1, their total)."""
    raw: dict[str, dict[str, float]] = {}
    for head, pred in heads.items():
        h, scheme = hierarchies.get(head), schemes.get(head)
        if h is None or scheme is None:
            raw[head] = dict(pred.probabilities)
            continue
        marginals = {v: pred.probabilities[scheme.label(v)] for v in h.nodes}
        stops = stop_probabilities(marginals, h)
        raw[head] = {scheme.label(v): s for v, s in stops.items()}
    total = sum(s for scores in raw.values() for s in scores.values())
    scale = 1.0 / max(1.0, total)
    return {head: {n: s * scale for n, s in scores.items()} for head, scores in raw.items()}


def rank_codes(
    heads: dict[str, HeadPrediction],
    label_map: dict[str, dict[str, str]] | None,
    hierarchies: dict[str, Hierarchy],
    schemes: dict[str, Scheme],
) -> list[tuple[str, float]]:
    """Every code of the label map with P(the point's label is its node) (`label_probabilities`),
    most probable first, then deeper first, then by code; without a map, the classes of the head
    `label` (CoralNet codes used as labels). Codes of a head or node the model lacks are left out."""
    scores = label_probabilities(heads, hierarchies, schemes)
    if label_map is None:
        own = scores.get("label", {})
        return sorted(own.items(), key=lambda kv: (-kv[1], kv[0]))
    scored = []
    for code, entry in label_map.items():
        head, path = entry["head"], entry["path"]
        h, scheme = hierarchies.get(head), schemes.get(head)
        if h is not None and scheme is not None:
            node = scheme.node(path)
            name, depth = scheme.label(node), h.depth.get(node, 0)
        else:  # a single-label head: its classes are the paths
            name, depth = path, 0
        if name in scores.get(head, {}):
            scored.append((code, scores[head][name], depth))
    return [(c, p) for c, p, _ in sorted(scored, key=lambda t: (-t[1], -t[2], t[0]))]
