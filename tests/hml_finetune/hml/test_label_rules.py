"""Coherent sets and label rules: closed under ancestors on random DAGs for every threshold rule;
expected-hops against a brute-force expected distance; the other rules on a hand-made tree."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hml_finetune.hml.constraint import dense_max_constraint
from hml_finetune.hml.hierarchy import Hierarchy
from hml_finetune.hml.label_rules import (
    choose_labels,
    coherent_sets,
    effective_rule,
    expected_hops_labels,
    min_probability_labels,
    monotone_thresholds,
    threshold_labels,
)
from hml_finetune.hml.thresholds import tune_per_node_thresholds


def random_hierarchy(seed: int, n: int, dag: bool) -> Hierarchy:
    """Root 'r' and nodes n1..n_n, each with one parent (a tree) or one or two (a DAG) drawn
    among the nodes before it."""
    rng = np.random.default_rng(seed)
    names = ["r"] + [f"n{i}" for i in range(1, n + 1)]
    edges = []
    for i in range(1, n + 1):
        k = 1 + int(dag and i > 1 and rng.random() < 0.5)
        for p in rng.choice(i, size=k, replace=False):
            edges.append((names[int(p)], names[i]))
    return Hierarchy(names, edges)


def constrained(h: Hierarchy, rows: int, seed: int) -> torch.Tensor:
    p = torch.rand(rows, len(h), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return dense_max_constraint(p, h.descendant_matrix())


def closed_under_ancestors(sets: torch.Tensor, h: Hierarchy) -> bool:
    for row in sets.tolist():
        chosen = {h.nodes[j] for j, c in enumerate(row) if c}
        for node in chosen:
            if not (h.ancestors(node) - set(h.roots)) <= chosen:
                return False
    return True


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 12),
    dag=st.booleans(),
    rule=st.sampled_from(["number", "per-node", "tuned", "monotone-tuned"]),
    constrain=st.booleans(),
)
def test_every_predicted_set_is_closed_under_ancestors(seed, n, dag, rule, constrain):
    h = random_hierarchy(seed, n, dag)
    gen = torch.Generator().manual_seed(seed + 1)
    probs = constrained(h, 20, seed) if constrain else torch.rand(20, len(h), generator=gen)
    if rule == "number":
        thr: float | torch.Tensor = float(torch.rand(1, generator=gen))
    elif rule == "per-node":
        thr = torch.rand(len(h), generator=gen, dtype=probs.dtype)
    else:
        y = (torch.rand(20, len(h), generator=gen) < 0.5).to(probs.dtype)
        thr = tune_per_node_thresholds(probs, y, torch.ones_like(y), min_positives=1)
        if rule == "monotone-tuned":
            thr = monotone_thresholds(thr, h)
    assert closed_under_ancestors(coherent_sets(probs, thr, h), h)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 12), dag=st.booleans())
def test_monotone_thresholds_make_masking_a_no_op_on_constrained_probs(seed, n, dag):
    h = random_hierarchy(seed, n, dag)
    probs = constrained(h, 20, seed)
    t = monotone_thresholds(torch.rand(len(h), dtype=probs.dtype), h)
    for p, c in zip(*h.edge_index(), strict=True):
        if h.nodes[p] not in h.roots:
            assert t[c] >= t[p]
    plain = probs >= t
    plain[:, [h.index[r] for r in h.roots]] = False
    assert torch.equal(coherent_sets(probs, t, h), plain)


def test_monotone_thresholds_by_hand():
    h = Hierarchy.from_paths(["a", "a > b", "a > b > c", "a > d"])
    order = {n: i for i, n in enumerate(h.nodes)}
    given_t = torch.zeros(len(h))
    given_t[order["a"]], given_t[order["a > b"]] = 0.9, 0.6
    given_t[order["a > b > c"]], given_t[order["a > d"]] = 0.3, 0.2
    out = monotone_thresholds(given_t, h)
    # the root's 0.9 is not passed on; c takes b's 0.6
    assert out[order["a > b > c"]] == pytest.approx(0.6)
    assert out[order["a > d"]] == pytest.approx(0.2)
    assert out[order["a"]] == pytest.approx(0.9)


def hops(h: Hierarchy, a: str, b: str) -> int:
    """Edges from a to b through their lowest common ancestor (a tree)."""
    up_a = [a, *_chain(h, a)]
    up_b = [b, *_chain(h, b)]
    common = next(x for x in up_a if x in up_b)
    return up_a.index(common) + up_b.index(common)


def _chain(h: Hierarchy, node: str) -> list[str]:
    out = []
    while h.parents[node]:
        node = h.parents[node][0]
        out.append(node)
    return out


def marginals(h: Hierarchy, q: np.ndarray) -> torch.Tensor:
    """p_u = P(u is Y or an ancestor of Y) for a distribution q over the nodes."""
    R = h.descendant_matrix()
    return torch.from_numpy(R.astype(float) @ q)


def brute_expected(h: Hierarchy, q: np.ndarray) -> np.ndarray:
    return np.array([sum(q[j] * hops(h, v, y) for j, y in enumerate(h.nodes)) for v in h.nodes])


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 12), sparse=st.booleans())
def test_expected_hops_minimises_the_brute_force_expected_distance(seed, n, sparse):
    h = random_hierarchy(seed, n, dag=False)
    rng = np.random.default_rng(seed)
    q = rng.dirichlet(np.full(len(h), 0.3 if sparse else 1.0))
    E = brute_expected(h, q)
    label = int(expected_hops_labels(marginals(h, q)[None], h)[0])
    assert E[label] == pytest.approx(E.min(), abs=1e-9)
    best = [j for j in range(len(h)) if E[j] <= E.min() + 1e-9]
    assert h.depth_array[label] == min(h.depth_array[j] for j in best)  # ties: shallower


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 10))
def test_expected_hops_on_a_sampled_truth(seed, n):
    """Truths drawn at random: the label minimises the mean hop distance to the drawn truths."""
    h = random_hierarchy(seed, n, dag=False)
    rng = np.random.default_rng(seed)
    truths = rng.choice(len(h), size=50, p=rng.dirichlet(np.ones(len(h))))
    q = np.bincount(truths, minlength=len(h)) / len(truths)
    label = int(expected_hops_labels(marginals(h, q)[None], h)[0])
    mean = [np.mean([hops(h, v, h.nodes[t]) for t in truths]) for v in h.nodes]
    assert mean[label] == pytest.approx(min(mean), abs=1e-9)


TREE = Hierarchy.from_paths(["[B] > a", "[B] > a > x", "[B] > a > y", "[B] > b"])


def probs_of(values: dict[str, float]) -> torch.Tensor:
    p = torch.zeros(1, len(TREE))
    for name, v in values.items():
        p[0, TREE.index[name]] = v
    return p


def name(idx: torch.Tensor) -> str:
    return TREE.nodes[int(idx[0])]


def test_the_three_rules_by_hand():
    p = probs_of({"[B]": 1.0, "[B] > a": 0.8, "[B] > a > x": 0.45, "[B] > a > y": 0.3})
    p[0, TREE.index["[B] > b"]] = 0.2
    # S(a) = 1 - 1.6 = -0.6; S(x) = -0.6 + 0.1 = -0.5; S(b) = 0.6: label a
    assert name(expected_hops_labels(p, TREE)) == "[B] > a"
    sets = coherent_sets(p, 0.4, TREE)
    assert name(threshold_labels(p, sets, TREE)) == "[B] > a > x"
    assert name(min_probability_labels(p, TREE, 0.5)) == "[B] > a"
    assert name(min_probability_labels(p, TREE, 0.9)) == "[B]"
    nothing = probs_of({"[B]": 1.0, "[B] > a": 0.4, "[B] > b": 0.3})
    assert name(expected_hops_labels(nothing, TREE)) == "[B]"  # nothing likely: the root
    tie = probs_of({"[B]": 1.0, "[B] > a": 0.5, "[B] > a > x": 0.5})
    assert name(expected_hops_labels(tie, TREE)) == "[B]"  # S = 0 at root, a and x: shallowest


def test_dag_falls_back_to_threshold_with_a_warning():
    dag = Hierarchy(["r", "a", "b", "c"], [("r", "a"), ("r", "b"), ("a", "c"), ("b", "c")])
    with pytest.warns(UserWarning, match="DAG"):
        assert effective_rule("expected-hops", dag, "x") == "threshold"
    assert effective_rule("threshold", dag) == "threshold"
    with pytest.raises(ValueError, match="label rule"):
        effective_rule("deepest", TREE)
    p = torch.tensor([[1.0, 0.9, 0.2, 0.2]])
    labels, sets = choose_labels(p, 0.5, dag, "threshold")
    assert sets.tolist() == [[False, True, False, False]] and labels.tolist() == [1]
