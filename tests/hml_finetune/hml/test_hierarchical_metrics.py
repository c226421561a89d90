"""Hierarchical scores on a hand-worked 3-level tree (masks, a shallow truth, a label deeper than
the truth), and hP/hR/hF against a slow per-sample implementation on random data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_label_rules import constrained, random_hierarchy

from hml_finetune.hml.hierarchical_metrics import (
    expected_calibration_error,
    hierarchical_prf,
    hop_distances,
    label_accuracy_by_depth,
    mistake_severity,
    reliability_bins,
    up_distances,
)
from hml_finetune.hml.hierarchy import Hierarchy
from hml_finetune.hml.label_rules import coherent_sets
from hml_finetune.hml.metrics import evaluate

PATHS = ["a", "a > b", "a > b > c", "a > b > d", "a > e", "f"]
H = Hierarchy.from_paths([f"[R] > {p}" for p in PATHS])


def n(short: str) -> int:
    return H.index["[R]" if short == "R" else f"[R] > {short}"]


# sample: (true label, predicted label, predicted set); the sixth sample has no labels
SAMPLES = [
    ("a > b > c", "a > b > d", ["a", "a > b", "a > b > d"]),
    ("a > b", "a > b > c", ["a", "a > b", "a > b > c"]),  # label deeper than the truth
    ("a", "f", ["f"]),  # a shallow truth: a's subtree unknown
    ("a > e", "R", []),  # nothing predicted: the root
    ("f", "a > b", ["a", "a > b"]),
    (None, "a", ["a"]),  # unlabelled: every entry unknown
]


def hand_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    truths = [[f"[R] > {t}"] if t else [] for t, _, _ in SAMPLES]
    y, m = H.encode_many(truths)
    labels = torch.tensor([n(lab) for _, lab, _ in SAMPLES])
    sets = torch.zeros(len(SAMPLES), len(H), dtype=torch.bool)
    for i, (_, _, chosen) in enumerate(SAMPLES):
        for c in chosen:
            sets[i, n(c)] = True
    return labels, sets, y, m


def test_up_distances_and_hops():
    U = up_distances(H)
    assert U[n("a > b > c"), n("a")] == 2 and U[n("a > b > c"), n("R")] == 3
    assert math.isinf(U[n("a"), n("f")]) and U[n("f"), n("f")] == 0


def test_hierarchical_prf_by_hand():
    _, sets, y, m = hand_data()
    # hits 2+2+0+0+0, |P & K| 3+2+1+0+2, |T & K| 3+2+1+2+1 (sample 2: c unknown)
    out = hierarchical_prf(sets, y, m, H)
    assert out["h_precision"] == pytest.approx(4 / 8)
    assert out["h_recall"] == pytest.approx(4 / 9)
    assert out["h_f1"] == pytest.approx(8 / 17)


def test_hop_distance_and_mistake_severity_by_hand():
    labels, _, y, m = hand_data()
    dist, _ = hop_distances(labels, y, m, H)
    # d-c via b: 2; c inside b's subtree: 0; f-a via the root: 2; root-e: 2; b-f via the root: 3
    assert dist[:5].tolist() == [2, 0, 2, 2, 3] and math.isnan(dist[5])
    assert np.nanmean(dist) == pytest.approx(9 / 5)
    severity, wrong = mistake_severity(labels, y, m, H)
    # wrong: d (lca b, 1 up), f (lca root, 1 up), b (lca root, 2 up); the root label is no mistake
    assert wrong == 3 and severity == pytest.approx(4 / 3)


def test_label_accuracy_by_depth_by_hand():
    labels, _, y, m = hand_data()
    acc, abstained = label_accuracy_by_depth(labels, y, m, H)
    # depth 1: five samples reach it, d and c are under a; depth 2: b, b, e; depth 3: c only
    assert acc == {1: pytest.approx(2 / 5), 2: pytest.approx(2 / 3), 3: 0.0}
    assert abstained == {1: pytest.approx(1 / 5), 2: pytest.approx(1 / 3), 3: 0.0}


def test_ece_by_hand_skips_unknown_entries_and_roots():
    h = Hierarchy.from_paths(["[C] > x"])
    x, root = h.index["[C] > x"], h.index["[C]"]
    probs = torch.zeros(4, 2)
    probs[:, x] = torch.tensor([0.9, 0.9, 0.2, 0.5])
    probs[:, root] = 0.1  # a root entry far off calibration: never counted
    y = torch.zeros(4, 2)
    y[0, x] = 1.0
    y[:, root] = 1.0
    m = torch.ones(4, 2)
    m[3, x] = 0.0  # unknown: left out
    # bins: 0.9 (two entries, accuracy 1/2) and 0.2 (one, accuracy 0): 2/3 * 0.4 + 1/3 * 0.2
    assert expected_calibration_error(probs, y, m, h) == pytest.approx(1 / 3)
    assert math.isnan(expected_calibration_error(probs, y, torch.zeros_like(m), h))


def slow_prf(sets, y, m, h):
    hit = n_p = n_t = 0
    roots = {h.index[r] for r in h.roots}
    for i in range(len(sets)):
        K = {j for j in range(len(h)) if m[i, j] != 0} - roots
        P = {j for j in range(len(h)) if sets[i, j]} & K
        T = {j for j in range(len(h)) if y[i, j] > 0.5} & K
        hit, n_p, n_t = hit + len(P & T), n_p + len(P), n_t + len(T)
    hp, hr = hit / n_p, hit / n_t
    return hp, hr, (2 * hp * hr / (hp + hr) if hp + hr else 0.0)


def random_split(h: Hierarchy, seed: int, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sample: one or two random nodes as labels, or none; encoded with masks."""
    rng = np.random.default_rng(seed)
    lists = [
        [h.nodes[int(j)] for j in rng.choice(len(h), size=rng.integers(0, 3), replace=False)]
        for _ in range(rows)
    ]
    return h.encode_many(lists)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(2, 12), dag=st.booleans())
def test_hprf_matches_a_slow_implementation_and_micro_prf(seed, k, dag):
    h = random_hierarchy(seed, k, dag)
    y, m = random_split(h, seed, 30)
    probs = constrained(h, 30, seed + 1).float()
    thr = torch.rand(len(h), generator=torch.Generator().manual_seed(seed))
    sets = coherent_sets(probs, thr, h)
    got = hierarchical_prf(sets, y, m, h)
    roots = [h.index[r] for r in h.roots]
    known_pred = sets.clone()
    known_pred[:, roots] = False
    if not ((known_pred & (m != 0)).any() and ((y > 0.5) & (m != 0))[:, 1:].any()):
        return  # a denominator is 0: NaN, checked by hand above
    hp, hr, hf = slow_prf(sets, y, m, h)
    assert (got["h_precision"], got["h_recall"], got["h_f1"]) == pytest.approx((hp, hr, hf))
    micro = evaluate(probs, y, m, h, thr)
    assert (micro["micro_precision"], micro["micro_recall"], micro["micro_f1"]) == pytest.approx(
        (hp, hr, hf)
    )


def test_reliability_bins_by_hand_and_their_ece():
    h = Hierarchy.from_paths(["[C] > x"])
    x = h.index["[C] > x"]
    probs = torch.zeros(4, 2)
    probs[:, x] = torch.tensor([0.9, 0.92, 0.2, 0.5])
    y = torch.zeros(4, 2)
    y[0, x] = 1.0
    m = torch.ones(4, 2)
    m[3, x] = 0.0
    bins = reliability_bins(probs, y, m, h)
    assert bins["count"] == [1, 2] and bins["accuracy"] == [0.0, 0.5]
    assert bins["confidence"] == pytest.approx([0.2, 0.91])
    rows = zip(bins["confidence"], bins["accuracy"], bins["count"], strict=True)
    from_bins = sum(n * abs(a - c) for c, a, n in rows) / 3  # (0.2 + 2 * 0.41) / 3
    assert from_bins == pytest.approx((0.2 + 0.82) / 3)
    assert expected_calibration_error(probs, y, m, h) == pytest.approx(from_bins)
