"""The online kNN monitor: labels cut to a depth, the weighted vote, and `knn_top1` in the logs."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from fixtures.pretrain import make_shards, tiny_config

from ssl_benthic.pretrain.knn_monitor import knn_top1, label_at_depth
from ssl_benthic.pretrain.run import pretrain

SAND = "[SUBSTRATE] > Substrate > Unconsolidated (soft) > Sand / mud (<2mm)"
ROCK = "[SUBSTRATE] > Substrate > Consolidated (hard) > Rock"


def test_label_at_depth_cuts_skips_and_rejects_ambiguity() -> None:
    meta = {"labels": {"substrate": [SAND]}}
    assert label_at_depth(meta, "substrate", 2) == "[SUBSTRATE] > Substrate > Unconsolidated (soft)"
    assert label_at_depth(meta, "substrate", 3) == SAND
    assert label_at_depth(meta, "substrate", 4) is None  # the path stops above that depth
    assert label_at_depth(meta, "biota", 2) is None  # head not annotated
    assert label_at_depth({}, "substrate", 2) is None  # unlabelled sample
    both = {"labels": {"substrate": [SAND, ROCK]}}
    assert label_at_depth(both, "substrate", 1) == "[SUBSTRATE] > Substrate"
    assert label_at_depth(both, "substrate", 2) is None  # two different classes at depth 2


def test_knn_top1_against_a_hand_worked_case() -> None:
    # bank: three points of class 0 near e0, one of class 1 at e1
    bank = torch.tensor([[1.0, 0.0], [0.96, 0.28], [0.8, 0.6], [0.0, 1.0]])
    bank_labels = torch.tensor([0, 0, 0, 1])
    # query 0 near e0 -> class 0; query 1 at e1: with k=1 its neighbour is class 1
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert knn_top1(bank, bank_labels, query, torch.tensor([0, 1]), 2, k=1, t=0.1) == 1.0
    # with k=4 query 1 sees weights exp(1/t) for class 1 against exp(0/t)+exp(.28/t)+exp(.6/t):
    # at t=0.1 class 1 wins (e^10 > e^6 + e^2.8 + 1); at t=1 class 0 wins (e^1 < 1 + e^.28 + e^.6)
    assert knn_top1(bank, bank_labels, query, torch.tensor([0, 1]), 2, k=4, t=0.1) == 1.0
    assert knn_top1(bank, bank_labels, query, torch.tensor([0, 1]), 2, k=4, t=1.0) == 0.5


def test_monitor_logs_knn_top1(tmp_path: Path) -> None:
    unlabelled = make_shards(tmp_path / "unlabelled", n=16)
    train = make_shards(tmp_path / "train", n=16, seed=1, labelled=True)
    val = make_shards(tmp_path / "val", n=8, seed=2, labelled=True)
    knn = {"shards": str(val), "bank_shards": str(train), "head": "substrate", "depth": 2, "k": 3}
    cfg = tiny_config("byol", unlabelled, tmp_path / "run", monitor={"knn": knn})
    pretrain(cfg)
    rows = list(csv.DictReader(next((tmp_path / "run").rglob("metrics.csv")).open()))
    values = [float(r["knn_top1"]) for r in rows if r.get("knn_top1")]
    assert len(values) == 2  # once per epoch
    # the two classes differ by a saturated colour channel: even these features separate them
    assert all(v >= 0.75 for v in values), values
