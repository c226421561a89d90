"""Metrics against sklearn on random data; roots and masked entries excluded; depth scores by hand."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, precision_recall_fscore_support

from hml_finetune.hml.constraint import MaxConstraint
from hml_finetune.hml.hierarchy import Hierarchy
from hml_finetune.hml.metrics import au_prc, evaluate

# root -> a, b; a -> c, d; b -> e; c -> f   (depths 0, 1, 1, 2, 2, 2, 3)
TREE = Hierarchy.from_edges(
    [("root", "a"), ("root", "b"), ("a", "c"), ("a", "d"), ("b", "e"), ("c", "f")]
)
LEAVES = ["f", "d", "e", "c", "a", "b"]


def random_batch(seed: int, B: int = 40):
    rng = np.random.default_rng(seed)
    labels = [[str(rng.choice(LEAVES))] for _ in range(B)]
    labels[0] = []  # one sample with no annotation
    y, m = TREE.encode_many(labels)
    p = MaxConstraint(TREE)(torch.from_numpy(rng.random((B, len(TREE)))))
    return p, y.double(), m.double()


def test_au_prc_matches_sklearn_on_known_entries():
    p, y, m = random_batch(0)
    cols = torch.arange(1, len(TREE))
    known = m[:, cols].numpy() > 0
    expect = average_precision_score(y[:, cols].numpy()[known], p[:, cols].numpy()[known])
    assert au_prc(p, y, m, cols) == pytest.approx(expect, abs=1e-6)
    assert evaluate(p, y, m, TREE)["au_prc"] == pytest.approx(expect, abs=1e-6)


def test_nodewise_and_micro_scores_match_sklearn():
    p, y, m = random_batch(1)
    out = evaluate(p, y, m, TREE, threshold=0.6)
    P, R, F, has = [], [], [], []
    t_all, p_all = [], []
    for j in range(1, len(TREE)):  # root excluded
        rows = m[:, j].numpy() > 0
        truth = y[rows, j].numpy().astype(int)
        pred = (p[rows, j].numpy() >= 0.6).astype(int)
        pj, rj, fj, _ = precision_recall_fscore_support(
            truth, pred, average="binary", zero_division=0
        )
        P.append(pj), R.append(rj), F.append(fj), has.append(truth.sum() > 0)
        t_all.append(truth), p_all.append(pred)
    has = np.array(has)
    assert out["macro_precision"] == pytest.approx(np.mean(P))
    assert out["macro_recall"] == pytest.approx(np.mean(R))
    assert out["macro_f1"] == pytest.approx(np.mean(F))
    assert out["macro_recall_pos"] == pytest.approx(np.mean(np.array(R)[has]))
    assert out["macro_f1_pos"] == pytest.approx(np.mean(np.array(F)[has]))
    mp, mr, mf, _ = precision_recall_fscore_support(
        np.concatenate(t_all), np.concatenate(p_all), average="binary", zero_division=0
    )
    assert (out["micro_precision"], out["micro_recall"], out["micro_f1"]) == pytest.approx(
        (mp, mr, mf)
    )
    assert out["n_nodes"] == 6


def test_roots_and_masked_entries_are_not_evaluated():
    p, y, m = random_batch(2)
    base = evaluate(p, y, m, TREE)
    p2, y2 = p.clone(), y.clone()
    p2[:, 0] = 1 - p2[:, 0]  # the root column
    y2[:, 0] = 1 - y2[:, 0]
    unknown = m == 0
    p2[unknown] = torch.rand(int(unknown.sum()), dtype=torch.float64)
    y2[unknown] = 1.0
    assert evaluate(p2, y2, m, TREE) == base
    assert unknown[:, 1:].any()  # the check is not vacuous
    fewer = evaluate(p, y, m, TREE, exclude_nodes=["a", "b"])
    assert fewer["n_nodes"] == 4


def test_nodes_without_positives_score_zero_in_all_nodes_macro():
    y, m = TREE.encode_many([["d"], ["d"], ["e"]])
    p = y.clone().double()  # perfect predictions; c and f never positive
    out = evaluate(p, y.double(), m.double(), TREE)
    assert out["macro_f1_pos"] == 1.0
    assert out["macro_f1"] == pytest.approx(4 / 6)  # a, b, d, e score 1; c, f score 0
    assert out["au_prc"] == 1.0


def test_per_depth_and_prediction_depth_by_hand():
    y, m = TREE.encode_many([["f"], ["d"]])
    i = TREE.index
    p = torch.zeros(2, len(TREE), dtype=torch.float64)
    # sample 0 (true depth 3): predicts root, a, c only -> deepest predicted depth 2
    for n in ("root", "a", "c"):
        p[0, i[n]] = 0.9
    # sample 1 (true depth 2): predicts root, a, d, and b wrongly -> depth 2
    for n in ("root", "a", "d", "b"):
        p[1, i[n]] = 0.9
    out = evaluate(p, y.double(), m.double(), TREE)
    assert out["true_depth"] == 2.5 and out["pred_depth"] == 2.0 and out["depth_gap"] == -0.5
    d1, d2, d3 = out["per_depth"][1], out["per_depth"][2], out["per_depth"][3]
    assert d1["recall_micro"] == 1.0 and d1["f1_micro"] == pytest.approx(2 * 2 / (2 * 2 + 1))
    assert d2["recall_micro"] == 1.0 and d2["n_nodes"] == 3 and d2["n_nodes_with_positives"] == 2
    assert d1["precision_micro"] == pytest.approx(2 / 3)  # a right twice, b wrong once
    assert d2["precision_micro"] == 1.0  # c and d, both right
    assert d3["recall_micro"] == 0.0 and d3["recall_macro"] == 0.0
    assert math.isnan(d3["precision_micro"])  # nothing predicted at depth 3
    # a depth without known positives has no recall (NaN), not 0
    y0, m0 = TREE.encode_many([["a"], ["a"]])
    none_deep = evaluate(p, y0.double(), m0.double(), TREE)["per_depth"][3]
    assert none_deep["n_nodes_with_positives"] == 0 and math.isnan(none_deep["recall_micro"])
    # a per-node threshold tensor: raise f's threshold above everything, lower nothing else
    thr = torch.full((len(TREE),), 0.5, dtype=torch.float64)
    p[0, i["f"]] = 0.7
    assert evaluate(p, y.double(), m.double(), TREE, thr)["per_depth"][3]["recall_micro"] == 1.0
    thr[i["f"]] = 0.8
    assert evaluate(p, y.double(), m.double(), TREE, thr)["per_depth"][3]["recall_micro"] == 0.0
