"""The comparison grid: end to end on a tiny sample through the CLI (random start, an export, a broken
export, a skipped ImageNet start), resume, interruption, and the report's mean +- std."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
import yaml
from safetensors.torch import save_file

import hml_finetune.compare.run as compare
from hml_finetune.cli import main
from hml_finetune.compare.config import CompareConfig
from ssl_benthic.core.config import ConfigError, from_dict, load_config

REPO = Path(__file__).resolve().parents[3]
ROW_KEYS = {"start", "mode", "loss", "seed", "head", "au_prc", "macro_recall", "macro_f1"}
ROW_KEYS |= {"rare_recall", "status"}
TINY = [
    "backbone.name=resnet10t",
    "data.img_size=32",
    "data.batch_size=8",
    "data.shuffle=false",
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
]


def write_export(out: Path) -> Path:
    """A random resnet10t in the stage-1 export format (safetensors + JSON)."""
    torch.manual_seed(1)
    model = timm.create_model("resnet10t", pretrained=False, num_classes=0)
    out.mkdir(parents=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "backbone.safetensors"))
    meta = {"timm_name": "resnet10t", "mean": [0.4, 0.4, 0.4], "std": [0.2, 0.2, 0.2]}
    (out / "backbone.json").write_text(json.dumps(meta))
    return out


def broken_export(out: Path) -> Path:
    """An export folder whose weights file is missing (its JSON is there): the cells fail."""
    out.mkdir(parents=True)
    (out / "backbone.json").write_text(json.dumps({"timm_name": "resnet10t"}))
    return out


def grid_yaml(tmp: Path, **extra: Any) -> Path:
    raw = {
        "base": str(REPO / "configs/finetune/linear_sample.yaml"),
        "base_overrides": TINY,
        "sample": str(tmp / "shards"),
        "sample_kwargs": {"n_unlabelled": 0, "n_labelled": 60, "size": 32},
        "starts": [
            {"name": "random", "weights": "random"},
            {"name": "ssl", "weights": str(write_export(tmp / "export"))},
            {"name": "broken", "weights": str(broken_export(tmp / "broken"))},
            {"name": "imagenet", "weights": "imagenet"},
        ],
        "modes": ["linear"],
        "losses": [
            {"name": "mcloss", "overrides": ["loss.name=mcloss"]},
            {"name": "weighted", "overrides": ["loss.name=weighted"]},
        ],
        "seeds": [0, 1],
        "output_dir": str(tmp / "not_used"),
        **extra,
    }
    path = tmp / "compare.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_grid_end_to_end_reports_every_cell_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the ImageNet start has no weights: skipped
    config = grid_yaml(tmp_path)
    out = tmp_path / "grid"
    rc = main(["compare", "--config", str(config), "seeds=[0]", f"output_dir={out}"])
    assert rc == 1  # the broken start failed
    assert (
        "8 cells: 0 done before, 2 skipped or failed at setup, 6 to run" in capsys.readouterr().out
    )
    resolved = yaml.safe_load((out / "resolved_compare.yaml").read_text())
    assert resolved["seeds"] == [0] and resolved["output_dir"] == str(out)

    rows = json.loads((out / "results.json").read_text())
    by_cell: dict[tuple, list[dict]] = {}
    for row in rows:
        assert set(row) >= ROW_KEYS
        by_cell.setdefault((row["start"], row["mode"], row["loss"], row["seed"]), []).append(row)
    expected = {
        (s, "linear", loss, 0)
        for s in ("random", "ssl", "broken", "imagenet")
        for loss in ("mcloss", "weighted")
    }
    assert set(by_cell) == expected
    for (start, *_), cell_rows in by_cell.items():
        status = {"random": "done", "ssl": "done", "broken": "failed", "imagenet": "skipped"}
        assert {r["status"] for r in cell_rows} == {status[start]}
        if start in ("random", "ssl"):  # one row per head, with metrics from that run
            assert {r["head"] for r in cell_rows} == {"biota", "substrate", "relief", "bedforms"}
            assert all(0.0 <= r["au_prc"] <= 1.0 for r in cell_rows)
        else:
            assert [r["head"] for r in cell_rows] == [None]
    for loss in ("mcloss", "weighted"):
        metrics = json.loads((out / f"runs/ssl-linear-{loss}-s0/metrics.json").read_text())
        assert metrics["loss"] == loss and metrics["start"] == str(tmp_path / "export")

    report = (out / "report.md").read_text()
    assert "PARTIAL grid" in report
    for start, mode, loss, seed in expected:
        assert f"| {start}-{mode}-{loss}-s{seed} |" in report  # the all-cells table
    assert "| broken-linear-mcloss-s0 | failed | BackboneError: weights file not found" in report
    assert "| imagenet-linear-weighted-s0 | skipped | skipped: no weights" in report
    export_file = tmp_path / "export" / "backbone.safetensors"
    sha = hashlib.sha256(export_file.read_bytes()).hexdigest()
    assert f"| ssl | {export_file} | {sha} | cls | 2 |" in report  # the weights each start used
    assert "| random | - (random init or the hub) | - | cls | 2 |" in report
    assert "| random | linear | weighted |" in report and "| 1/1 |" in report
    assert "#### biota: weighted loss vs MCLoss, paired over seeds" in report
    assert "| ssl | linear | weighted | mcloss | " in report  # one seed: p is 1
    assert "p 1.000 (1 seeds)" in report
    for head in ("biota", "substrate"):
        for kind in ("depth_scores", "pr", "rare_recall"):
            png = out / "plots" / f"{head}_{kind}.png"
            assert png.read_bytes()[:4] == b"\x89PNG"
    assert f"hml-finetune compare --config {config} 'seeds=[0]' output_dir={out}" in report

    # re-run after the export was re-made: only the failed cells and the export's cells run again
    # (the skipped start stays skipped, the random start's results are kept)
    weights = tmp_path / "export/backbone.safetensors"
    later = time.time_ns() + 10**10  # in the future: newer than every metrics.json
    for metrics_file in (out / "runs").glob("random-*/metrics.json"):
        os.utime(metrics_file, ns=(later, later))
    calls: list[str] = []

    def fake_run(cfg: Any, *args: Any, **kwargs: Any) -> dict:
        calls.append(Path(cfg.output_dir).name)
        raise RuntimeError("still broken")

    monkeypatch.setattr(compare, "run_finetune", fake_run)
    os.utime(weights, ns=(later - 1, later - 1))  # newer than the ssl cells' metrics.json
    cfg = load_config(CompareConfig, config, ["seeds=[0]", f"output_dir={out}"])
    compare.run_compare(cfg)
    assert sorted(calls) == [
        "broken-linear-mcloss-s0",
        "broken-linear-weighted-s0",
        "ssl-linear-mcloss-s0",
        "ssl-linear-weighted-s0",
    ]
    assert (out / "runs/random-linear-weighted-s0/metrics.json").stat().st_mtime_ns == later
    assert "RuntimeError: still broken" in (out / "report.md").read_text()


def fake_metrics(au_prc: float, rare: float | None) -> dict:
    per_node = [{"node": "a", "depth": 1, "train_freq": 0.01, "test_positives": 2, "recall": 0.5}]
    head = {
        "au_prc": au_prc,
        "macro_recall": 0.5,
        "macro_f1": 0.25,
        "rare_recall": rare,
        "per_depth": {"1": {"recall_micro": 0.5}, "2": {"recall_micro": 0.25}},
        "pr_curve": {"precision": [1.0, 0.5], "recall": [0.0, 1.0]},
        "per_node": per_node,
        "hierarchical": {
            "label_rule": "expected-hops",
            "h_f1": 0.6,
            "hop_distance": 10 * au_prc,
            "mistake_severity": 1.0,
            "ece_uncalibrated": 0.2,
            "ece": 0.1,
            "hop_distance_by_rule": {"expected-hops": 10 * au_prc, "threshold": 5.0},
            "reliability": {"confidence": [0.1, 0.9], "accuracy": [0.2, 0.8], "count": [3, 1]},
        },
    }
    return {"heads": {"substrate": head}}


def grid(tmp: Path, seeds: list[int]) -> CompareConfig:
    return from_dict(
        CompareConfig,
        {
            "base": str(REPO / "configs/finetune/linear_sample.yaml"),
            "sample": None,
            "starts": [{"name": "random"}],
            "losses": [{"name": "mcloss"}],  # the recipe's default loss
            "seeds": seeds,
            "output_dir": str(tmp / "out"),
        },
    )


def test_report_mean_std_and_interrupted_grid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = {0: (0.2, 0.5), 1: (0.4, None), 2: None}  # seed 2 is interrupted

    def fake_run(cfg: Any, *args: Any, **kwargs: Any) -> dict:
        if values[cfg.seed] is None:
            raise KeyboardInterrupt
        out = Path(cfg.output_dir)
        (out / "metrics.json").write_text(json.dumps(fake_metrics(*values[cfg.seed])))
        return {}

    monkeypatch.setattr(compare, "run_finetune", fake_run)
    with pytest.raises(KeyboardInterrupt):
        compare.run_compare(grid(tmp_path, [0, 1, 2]))
    out = tmp_path / "out"
    report = (out / "report.md").read_text()
    # AU(PRC) 0.2, 0.4: mean 0.3, sample std sqrt(2 * 0.1^2 / 1) = 0.141; rare recall: seed 0 only
    assert (
        "| random | linear | mcloss | 0.300 ± 0.141 | 0.500 ± 0.000 | 0.250 ± 0.000 | 0.500 | 2/3 |"
        in report
    )
    assert "PARTIAL grid" in report and "| random-linear-mcloss-s2 | missing |" in report
    rows = json.loads((out / "results.json").read_text())
    assert [(r["seed"], r["status"], r["head"]) for r in rows] == [
        (0, "done", "substrate"),
        (1, "done", "substrate"),
        (2, "missing", None),
    ]
    assert rows[1]["rare_recall"] is None
    assert (out / "plots/substrate_rare_recall.png").is_file()
    # hierarchical scores: hop distance 2 and 4, mean 3, sample std sqrt(2) = 1.414
    assert (
        "| random | linear | mcloss (expected-hops) | 0.600 ± 0.000 | 3.000 ± 1.414 | "
        "1.000 ± 0.000 | 0.200 ± 0.000 | 0.100 ± 0.000 |" in report
    )
    assert rows[1]["hop_distance"] == pytest.approx(4.0) and rows[1]["ece"] == 0.1
    for kind in ("hop_distance", "reliability"):
        assert (out / f"plots/substrate_{kind}.png").is_file()

    values[2] = (0.3, 0.5)  # resume: only seed 2 runs, the grid is complete
    compare.run_compare(grid(tmp_path, [0, 1, 2]))
    assert "Grid complete: 3 of 3 cells done." in (out / "report.md").read_text()


def test_config_errors_name_the_problem(tmp_path: Path) -> None:
    config = grid_yaml(tmp_path)
    with pytest.raises(ConfigError, match="starts names must be unique"):
        load_config(CompareConfig, config, ["starts=[{name: a}, {name: a}]"])
    with pytest.raises(ConfigError, match="unknown key 'seed'.*seeds"):
        load_config(CompareConfig, config, ["seed=1"])
    cfg = grid(tmp_path, [0])
    cfg.sample, cfg.sample_kwargs = str(tmp_path / "s"), {"n_images": 3}
    with pytest.raises(ConfigError, match="sample_kwargs: unknown key.*n_images"):
        compare.ensure_sample(cfg)


def _ensure_sample_after(barrier: Any, cfg: CompareConfig, log: Path) -> None:
    """In a child process: wait for the other, then make the sample, logging what it printed."""
    barrier.wait()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        compare.ensure_sample(cfg)
    log.write_text(out.getvalue())


def test_two_tasks_draw_the_sample_once(tmp_path: Path) -> None:
    """Two array tasks start together on a missing sample: one draws it, the other waits and uses
    it (without the lock both draw, and the second replaces the first's under it)."""
    cfg = grid(tmp_path, [0])
    cfg.sample = str(tmp_path / "sample")
    cfg.sample_kwargs = {"n_unlabelled": 20, "n_labelled": 60, "size": 16}
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(2)
    logs = [tmp_path / f"task{i}.log" for i in range(2)]
    tasks = [ctx.Process(target=_ensure_sample_after, args=(barrier, cfg, log)) for log in logs]
    for t in tasks:
        t.start()
    for t in tasks:
        t.join(120)
    assert [t.exitcode for t in tasks] == [0, 0]
    assert sum("creating the sample" in log.read_text() for log in logs) == 1
    assert compare._is_sample(Path(cfg.sample))
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name or ".old" in p.name]


def test_ssl_start_is_pretrained_and_exported_when_missing(tmp_path: Path) -> None:
    from fixtures.pretrain import make_shards, tiny_config

    from ssl_benthic.core.config import save_config

    unlabelled = make_shards(tmp_path / "unlabelled", n=16)
    recipe = save_config(
        tiny_config("byol", unlabelled, tmp_path / "unused"), tmp_path / "byol.yaml"
    )
    export = tmp_path / "byol/export"
    cfg = load_config(
        CompareConfig,
        grid_yaml(tmp_path),
        [
            f"starts=[{{name: byol, weights: {export}, pretrain: {{recipe: {recipe}, "
            f"overrides: [trainer.max_epochs=1], output_dir: {tmp_path / 'byol'}}}}}]",
            "losses=[{name: mcloss}]",
            "seeds=[0]",
            f"output_dir={tmp_path / 'out'}",
        ],
    )
    report = compare.run_compare(cfg).read_text()
    assert json.loads((export / "backbone.json").read_text())["timm_name"] == "resnet10t"
    assert (tmp_path / "byol/checkpoints/last.ckpt").is_file()
    assert "Grid complete: 1 of 1 cells done." in report
    assert f"ssl-benthic pretrain --config {recipe} trainer.max_epochs=1 output_dir=" in report
