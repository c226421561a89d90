"""The comparison report's paired verdict, weighted loss vs MCLoss over seeds: differences and
sign-flip p-values of a fabricated grid worked out by hand and by enumerating every sign pattern,
which loss settings are paired, and nothing for a grid without both losses."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from hml_finetune.compare.config import CompareConfig
from hml_finetune.compare.report import Cell, loss_verdicts, sign_flip_p, write_report
from hml_finetune.compare.run import loss_pairs
from ssl_benthic.core.config import from_dict

REPO = Path(__file__).resolve().parents[3]


def slow_sign_flip_p(diffs: list[float]) -> float:
    """Share of the 2^n sign patterns whose |mean| reaches the observed |mean| (exact ties count)."""
    d = np.asarray(diffs)
    seen = abs(d.mean())
    flips = list(itertools.product((1.0, -1.0), repeat=len(d)))
    return sum(abs((d * np.array(s)).mean()) >= seen - 1e-12 for s in flips) / len(flips)


def test_sign_flip_p_matches_enumeration_on_random_differences() -> None:
    rng = np.random.default_rng(3)
    for n in range(1, 9):
        diffs = list(rng.normal(0.01, 0.02, size=n))
        assert sign_flip_p(diffs) == pytest.approx(slow_sign_flip_p(diffs)), n
    assert sign_flip_p([0.1, 0.2, 0.3]) == pytest.approx(0.25)  # the smallest p at 3 seeds
    assert sign_flip_p([0.1] * 25) < 1e-4  # beyond 2^20 patterns: sampled, still tiny
    assert sign_flip_p([0.1, -0.1] * 13) > 0.9  # mean 0


def head(au: float, rare: float | None, f1: float) -> dict:
    return {"au_prc": au, "rare_recall": rare, "macro_f1": f1, "macro_recall": 0.5}


# (loss setting, seed) -> substrate metrics; setting names are not the loss names
TABLE = {
    ("w", 0): head(0.75, 0.5, 0.5),
    ("w", 1): head(0.5, None, 0.5),  # no rare node with test positives
    ("w", 2): head(0.625, 1.0, 0.5),
    ("w", 3): head(0.9, 0.9, 0.9),  # no MCLoss run at seed 3: not paired
    ("plain", 0): head(0.5, 0.25, 0.5),
    ("plain", 1): head(0.625, 0.5, 0.5),
    ("plain", 2): head(0.5, 0.5, 0.5),
}


def cells(tmp: Path) -> list[Cell]:
    return [
        Cell(
            "random",
            "linear",
            loss,
            seed,
            tmp / f"{loss}{seed}",
            "done",
            result={"heads": {"substrate": m}},
        )
        for (loss, seed), m in TABLE.items()
    ]


def test_verdict_on_a_fabricated_grid(tmp_path: Path) -> None:
    rows = {r["metric"]: r for r in loss_verdicts(cells(tmp_path), "substrate", [("w", "plain")])}
    # AU(PRC): 0.75-0.5, 0.5-0.625, 0.625-0.5 = +0.25, -0.125, +0.125, mean 1/12; sums of the
    # 8 sign patterns 0.5, 0.25, 0.25, 0 and their negatives: 6 of 8 reach 0.25
    assert rows["au_prc"]["seeds"] == [0, 1, 2]
    assert rows["au_prc"]["mean_diff"] == pytest.approx(1 / 12)
    assert rows["au_prc"]["sign"] == 1
    assert rows["au_prc"]["p"] == pytest.approx(0.75) == slow_sign_flip_p([0.25, -0.125, 0.125])
    # rare recall: seeds 0 and 2 only, +0.25 and +0.5; |sums| 0.75, 0.25, 0.25, 0.75: p 2/4
    assert rows["rare_recall"]["seeds"] == [0, 2]
    assert rows["rare_recall"]["mean_diff"] == pytest.approx(0.375)
    assert rows["rare_recall"]["p"] == pytest.approx(0.5)
    # macro F1: equal at every seed, sign 0, p 1
    assert rows["macro_f1"]["mean_diff"] == 0 and rows["macro_f1"]["sign"] == 0
    assert rows["macro_f1"]["p"] == pytest.approx(1.0)

    report = write_report(
        tmp_path / "out", cells(tmp_path), plots=False, loss_pairs=[("w", "plain")]
    ).read_text()
    assert "#### substrate: weighted loss vs MCLoss, paired over seeds" in report
    assert "exact sign-flip permutation test" in report
    assert (
        "| random | linear | w | plain | +0.083, weighted higher, p 0.750 (3 seeds) | "
        "+0.375, weighted higher, p 0.500 (2 seeds) | +0.000, equal, p 1.000 (3 seeds) |"
    ) in report
    assert "Weighted below MCLoss in 0, above in 2 of 3 comparisons (0 with p < 0.05)." in report


def test_mcloss_higher_reads_as_such_and_no_pair_prints_nothing(tmp_path: Path) -> None:
    swapped = loss_verdicts(cells(tmp_path), "substrate", [("plain", "w")])
    au = next(r for r in swapped if r["metric"] == "au_prc")
    assert au["sign"] == -1 and au["mean_diff"] == pytest.approx(-1 / 12)
    report = write_report(tmp_path / "out", cells(tmp_path), plots=False).read_text()
    assert "weighted loss vs MCLoss" not in report


def grid(tmp: Path, losses: list[dict]) -> CompareConfig:
    raw = {
        "base": str(REPO / "configs/finetune/linear_sample.yaml"),
        "sample": None,
        "starts": [{"name": "random"}],
        "losses": losses,
        "output_dir": str(tmp),
    }
    return from_dict(CompareConfig, raw)


def test_loss_pairs_match_loss_names_and_the_other_overrides(tmp_path: Path) -> None:
    losses = [
        {"name": "plain", "overrides": ["loss.name=mcloss"]},
        {"name": "w", "overrides": ["loss.name=weighted"]},
        {"name": "w_global", "overrides": ["loss.name=weighted", "threshold=global"]},
        {"name": "mc_global", "overrides": ["threshold=global", "loss.name=mcloss"]},
        {"name": "w_omega", "overrides": ["loss.name=weighted", "loss.omega=1.0"]},
        {"name": "recipe", "overrides": []},  # the recipe's default loss: MCLoss
        {"name": "focal", "overrides": ["loss.name=weighted_focal"]},
    ]
    assert loss_pairs(grid(tmp_path, losses)) == [
        ("w", "plain"),
        ("w", "recipe"),
        ("w_global", "mc_global"),
        ("w_omega", "plain"),
        ("w_omega", "recipe"),
    ]
    assert loss_pairs(grid(tmp_path, losses[:1] + losses[5:])) == []  # no weighted loss


def test_recipes_and_dataclasses_default_to_mcloss() -> None:
    """The default the loss benchmark supports (bench/results/loss_default.md), everywhere."""
    import yaml

    from hml_finetune.finetune.config import FinetuneConfig

    assert FinetuneConfig().loss.name == "mcloss"
    assert [x.overrides for x in CompareConfig(base="b", starts=[]).losses] == [
        ["loss.name=mcloss"]
    ]
    for name in ("finetune", "finetune_sample", "linear", "linear_sample"):
        raw = yaml.safe_load((REPO / f"configs/finetune/{name}.yaml").read_text())
        assert raw["loss"]["name"] == "mcloss", name
