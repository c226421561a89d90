"""kNN scores of an embedding per head and depth, against a case worked by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from ssl_benthic.embed.knn import knn_table, read_index_labels

A1, A2, B1 = "[S] > A > A1", "[S] > A > A2", "[S] > B > B1"
BANK = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]])
BANK_LABELS = [{"s": [A1]}, {"s": [A2]}, {"s": [B1]}, {"s": [B1]}, {"o": ["[O] > X"]}][:4]
# queries, labels; similarities to the bank (unit vectors, so the dot product):
QUERY = np.array([[0.6, 0.8], [-0.6, -0.8], [1.0, 0.1], [0.6, 0.8]])
#   q0 (A1):     0.6, 0.96, 0.8, -0.6  -> k=2: b1 (A2, e^9.6), b2 (B1, e^8): A right, A2 wrong
#   q1 (B1):    -0.6, -0.96, -0.8, 0.6 -> b3 (B1, e^6), b0 (A1, e^-6): B right, B1 right
#   q2 (B1):     0.995, 0.856, 0.0995, -0.995 -> b0 (A1), b1 (A2): A wrong, A1 wrong
#   q3 ([S] > A, shallow): depth 1 only -> b1, b2: A right; left out at depth 2
QUERY_LABELS = [{"s": [A1]}, {"s": [B1]}, {"s": [B1]}, {"s": ["[S] > A"]}]


def test_knn_table_matches_the_hand_computed_votes() -> None:
    rows = knn_table(BANK, BANK_LABELS, QUERY, QUERY_LABELS, k=2, temperature=0.1)
    # depth 0 is the root alone (one class): not scored
    assert [(r["head"], r["depth"], r["classes"], r["bank"], r["query"]) for r in rows] == [
        ("s", 1, 2, 4, 4),
        ("s", 2, 3, 4, 3),
    ]
    assert rows[0]["top1"] == pytest.approx(3 / 4)
    assert rows[1]["top1"] == pytest.approx(1 / 3)


def test_the_temperature_weights_the_votes() -> None:
    """With k=3, q0's neighbours are b1 (A2, 0.96), b2 (B1, 0.8), b0 (A1, 0.6): at depth 2 each
    class has one vote, so the largest weight wins (A2) whatever t; at depth 1, A has two votes
    (e^(0.96/t) + e^(0.6/t)) against B's one (e^(0.8/t)): A wins for every t > 0."""
    for t in (0.01, 1.0, 100.0):
        rows = knn_table(BANK, BANK_LABELS, QUERY[:1], QUERY_LABELS[:1], k=3, temperature=t)
        assert [r["top1"] for r in rows] == [1.0, 0.0]
    assert math.exp(0.96) + math.exp(0.6) > math.exp(0.8)  # the depth-1 vote at t = 1


def test_a_query_class_the_bank_lacks_is_a_miss() -> None:
    rows = knn_table(BANK, BANK_LABELS, QUERY[:2], [{"s": ["[S] > C"]}, {"s": [B1]}], 2, 0.1)
    assert (rows[0]["classes"], rows[0]["query"], rows[0]["top1"]) == (3, 2, 0.5)


def test_index_labels_read_back(tmp_path: Path) -> None:
    (tmp_path / "index.csv").write_text(
        "key,image,row,column,labels.a,labels.b\nk0,i,,,x|y,\nk1,i,,,,z\n"
    )
    assert read_index_labels(tmp_path / "index.csv") == [{"a": ["x", "y"]}, {"b": ["z"]}]
    assert json.dumps(read_index_labels(tmp_path / "index.csv"))
