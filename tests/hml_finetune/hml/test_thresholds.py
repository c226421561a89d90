"""Threshold tuning on hand-made validation scores: global (micro/macro) and per node with fallback."""

import pytest
import torch

from hml_finetune.hml.thresholds import (
    apply_thresholds,
    tune_global_threshold,
    tune_per_node_thresholds,
)


def columns(*cols):
    return torch.tensor(cols, dtype=torch.float64).T.contiguous()


# node 0 separable between 0.3 and 0.8; node 1 between 0.05 and 0.12; node 2 one positive only
PROBS = columns([0.9, 0.8, 0.3, 0.2], [0.15, 0.12, 0.05, 0.01], [0.4, 0.6, 0.7, 0.1])
TARGETS = columns([1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0])
MASK = torch.ones_like(TARGETS)


def test_global_threshold_micro_and_macro():
    # node 0 alone: F1 = 1 for t in (0.3, 0.8]; the first grid value wins
    assert tune_global_threshold(PROBS[:, :1], TARGETS[:, :1], MASK[:, :1], average="micro") == 0.31
    # nodes 0 and 1: no grid value separates both; macro F1 by the slow formula picks the best
    grid = (0.1, 0.13, 0.31, 0.5)
    f1s = {}
    for t in grid:
        preds = apply_thresholds(PROBS[:, :2], t)
        tp = (preds & (TARGETS[:, :2] > 0)).sum(0).double()
        fp = (preds & (TARGETS[:, :2] == 0)).sum(0).double()
        fn = (~preds & (TARGETS[:, :2] > 0)).sum(0).double()
        f1s[t] = (2 * tp / (2 * tp + fp + fn)).mean().item()
    best = max(grid, key=lambda t: f1s[t])
    assert tune_global_threshold(PROBS[:, :2], TARGETS[:, :2], MASK[:, :2], grid=grid) == best
    assert best == 0.1  # node 1 perfect, node 0: 4 predicted, 2 positive -> 2/3


def test_per_node_thresholds_with_fallback():
    t = tune_per_node_thresholds(PROBS, TARGETS, MASK, min_positives=2, fallback=0.42)
    assert t.tolist() == pytest.approx([0.31, 0.06, 0.42])
    auto = tune_per_node_thresholds(PROBS, TARGETS, MASK, min_positives=2)
    assert auto[2].item() == pytest.approx(tune_global_threshold(PROBS, TARGETS, MASK))


def test_masked_entries_do_not_move_thresholds():
    probs = torch.cat([PROBS, torch.tensor([[0.99, 0.99, 0.99]], dtype=torch.float64)])
    targets = torch.cat([TARGETS, torch.zeros(1, 3, dtype=torch.float64)])
    mask = torch.cat([MASK, torch.zeros(1, 3, dtype=torch.float64)])
    t = tune_per_node_thresholds(probs, targets, mask, min_positives=2, fallback=0.42)
    assert t.tolist() == pytest.approx([0.31, 0.06, 0.42])
    # known, that false positive at 0.99 cannot be avoided, so node 0 still picks 0.31 (F1 0.8)
    t_known = tune_per_node_thresholds(
        probs, targets, torch.ones_like(mask), min_positives=2, fallback=0.42
    )
    assert t_known[0].item() == pytest.approx(0.31)


def test_apply_thresholds_per_node():
    preds = apply_thresholds(PROBS, torch.tensor([0.5, 0.1, 0.65]))
    assert preds[:, 0].tolist() == [True, True, False, False]
    assert preds[:, 1].tolist() == [True, True, False, False]
    assert preds[:, 2].tolist() == [False, False, True, False]


def test_tune_rule_dispatches_and_makes_per_node_thresholds_monotone():
    """The one dispatcher: a number is used as is; 'per-node' tunes, then lifts a child's threshold
    to its non-root parent's: b (separable between 0.05 and 0.11) alone would take a lower
    threshold than its parent A (separable between 0.3 and 0.7)."""
    from hml_finetune.hml.hierarchy import Hierarchy
    from hml_finetune.hml.thresholds import tune_rule

    h = Hierarchy.from_paths(["R > A > b", "R > C"])
    a = [0.9, 0.8, 0.7, 0.3, 0.2, 0.1] * 2  # 6 positives per node: each gets its own threshold
    by_node = {
        "R": a,
        "R > A": a,
        "R > C": a,
        "R > A > b": [0.15, 0.12, 0.11, 0.05, 0.02, 0.01] * 2,
    }
    probs = columns(*[by_node[n] for n in h.nodes])
    targets = columns(*[[1, 1, 1, 0, 0, 0] * 2] * len(h.nodes))
    mask = torch.ones_like(targets)
    A, b = h.index["R > A"], h.index["R > A > b"]
    raw = tune_per_node_thresholds(probs, targets, mask)
    assert raw[b] < raw[A]  # the incoherent pair the rule must repair
    t = tune_rule("per-node", probs, targets, mask, h)
    assert t[b] == t[A] == raw[A]
    others = [i for i in range(len(h.nodes)) if i != b]
    assert torch.equal(t[others], raw[others])
    assert tune_rule(0.3, probs, targets, mask, h) == 0.3
    assert tune_rule("global", probs, targets, mask, h) == tune_global_threshold(
        probs, targets, mask
    )
