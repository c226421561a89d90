"""From probabilities to labels: the predicted set of each head and the label a scientist reads.

HML head: the predicted set is the coherent set of `label_rules.coherent_sets` (a node at or above its
threshold whose non-root parents are all predicted; roots excluded), closed under ancestors for any
threshold. The label is chosen by a label rule (`label_rules`: expected-hops, threshold,
min-probability); the head's root means "not confident below the root". Single-label head: the most
probable class. Nodes are written as the head's
scheme writes its labels (a flat head's class names, a bracket-less scheme's paths without root).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from hml_finetune.hml.hierarchy import Hierarchy
from hml_finetune.hml.label_rules import DEFAULT_MIN_PROBABILITY, choose_labels
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
    node: str = ""  # the label's hierarchy node (the label as the scheme writes it is `label`)
    label_rule: str = "threshold"


def head_prediction(
    p: torch.Tensor,
    h: Hierarchy,
    threshold: float | torch.Tensor,
    scheme: Scheme,
    rule: str = "threshold",
    min_probability: float = DEFAULT_MIN_PROBABILITY,
) -> HeadPrediction:
    """The coherent predicted set and the label (`rule`, an `effective_rule` for `h`) of an HML
    head from its constrained probabilities p (K,)."""
    labels, sets = choose_labels(p[None], threshold, h, rule, min_probability)
    best = int(labels[0])
    chosen = [j for j in range(len(p)) if bool(sets[0, j])]

    def name(j: int) -> str:
        return scheme.label(h.nodes[j])

    return HeadPrediction(
        label=name(best),
        probability=float(p[best]),
        depth=int(h.depth_array[best]),
        predicted=[name(j) for j in chosen],
        probabilities={name(j): float(p[j]) for j in range(len(p))},
        node=h.nodes[best],
        label_rule=rule,
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
        node=classes[best],
        label_rule="argmax",
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
