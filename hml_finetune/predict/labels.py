"""From probabilities to labels: the predicted set of each head and the label a scientist reads.

HML head: the predicted set is every node (roots excluded) at or above its tuned threshold; it is
coherent, since the max-constraint makes a parent at least as probable as its child. The label is the
deepest predicted node (ties by probability), or the head's root when nothing passes ("not confident
below the root"). Single-label head: the most probable class. Nodes are written as the head's
scheme writes its labels (a flat head's class names, a bracket-less scheme's paths without root).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from hml_finetune.hml.hierarchy import Hierarchy
from hml_finetune.hml.schemes import Scheme

__all__ = ["HeadPrediction", "head_prediction", "single_prediction", "top_leaves"]


@dataclass
class HeadPrediction:
    """One head's answer for one image or point."""

    label: str
    probability: float
    depth: int
    predicted: list[str]
    probabilities: dict[str, float] = field(default_factory=dict)


def head_prediction(
    p: torch.Tensor, h: Hierarchy, threshold: float | torch.Tensor, scheme: Scheme
) -> HeadPrediction:
    """The predicted set and label of an HML head from its constrained probabilities p (K,)."""
    thr = torch.as_tensor(threshold, dtype=p.dtype).expand_as(p)
    roots = set(h.roots)
    chosen = [j for j in range(len(p)) if p[j] >= thr[j] and h.nodes[j] not in roots]
    if chosen:
        best = max(chosen, key=lambda j: (int(h.depth_array[j]), float(p[j])))
    else:
        best = max((h.index[r] for r in h.roots), key=lambda j: float(p[j]))

    def name(j: int) -> str:
        return scheme.label(h.nodes[j])

    return HeadPrediction(
        label=name(best),
        probability=float(p[best]),
        depth=int(h.depth_array[best]),
        predicted=[name(j) for j in chosen],
        probabilities={name(j): float(p[j]) for j in range(len(p))},
    )


def single_prediction(p: torch.Tensor, classes: list[str]) -> HeadPrediction:
    """A single-label head's most probable class (softmax probabilities p (C,))."""
    best = int(p.argmax())
    return HeadPrediction(
        label=classes[best],
        probability=float(p[best]),
        depth=1,
        predicted=[classes[best]],
        probabilities={c: float(p[i]) for i, c in enumerate(classes)},
    )


def top_leaves(
    pred: HeadPrediction, h: Hierarchy | None, scheme: Scheme | None, k: int
) -> list[tuple[str, float]]:
    """The k most probable leaves (most specific labels) of a head, most probable first; every
    class of a single-label head (`h` None)."""
    if h is None or scheme is None:
        names = list(pred.probabilities)
    else:
        names = [scheme.label(n) for n in h.nodes if not h.children[n]]
    ranked = sorted(names, key=lambda n: -pred.probabilities[n])
    return [(n, pred.probabilities[n]) for n in ranked[:k]]
