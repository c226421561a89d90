"""Nothing silent, nothing lost: splits and heads without labels fail or are reported, never
scored as 0.000 or tuned on nothing; labels never seen in training are named and kept out of rare
recall."""

from __future__ import annotations

import io
import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.finetune import make_cfg
from PIL import Image

import hml_finetune.finetune.evaluate as evaluate_mod
from hml_finetune.cli import main
from hml_finetune.compare.report import Cell, write_report
from hml_finetune.finetune.data import prepare_data
from hml_finetune.finetune.labels import LabelledSplit, build_hierarchies, encode_split
from hml_finetune.finetune.results import head_metrics
from hml_finetune.finetune.scoring import choose_threshold
from hml_finetune.finetune.train import run_finetune
from hml_finetune.hml.thresholds import MIN_HEAD_POSITIVES, tune_global_threshold
from ssl_benthic.core.errors import LabelError
from ssl_benthic.data.shards.format import ShardSample
from ssl_benthic.data.shards.writer import write_shards

BIOTA = "[BIOTA] > Biota"
SPONGE = "[BIOTA] > Biota > Sponges"
CNIDARIA = "[BIOTA] > Biota > Cnidaria"
ASCIDIANS = "[BIOTA] > Biota > Ascidians"
BRYOZOA = "[BIOTA] > Biota > Bryozoa"
SAND = "[SUBSTRATE] > Substrate > Unconsolidated (soft) > Sand / mud (<2mm)"
BOULDERS = "[SUBSTRATE] > Substrate > Consolidated (hard) > Boulders"
FLAT = "[RELIEF] > Flat"
LOW = "[RELIEF] > Low / moderate > Low (<1m)"
# seven biota groups never seen in training (with their parent "Biota", which is seen)
UNSEEN = [
    ASCIDIANS,
    "[BIOTA] > Biota > Brachiopods",
    "[BIOTA] > Biota > Crustacea",
    "[BIOTA] > Biota > Echinoderms",
    "[BIOTA] > Biota > Fishes",
    "[BIOTA] > Biota > Molluscs",
    "[BIOTA] > Biota > Worms",
]

Labels = dict[str, list[str]] | None  # None: the sample's JSON has no `labels` at all


def _jpeg(rng: np.random.Generator) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, size=(32, 32, 3)).astype(np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def write_splits(root: Path, splits: dict[str, list[Labels]]) -> Path:
    """One shard folder per split, a random 32 px image per sample with the given labels."""
    for s, (split, labels) in enumerate(splits.items()):
        rng = np.random.default_rng(s)
        samples = [
            ShardSample(
                f"{split}-{i:04d}", _jpeg(rng), "jpg", {} if lab is None else {"labels": lab}
            )
            for i, lab in enumerate(labels)
        ]
        write_shards(samples, root / split, name=split)
    return root


def labels(n: int, *heads: str) -> list[Labels]:
    """n samples labelled for the given heads (biota, substrate, relief), alternating classes."""
    pick = {"biota": (SPONGE, CNIDARIA), "substrate": (SAND, BOULDERS), "relief": (FLAT, LOW)}
    return [{h: [pick[h][i % 2]] for h in heads} for i in range(n)]


def messages(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record]


# ----------------------------------------------------------------------------- 1: unlabelled train
def test_training_split_without_labels_is_a_label_error(tmp_path):
    unlabelled: list[Labels] = [None, {}, {"biota": []}, {"substrate": [], "relief": []}] * 4
    root = write_splits(
        tmp_path / "shards",
        {"train": unlabelled, "val": labels(8, "biota"), "test": labels(8, "biota")},
    )
    out = tmp_path / "run"
    with pytest.raises(
        LabelError, match=rf"data\.train {re.escape(str(root / 'train'))}: none of its 16 samples"
    ):
        run_finetune(make_cfg(root, out))
    assert not (out / "model.ckpt").exists() and not (out / "metrics.json").exists()


# ----------------------------------------------------------------------------- 2: heads
@pytest.fixture(scope="module")
def relief_not_in_train(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """relief is labelled in val and test only."""
    root = tmp_path_factory.mktemp("relief_not_in_train")
    splits = {"train": labels(16, "biota", "substrate")}
    splits |= {s: labels(8, "biota", "substrate", "relief") for s in ("val", "test")}
    return write_splits(root, splits)


def test_head_asked_for_without_training_labels_is_a_label_error(relief_not_in_train, tmp_path):
    root = relief_not_in_train
    cfg = make_cfg(root, tmp_path, "heads.names=[biota,relief]")
    with pytest.raises(
        LabelError,
        match=rf"head 'relief' \(heads\.names\) has no labels in .*{re.escape(str(root / 'train'))}",
    ):
        prepare_data(cfg)


def test_head_chosen_from_data_without_training_labels_is_left_out(relief_not_in_train, tmp_path):
    root = relief_not_in_train
    with pytest.warns(UserWarning, match=r"head 'relief' has labels in val/test only") as record:
        prepared = prepare_data(make_cfg(root, tmp_path))
    hierarchies, val = prepared.hierarchies, prepared.val
    assert list(hierarchies) == ["biota", "substrate"]
    assert list(prepared.data.targets) == ["biota", "substrate"]
    assert str(root / "train") in next(m for m in messages(record) if "'relief'" in m)
    assert set(encode_split(val, hierarchies)) == {"biota", "substrate"}  # val still encodes


@pytest.mark.parametrize("missing", ["colour", "habitat"])
def test_flat_or_single_head_without_training_labels_is_a_label_error(missing, tmp_path):
    extra = {"colour": ["red", "blue"], "habitat": ["reef", "kelp"]}

    def split(n: int, heads: tuple[str, ...]) -> list[Labels]:
        return [{"biota": [SPONGE], **{h: [extra[h][i % 2]] for h in heads}} for i in range(n)]

    present = tuple(h for h in extra if h != missing)
    root = write_splits(
        tmp_path / "shards",
        {
            "train": split(16, present),
            "val": split(8, tuple(extra)),
            "test": split(8, tuple(extra)),
        },
    )
    cfg = make_cfg(root, tmp_path, "heads.flat=[colour]", "heads.single=[habitat]")
    key = "flat" if missing == "colour" else "single"
    with pytest.raises(
        LabelError,
        match=rf"head '{missing}' \(heads\.{key}\) has no labels in .*{re.escape(str(root / 'train'))}",
    ):
        prepare_data(cfg)


# ----------------------------------------------------------------------------- 3: unseen labels
def test_labels_only_in_val_or_test_are_named_with_a_count(tmp_path):
    train = labels(16, "biota", "substrate")
    val = labels(6, "biota", "substrate") + [{"biota": [BRYOZOA]}]
    test = labels(6, "biota", "substrate") + [{"biota": [p]} for p in UNSEEN]
    root = write_splits(tmp_path / "shards", {"train": train, "val": val, "test": test})
    with pytest.warns(UserWarning) as record:
        prepare_data(make_cfg(root, tmp_path))
    text = messages(record)
    val_msg = [m for m in text if "val split" in m]
    assert val_msg == [
        f"head 'biota': 1 label in the val split {root / 'val'} never seen in training: "
        f"'{BRYOZOA}'; scored, but not counted in rare_recall"
    ]
    test_msg = [m for m in text if "test split" in m]
    named = ", ".join(repr(p) for p in sorted(UNSEEN)[:5])
    assert test_msg == [
        f"head 'biota': 7 labels in the test split {root / 'test'} never seen in training: "
        f"{named} (+2 more); scored, but not counted in rare_recall"
    ]


def test_rare_recall_leaves_out_nodes_never_positive_in_training():
    h = build_hierarchies([LabelledSplit(["a"], [{"biota": [SPONGE, CNIDARIA, ASCIDIANS]}])])
    hier = h["biota"]
    split = LabelledSplit(
        ["t1", "t2", "t3", "t4"],
        [{"biota": [SPONGE]}, {"biota": [CNIDARIA]}, {"biota": [ASCIDIANS]}, {"biota": [SPONGE]}],
    )
    y, m = encode_split(split, h)["biota"]
    col = {n: hier.index[n] for n in hier.nodes}
    probs = torch.full_like(y, 0.1)
    probs[:, col[BIOTA]] = 0.9
    probs[[0, 3], col[SPONGE]] = 0.9
    probs[1, col[CNIDARIA]] = 0.9  # Cnidaria found (recall 1), Ascidians missed (recall 0)
    freq = torch.zeros(len(hier), dtype=torch.float64)
    freq[col[BIOTA]], freq[col[SPONGE]], freq[col[CNIDARIA]] = 1.0, 0.9, 0.03  # Ascidians: 0
    out = head_metrics(probs, y, m, hier, 0.5, freq)
    assert out["rare_recall"] == 1.0  # Cnidaria only: 0 < 0.03 < 0.05; Ascidians never trained
    assert out["n_rare_nodes"] == 1 and out["n_unseen_nodes"] == 1
    assert out["status"] == "scored"


# ----------------------------------------------------------------------------- 4: thresholds
def _relief_val(n_labelled: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, object]:
    """Validation predictions of a relief head: n_labelled samples labelled Flat, 4 unlabelled."""
    split = LabelledSplit(
        [f"v{i}" for i in range(n_labelled + 4)],
        [{"relief": [FLAT]}] * n_labelled + [{}] * 4,
    )
    h = build_hierarchies([LabelledSplit(["a", "b"], [{"relief": [FLAT]}, {"relief": [LOW]}])])
    y, m = encode_split(split, h)["relief"]
    probs = torch.linspace(0.02, 0.98, y.numel()).reshape(y.shape)
    return probs, y, m, h["relief"]


def test_head_with_too_few_validation_positives_gets_the_default_threshold():
    assert MIN_HEAD_POSITIVES == 5
    probs, y, m, h = _relief_val(2)  # 2 positives at Flat (the root's 2 are not evaluated)
    for rule in ("per-node", "global"):
        with pytest.warns(UserWarning, match=r"head 'relief': 2 validation positives < 5"):
            value, used = choose_threshold(rule, probs, y, m, h, "relief")
        assert value == 0.5 and used == "default 0.5: 2 validation positives < 5"
    probs, y, m, h = _relief_val(5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value, used = choose_threshold("global", probs, y, m, h, "relief")
        assert used == "global" and value == tune_global_threshold(probs[:, 1:], y[:, 1:], m[:, 1:])
        assert value != 0.5
        per_node, used = choose_threshold("per-node", probs, y, m, h, "relief")
        assert used == "per-node" and per_node.shape == (len(h),)
        assert choose_threshold("0.3", probs, y, m, h, "relief") == (0.3, "fixed 0.3")
    probs, y, m, h = _relief_val(0)
    assert choose_threshold("0.3", probs, y, m, h, "relief") == (0.3, "fixed 0.3")  # not tuned


# ----------------------------------------------------------------------------- 4-6: end to end
@pytest.fixture(scope="module")
def gaps(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list[str]]:
    """A run whose val split has no relief labels and whose test split has no substrate labels."""
    root = write_splits(
        tmp_path_factory.mktemp("gaps"),
        {
            "train": labels(32, "biota", "substrate", "relief"),
            "val": labels(12, "biota", "substrate"),
            "test": labels(12, "biota", "relief"),
            "unlabelled": [None, {}, {"biota": []}] * 3,
            "bedforms_only": [{"bedforms": ["[BEDFORMS] > None"]}] * 4,
        },
    )
    out = root / "run"
    cfg = make_cfg(root, out, "threshold=per-node", "trainer.max_epochs=2")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = run_finetune(cfg)
    return root, result, messages(record)


def test_validation_without_head_labels_uses_the_default_threshold(gaps):
    root, result, text = gaps
    relief, biota = result["heads"]["relief"], result["heads"]["biota"]
    assert relief["threshold_value"] == 0.5
    assert relief["threshold_rule"] == "default 0.5: 0 validation positives < 5"
    assert any("head 'relief': 0 validation positives < 5" in m for m in text)
    assert biota["threshold_rule"] == "per-node" and len(biota["threshold_value"]) == 4
    md = (root / "run" / "metrics.md").read_text()
    assert "default 0.5: 0 validation positives < 5" in md
    saved = json.loads((root / "run" / "metrics.json").read_text())
    assert saved["heads"]["relief"]["threshold_rule"] == relief["threshold_rule"]


def test_head_without_test_labels_is_not_scored_as_zero(gaps, tmp_path):
    root, result, _ = gaps
    sub = result["heads"]["substrate"]
    assert sub["status"] == "no test labels" and result["heads"]["biota"]["status"] == "scored"
    for key in ("au_prc", "macro_precision", "macro_recall", "macro_f1", "micro_f1", "rare_recall"):
        assert math.isnan(sub[key]), key
    saved = json.loads((root / "run" / "metrics.json").read_text())
    assert saved["heads"]["substrate"]["macro_f1"] is None
    assert saved["heads"]["substrate"]["status"] == "no test labels"
    row = next(
        x for x in (root / "run" / "metrics.md").read_text().splitlines() if "| substrate |" in x
    )
    assert "no test labels" in row and "0.000" not in row

    cell = Cell("random", "linear", "weighted", 0, root / "run", "done", result=saved)
    report = write_report(tmp_path / "report", [cell], plots=False).read_text()
    table = report.split("### substrate")[1].split("###")[0]
    line = next(x for x in table.splitlines() if x.startswith("| random |"))
    assert line.count("no test labels") == 4 and "0.000" not in line
    rows = json.loads((tmp_path / "report" / "results.json").read_text())
    sub_row = next(r for r in rows if r["head"] == "substrate")
    assert sub_row["head_status"] == "no test labels" and sub_row["macro_f1"] is None
    assert next(r for r in rows if r["head"] == "biota")["head_status"] == "scored"


def test_evaluate_on_an_unlabelled_split_is_a_label_error(gaps, monkeypatch, capsys):
    root, _, _ = gaps
    ckpt = root / "run" / "model.ckpt"

    def no_features(*args, **kwargs):
        raise AssertionError("features extracted before the labels were checked")

    monkeypatch.setattr(evaluate_mod, "features", no_features)
    split = root / "unlabelled"
    with pytest.raises(
        LabelError, match=rf"--shards {re.escape(str(split))}: none of its 9 samples"
    ):
        evaluate_mod.evaluate_shards(ckpt, split, root / "eval")
    other = root / "bedforms_only"
    with pytest.raises(
        LabelError, match=rf"--shards {re.escape(str(other))}: no labels of the model's heads"
    ):
        evaluate_mod.evaluate_shards(ckpt, other, root / "eval")
    assert main(["evaluate", "--checkpoint", str(ckpt), "--shards", str(split)]) == 2
    assert str(split) in capsys.readouterr().err
    assert not (root / "eval").exists()
