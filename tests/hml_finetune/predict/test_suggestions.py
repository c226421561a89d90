"""CoralNet suggestions rank codes by P(the point's label is the code's node): a hand-made export
whose ranking is known by hand, and stop probabilities recovering a known label distribution."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from hml_finetune.hml.hierarchy import Hierarchy
from hml_finetune.hml.schemes import load_scheme
from hml_finetune.predict.labels import HeadPrediction
from hml_finetune.predict.suggestions import label_probabilities, rank_codes, stop_probabilities

S, B = "[SUBSTRATE] > Substrate", "[BIOTA] > Biota"
MARGINALS = {  # exact binary fractions: every score below is exact
    "substrate": {
        "[SUBSTRATE]": 1.0,
        S: 0.875,
        f"{S} > Unconsolidated": 0.75,
        f"{S} > Unconsolidated > Sand": 0.5,
        f"{S} > Unconsolidated > Mud": 0.125,
        f"{S} > Consolidated": 0.125,
    },
    "biota": {"[BIOTA]": 0.75, B: 0.375, f"{B} > Sponges": 0.25},  # the root is never trained
}
MAP = {
    "SUBST": {"head": "substrate", "path": S},
    "UNC": {"head": "substrate", "path": f"{S} > Unconsolidated"},
    "SAND": {"head": "substrate", "path": f"{S} > Unconsolidated > Sand"},
    "MUD": {"head": "substrate", "path": f"{S} > Unconsolidated > Mud"},
    "CONS": {"head": "substrate", "path": f"{S} > Consolidated"},
    "BIO": {"head": "biota", "path": B},
    "SPON": {"head": "biota", "path": f"{B} > Sponges"},
    "GONE": {"head": "relief", "path": "[RELIEF] > Flat"},  # a head the model lacks
}


def _inputs():
    hierarchies = {
        h: Hierarchy.from_paths([n for n in m if " > " in n]) for h, m in MARGINALS.items()
    }
    schemes = {h: replace(load_scheme(h, "data"), bracketed=True) for h in MARGINALS}
    heads = {
        h: HeadPrediction(label="", probability=0.0, depth=0, predicted=[], probabilities=dict(m))
        for h, m in MARGINALS.items()
    }
    return heads, hierarchies, schemes


def test_hand_made_export_ranks_codes_by_the_probability_of_being_the_label():
    """Stops: SUBST 0.875-0.875=0, UNC 0.75-0.625=0.125, SAND 0.5, MUD 0.125, CONS 0.125, BIO
    0.375-0.25=0.125, SPON 0.25; total 1.25, so each is divided by 1.25. The marginal rule would
    put SUBST (0.875) first for every point."""
    heads, hierarchies, schemes = _inputs()
    ranked = rank_codes(heads, MAP, hierarchies, schemes)
    assert ranked == [
        ("SAND", 0.4),
        ("SPON", 0.2),
        ("MUD", 0.1),  # ties at 0.1: deeper first (depth 3), then by code at depth 2
        ("CONS", 0.1),
        ("UNC", 0.1),
        ("BIO", 0.1),
        ("SUBST", 0.0),
    ]
    assert sum(p for _, p in ranked) == pytest.approx(1.0)


def test_an_unsure_model_is_not_inflated():
    """Scores are divided by their total only when it exceeds 1."""
    heads, hierarchies, schemes = _inputs()
    for pred in heads.values():
        pred.probabilities = {n: p / 4 for n, p in pred.probabilities.items()}
    scores = label_probabilities(heads, hierarchies, schemes)
    assert scores["substrate"][f"{S} > Unconsolidated > Sand"] == 0.125
    assert scores["biota"][B] == pytest.approx(0.125 / 4)


def _random_tree(rng: np.random.Generator, n: int) -> Hierarchy:
    paths = ["[H] > a"]
    for i in range(1, n):
        paths.append(f"{paths[int(rng.integers(len(paths)))]} > n{i}")
    return Hierarchy.from_paths(paths)


@pytest.mark.parametrize("seed", range(5))
def test_stop_probabilities_recover_the_label_distribution(seed):
    """Draw P(label = v) over the nodes of a random tree, form the marginals p_v = sum over the
    subtree of v, and get the distribution back."""
    rng = np.random.default_rng(seed)
    h = _random_tree(rng, 12)
    q = dict(zip(h.nodes, rng.dirichlet(np.ones(len(h))), strict=True))
    R = h.descendant_matrix()
    marginals = {v: sum(q[u] for u in h.nodes if R[h.index[v], h.index[u]]) for v in h.nodes}
    stops = stop_probabilities(marginals, h)
    for v in h.nodes[1:]:
        assert stops[v] == pytest.approx(q[v], abs=1e-12)
    assert "[H]" not in stops
