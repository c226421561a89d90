"""The HMC protocol (hml_finetune.hmc.run): seeds, files, splits, masks, losses, short runs and the CLI.

The only data is tests/data/spo_FUN.valid.arff, so a tiny data dir is made of disjoint row slices
of it (same header). The MCLoss check re-implements the published C-HMCNN code (dense
`get_constr_out` in float64, BCELoss on the `to_eval` columns) and compares it with our loss.
"""

import csv
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from fixtures import FIXTURE_DATA
from torch import nn

from hml_finetune.cli import main as hml_main
from hml_finetune.hmc.run import (
    GO_NAMESPACES,
    HMCSettings,
    HMCSplits,
    build_loss,
    dataset_files,
    load_splits,
    parse_seeds,
    run_seed,
    run_seed_variants,
    run_tag,
    train_mask,
)
from hml_finetune.hml.hierarchy import Hierarchy
from hml_finetune.hml.losses import NodeWeighting
from ssl_benthic.core.errors import DataError

SPO = FIXTURE_DATA / "spo_FUN.valid.arff"
SLICES = {"train": slice(0, 400), "valid": slice(400, 600), "test": slice(600, None)}


def _header_and_rows() -> tuple[list[str], list[str]]:
    lines = SPO.read_text().splitlines()
    cut = next(i for i, line in enumerate(lines) if line.strip().upper() == "@DATA") + 1
    return lines[:cut], [line for line in lines[cut:] if line.strip()]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """spo_FUN.{train,valid,test}.arff: disjoint slices of the valid file, plus a Diatoms pair."""
    folder = tmp_path_factory.mktemp("hmc")
    header, rows = _header_and_rows()
    for part, sl in SLICES.items():
        (folder / f"spo_FUN.{part}.arff").write_text("\n".join(header + rows[sl]) + "\n")
    (folder / "Diatoms_train.arff").write_text("\n".join(header + rows[:100]) + "\n")
    (folder / "Diatoms_test.arff").write_text("\n".join(header + rows[100:150]) + "\n")
    return folder


def test_parse_seeds():
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("0,3,7") == [0, 3, 7]
    assert parse_seeds("2") == [2]
    assert parse_seeds("0-1, 5") == [0, 1, 5]
    with pytest.raises(ValueError, match="no seeds"):
        parse_seeds(" , ")


def test_dataset_files_names_the_missing_file_and_known_datasets(data_dir, tmp_path):
    train, valid, test = dataset_files(data_dir, "spo_FUN")
    assert (train.name, valid.name, test.name) == (
        "spo_FUN.train.arff",
        "spo_FUN.valid.arff",
        "spo_FUN.test.arff",
    )
    assert dataset_files(data_dir, "Diatoms")[1] is None  # no valid file for the 'others'
    (tmp_path / "seq_FUN.train.arff").write_text("")
    with pytest.raises(DataError, match=r"seq_FUN\.valid\.arff") as err:
        dataset_files(tmp_path, "seq_FUN")
    assert "cellcycle_FUN" in str(err.value) and "ImCLEF07D" in str(err.value)
    with pytest.raises(DataError, match=r"Enron_corr_trainvalid\.arff"):
        dataset_files(tmp_path, "Enron")


def test_splits_merge_valid_and_scale_on_train_plus_valid(data_dir):
    _, rows = _header_and_rows()
    n_train, n_valid, n_test = 400, 200, len(rows) - 600
    merged = load_splits(data_dir, "spo_FUN", merge_valid=True)
    assert merged.x_valid is None and merged.y_valid is None
    assert len(merged.x_fit) == len(merged.y_fit) == n_train + n_valid
    assert len(merged.x_test) == n_test
    tuned = load_splits(data_dir, "spo_FUN", merge_valid=False)
    assert len(tuned.x_fit) == n_train and len(tuned.x_valid) == n_valid
    # the same preprocessing either way: fitted on train+valid, so that union is standardised
    torch.testing.assert_close(torch.cat([tuned.x_fit, tuned.x_valid]), merged.x_fit)
    varying = merged.x_fit.std(0) > 0
    mean = merged.x_fit.double().mean(0)
    std = merged.x_fit.double().std(0, unbiased=False)[varying]
    torch.testing.assert_close(mean, torch.zeros_like(mean), atol=1e-5, rtol=0)
    torch.testing.assert_close(std, torch.ones_like(std), atol=1e-4, rtol=0)
    assert merged.exclude == ()  # FunCat: only the root is left out
    assert not torch.isnan(merged.x_test).any()


def test_datasets_without_valid_hold_out_a_fifth_of_train(data_dir):
    tuned = load_splits(data_dir, "Diatoms", merge_valid=False, seed=3)
    assert (len(tuned.x_fit), len(tuned.x_valid)) == (80, 20)
    merged = load_splits(data_dir, "Diatoms", merge_valid=True, seed=3)
    assert len(merged.x_fit) == 100 and merged.x_valid is None
    fit_rows = {tuple(r.tolist()) for r in tuned.x_fit}
    assert not fit_rows & {tuple(r.tolist()) for r in tuned.x_valid}
    other = load_splits(data_dir, "Diatoms", merge_valid=False, seed=4)
    assert {tuple(r.tolist()) for r in other.x_fit} != fit_rows  # the hold-out follows the seed


def _splits_for(h: Hierarchy, exclude: tuple[str, ...] = ()) -> HMCSplits:
    y = torch.zeros(3, len(h))
    x = torch.zeros(3, 2)
    return HMCSplits(h, x, y, None, None, x, y, exclude)


def test_train_mask_leaves_roots_and_go_namespaces_out():
    h = Hierarchy.from_edges(
        [("root", GO_NAMESPACES[0]), ("root", GO_NAMESPACES[2]), (GO_NAMESPACES[0], "GO1")]
        + [(GO_NAMESPACES[2], "GO2"), ("GO1", "GO3"), ("GO2", "GO3")]
    )
    mask = train_mask(_splits_for(h, (GO_NAMESPACES[0], GO_NAMESPACES[2])), 4)
    assert mask.shape == (4, len(h))
    expect = {"root": 0, GO_NAMESPACES[0]: 0, GO_NAMESPACES[2]: 0, "GO1": 1, "GO2": 1, "GO3": 1}
    for name, value in expect.items():
        assert (mask[:, h.index[name]] == value).all(), name
    forest = Hierarchy.from_edges([("a", "b"), ("c", "d")])
    assert train_mask(_splits_for(forest), 1)[0].tolist() == [
        0.0 if n in ("a", "c") else 1.0 for n in forest.nodes
    ]


def test_build_loss_reference_weights_negatives_only(data_dir):
    splits = load_splits(data_dir, "spo_FUN", merge_valid=True)
    loss = build_loss(HMCSettings(loss="weighted", placement="reference"), splits)
    assert loss.pos_weight is not None and (loss.pos_weight == 1).all()
    mask = train_mask(splits, len(splits.y_fit))
    expect = NodeWeighting("class-wise", "reference").fit(splits.y_fit, mask, splits.hierarchy)[1]
    torch.testing.assert_close(loss.neg_weight, expect)
    assert not torch.allclose(loss.neg_weight, torch.ones_like(expect))  # really weighted
    assert loss.measure is None
    positive = build_loss(HMCSettings(loss="weighted", placement="positive"), splits)
    assert (positive.neg_weight == 1).all() and not (positive.pos_weight == 1).all()
    plain = build_loss(HMCSettings(), splits)
    assert plain.pos_weight is None and plain.neg_weight is None and plain.measure is None
    focal = build_loss(HMCSettings(loss="weighted_focal", measure="bma_margin"), splits)
    assert focal.measure == "bma_margin" and focal.neg_weight is not None


# ----------------------------------------------------------------------------- published C-HMCNN
def get_constr_out(x: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """C-HMCNN's `get_constr_out`, as published: dense, float64, R (1, K, K) with R[0, i, j] = 1
    iff j is i or one of its descendants."""
    c_out = x.double()
    c_out = c_out.unsqueeze(1)
    c_out = c_out.expand(len(x), R.shape[1], R.shape[1])
    R_batch = R.expand(len(x), R.shape[1], R.shape[1])
    final_out, _ = torch.max(R_batch * c_out.double(), dim=2)
    return final_out


def published_mcloss(output, labels, R, to_eval) -> torch.Tensor:
    """C-HMCNN's training loss on sigmoid outputs: MCLoss, then BCELoss on the to_eval columns."""
    constr_output = get_constr_out(output, R)
    train_output = labels * output.double()
    train_output = get_constr_out(train_output, R)
    train_output = (1 - labels) * constr_output.double() + labels * train_output
    return nn.BCELoss()(train_output[:, to_eval], labels[:, to_eval])


def test_mcloss_equals_published_code_on_spo(data_dir):
    splits = load_splits(data_dir, "spo_FUN", merge_valid=True)
    h = splits.hierarchy
    K = len(h)
    R = torch.eye(K, dtype=torch.float64)  # built from the descendant sets, not descendant_matrix
    for name in h.nodes:
        for d in h.descendants(name):
            R[h.index[name], h.index[d]] = 1.0
    to_eval = torch.tensor([n not in ("root", *GO_NAMESPACES) for n in h.nodes])
    labels = splits.y_fit[::37][:16].double()  # real FunCat targets, several depths
    assert labels[:, 1:].sum() > 20
    logits = torch.randn(
        len(labels), K, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    logits.requires_grad_()
    theirs = published_mcloss(torch.sigmoid(logits), labels, R.unsqueeze(0), to_eval)
    (g_theirs,) = torch.autograd.grad(theirs, logits)
    ours = build_loss(HMCSettings(), splits)(
        logits.unsqueeze(0), labels, train_mask(splits, len(labels))
    )
    (g_ours,) = torch.autograd.grad(ours, logits)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(g_ours, g_theirs)


# ----------------------------------------------------------------------------- short runs
def _check_row(row: dict) -> None:
    assert 0.0 <= row["au_prc"] <= 1.0
    for key in ("macro_precision", "macro_recall", "macro_f1", "micro_f1"):
        assert 0.0 <= row[key] <= 1.0, key
    assert row["dataset"] == "spo_FUN" and row["published_au_prc"] == 0.215
    assert any(k.startswith("recall_d") for k in row)


def test_run_seed_fixed_threshold_trains_on_train_plus_valid(data_dir):
    row = run_seed(data_dir, "spo_FUN", HMCSettings(epochs=1), seed=0, progress=False)
    _check_row(row)
    assert row["threshold_value"] == 0.5 and row["protocol"] == "train+valid"
    # the same seed gives the same model: AU(PRC) is threshold-free, the macro scores are not
    lower = run_seed(data_dir, "spo_FUN", HMCSettings(epochs=1, threshold="0.1"), 0, False)
    assert lower["au_prc"] == row["au_prc"] and lower["threshold_value"] == 0.1
    assert lower["macro_recall"] >= row["macro_recall"]
    assert lower["micro_recall"] > row["micro_recall"]


def test_run_seed_weighted_and_focal_with_tuned_thresholds(data_dir):
    weighted = HMCSettings(loss="weighted", placement="reference", threshold="per-node", epochs=1)
    row = run_seed(data_dir, "spo_FUN", weighted, seed=1, progress=False)
    _check_row(row)
    assert row["protocol"] == "train->valid tune"
    assert 0.0 < row["threshold_value"] < 1.0 and row["threshold_value"] != 0.5
    focal = HMCSettings(loss="weighted_focal", heads=2, threshold="global", epochs=1)
    row2 = run_seed(data_dir, "spo_FUN", focal, seed=1, progress=False)
    _check_row(row2)
    assert row2["protocol"] == "train->valid tune" and row2["heads"] == 2
    assert round(row2["threshold_value"], 2) == row2["threshold_value"]  # a grid value
    assert row2["au_prc"] != row["au_prc"]


def test_variants_share_trainings_and_score_as_separate_runs_would(data_dir):
    rules = [("global", False), ("per-node", False), ("0.5", False), ("per-node", True)]
    variants = [HMCSettings(threshold=t, refit=r, epochs=1) for t, r in rules]
    together = run_seed_variants(data_dir, "spo_FUN", variants, 2, False)
    alone = [run_seed(data_dir, "spo_FUN", v, 2, False) for v in variants]
    assert [r["threshold"] for r in together] == ["global", "per-node", "0.5", "per-node"]
    for a, b in zip(together, alone, strict=True):
        assert {k: v for k, v in a.items() if k != "seconds"} == {
            k: v for k, v in b.items() if k != "seconds"
        }
    assert together[0]["au_prc"] == together[1]["au_prc"] != together[2]["au_prc"]  # two models
    assert together[3]["au_prc"] == together[2]["au_prc"]  # the refit is the train+valid model
    with pytest.raises(ValueError, match="differ in more than threshold and refit"):
        run_seed_variants(data_dir, "spo_FUN", [variants[0], HMCSettings(loss="weighted")], 2)


def test_refit_applies_thresholds_tuned_on_train_to_the_train_plus_valid_model(data_dir):
    tuned = HMCSettings(threshold="per-node", epochs=1)
    alone = run_seed(data_dir, "spo_FUN", tuned, 3, False)
    refit = run_seed(data_dir, "spo_FUN", replace(tuned, refit=True), 3, False)
    fixed = run_seed(data_dir, "spo_FUN", HMCSettings(epochs=1), 3, False)
    assert refit["protocol"] == "train->valid tune; refit train+valid"
    # the thresholds come from the train-only model, the scores from the train+valid one
    assert refit["threshold_value"] == alone["threshold_value"] != 0.5
    assert refit["au_prc"] == fixed["au_prc"] != alone["au_prc"]
    assert refit["macro_f1"] != fixed["macro_f1"]
    with pytest.raises(ValueError, match="refit needs a tuned threshold"):
        run_seed(data_dir, "spo_FUN", HMCSettings(epochs=1, refit=True), 3, False)


def test_settings_validate():
    HMCSettings(threshold="global").validate()
    with pytest.raises(ValueError, match="threshold"):
        HMCSettings(threshold="1.5").validate()
    with pytest.raises(ValueError, match="not 'pernode'"):
        HMCSettings(threshold="pernode").validate()
    with pytest.raises(ValueError, match="unknown loss"):
        HMCSettings(loss="focla").validate()


# ----------------------------------------------------------------------------- CLI
def test_cli_writes_csv_and_markdown(data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["hmc", "--data-dir", str(data_dir), "--dataset", "spo_FUN", "--epochs", "1"]
    assert hml_main([*args, "--seeds", "0-1", "--out", str(out)]) == 0
    with (out / "spo_FUN_mcloss_e1_per-node-refit.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["seed"] for r in rows] == ["0", "1"] and "au_prc" in rows[0]
    # the default: MCLoss, per-node thresholds tuned on valid, applied to the train+valid refit
    assert {r["protocol"] for r in rows} == {"train->valid tune; refit train+valid"}
    md = (out / "spo_FUN_mcloss_e1_per-node-refit.md").read_text()
    assert "| spo_FUN | 2 |" in md and "0.215" in md
    # the published protocol, another placement, and no refit must not overwrite those files
    published = [*args, "--threshold", "0.5", "--out", str(out)]
    assert hml_main([*published, "--loss", "weighted", "--placement", "negative"]) == 0
    assert hml_main([*args, "--no-refit", "--out", str(out)]) == 0
    csvs = sorted(p.name for p in out.glob("*.csv"))
    assert csvs == [
        "spo_FUN_mcloss_e1_per-node-refit.csv",
        "spo_FUN_mcloss_e1_per-node.csv",
        "spo_FUN_weighted_class-wise_negative_e1_0.5.csv",
    ]
    with (out / "spo_FUN_mcloss_e1_per-node.csv").open() as fh:
        assert next(csv.DictReader(fh))["protocol"] == "train->valid tune"
    with (out / "spo_FUN_weighted_class-wise_negative_e1_0.5.csv").open() as fh:
        assert next(csv.DictReader(fh))["protocol"] == "train+valid"
    assert hml_main([*published, "--refit"]) == 2
    assert "refit needs a tuned threshold" in capsys.readouterr().err


def test_cli_jobs_run_seeds_in_worker_processes_with_the_same_results(data_dir, tmp_path):
    def rows(out: Path) -> list[dict]:
        with (out / "spo_FUN_mcloss_e1_per-node-refit.csv").open() as fh:
            return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(fh)]

    args = ["hmc", "--data-dir", str(data_dir), "--dataset", "spo_FUN", "--epochs", "1"]
    args += ["--seeds", "4-5", "--device", "cpu"]
    assert hml_main([*args, "--out", str(tmp_path / "one")]) == 0
    assert hml_main([*args, "--jobs", "2", "--out", str(tmp_path / "two")]) == 0
    sequential, parallel = rows(tmp_path / "one"), rows(tmp_path / "two")
    assert [r["seed"] for r in parallel] == ["4", "5"]
    assert parallel == sequential and parallel[0]["au_prc"] != parallel[1]["au_prc"]


def test_run_tag_names_every_setting_that_changes_the_run():
    assert run_tag("seq_FUN", HMCSettings()) == "seq_FUN_mcloss_0.5"
    ref = run_tag("seq_FUN", HMCSettings(loss="weighted", threshold="per-node"))
    assert ref == "seq_FUN_weighted_class-wise_reference_per-node"
    tags = {
        run_tag("d", HMCSettings(loss="weighted_focal", measure=m, heads=h, placement=p, omega=o))
        for m in ("gmu", "bma_margin")
        for h in (1, 2)
        for p in ("reference", "positive")
        for o in (0.25, 0.5)
    }
    assert len(tags) == 16
    assert run_tag("d", HMCSettings(loss="weighted", counting="own")) != run_tag(
        "d", HMCSettings(loss="weighted")
    )
    refit = HMCSettings(threshold="per-node", refit=True)
    assert run_tag("d", refit) == "d_mcloss_per-node-refit"


def test_cli_missing_dataset_is_a_clear_error(data_dir, tmp_path, capsys):
    args = ["hmc", "--data-dir", str(data_dir), "--dataset", "nope", "--out", str(tmp_path)]
    assert hml_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(r"nope\.train\.arff.*known datasets: cellcycle_FUN", err[0])
    args = ["hmc", "--data-dir", str(data_dir), "--dataset", "spo_FUN", "--threshold", "2"]
    assert hml_main(args) == 2
    assert "threshold" in capsys.readouterr().err
