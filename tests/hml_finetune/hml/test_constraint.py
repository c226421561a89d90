"""MaxConstraint: exact against the dense O(B K^2) oracle on random DAGs, values and gradients."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hml_finetune.hml.constraint import MaxConstraint, dense_max_constraint
from hml_finetune.hml.hierarchy import Hierarchy


@st.composite
def random_dags(draw):
    """DAGs whose nodes get 1-3 parents among earlier nodes; names shuffled against that order."""
    K = draw(st.integers(2, 24))
    names = draw(st.permutations([f"n{i}" for i in range(K)]))
    edges = []
    for i in range(1, K):
        if draw(st.booleans()) and i > 1:  # sometimes a second root
            continue
        parents = draw(st.sets(st.integers(0, i - 1), min_size=1, max_size=min(3, i)))
        edges += [(names[p], names[i]) for p in sorted(parents)]
    edges = draw(st.permutations(edges))
    return Hierarchy(names, edges)


def tie_free(B: int, K: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(K, generator=g) for _ in range(B)]).double() / K + 0.01


@settings(max_examples=60, deadline=None)
@given(h=random_dags(), seed=st.integers(0, 2**16))
def test_matches_dense_oracle_values_and_gradients(h, seed):
    K = len(h)
    R = torch.from_numpy(h.descendant_matrix())
    p = tie_free(3, K, seed).requires_grad_()
    fast = MaxConstraint(h)(p)
    slow = dense_max_constraint(p, R)
    assert torch.equal(fast, slow)
    upstream = torch.randn(3, K, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    (g_fast,) = torch.autograd.grad(fast, p, upstream)
    (g_slow,) = torch.autograd.grad(slow, p, upstream)
    torch.testing.assert_close(g_fast, g_slow)


def test_known_values_on_a_dag_with_a_shortcut_edge():
    # a -> b -> c -> d and a -> d: d is 3 levels below a via c and also its child
    h = Hierarchy.from_edges([("a", "b"), ("b", "c"), ("c", "d"), ("a", "d"), ("e", "c")])
    p = torch.zeros(1, len(h), dtype=torch.float64)
    values = {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.9, "e": 0.05}
    for name, v in values.items():
        p[0, h.index[name]] = v
    out = MaxConstraint(h)(p)[0]
    expect = {"a": 0.9, "b": 0.9, "c": 0.9, "d": 0.9, "e": 0.9}
    p[0, h.index["d"]] = 0.0
    out2 = MaxConstraint(h)(p)[0]
    expect2 = {"a": 0.3, "b": 0.3, "c": 0.3, "d": 0.0, "e": 0.3}
    for name in h.nodes:
        assert out[h.index[name]].item() == expect[name]
        assert out2[h.index[name]].item() == expect2[name]


def test_any_leading_shape_and_parents_never_below_children():
    h = Hierarchy.from_edges([("r", "a"), ("r", "b"), ("a", "c"), ("b", "c"), ("c", "d")])
    p = torch.rand(2, 3, len(h), generator=torch.Generator().manual_seed(0))
    out = MaxConstraint(h)(p)
    assert out.shape == p.shape
    R = torch.from_numpy(h.descendant_matrix())
    torch.testing.assert_close(out.reshape(6, -1), dense_max_constraint(p.reshape(6, -1), R))
    for parent, kids in h.children.items():
        for kid in kids:
            assert (out[..., h.index[parent]] >= out[..., h.index[kid]]).all()


def test_single_node_and_forest_without_edges():
    h = Hierarchy(["x", "y"], [])
    p = torch.tensor([[0.3, 0.7]])
    assert torch.equal(MaxConstraint(h)(p), p)
    assert np.array_equal(h.descendant_matrix(), np.eye(2, dtype=bool))
