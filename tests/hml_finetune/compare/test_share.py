"""A grid spread over a job array: the shares partition the cells, `--cells I/N` is checked, and a
cell's lock keeps a second process off it (and is gone when its holder dies)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import hml_finetune.compare.run as compare
from hml_finetune.cli import build_parser
from hml_finetune.compare.config import CompareConfig
from hml_finetune.compare.share import cell_lock, cell_running, parse_share, select_cells
from ssl_benthic.core.config import from_dict

REPO = Path(__file__).resolve().parents[3]


@given(st.integers(0, 40), st.integers(1, 12))
def test_the_shares_partition_the_grid(n_cells, n_tasks):
    cells = list(range(n_cells))
    shares = [select_cells(cells, (i, n_tasks)) for i in range(1, n_tasks + 1)]
    assert sorted(c for share in shares for c in share) == cells  # each cell in exactly one share
    sizes = [len(s) for s in shares]
    assert max(sizes) - min(sizes) <= 1  # balanced
    assert all(s == sorted(s) for s in shares)  # grid order kept within a share
    assert select_cells(cells, None) == cells


def test_cells_flag():
    args = build_parser().parse_args(["compare", "--config", "c.yaml", "--cells", "2/3", "seed=1"])
    assert args.cells == (2, 3) and args.overrides == ["seed=1"]
    for bad in ("0/3", "4/3", "2", "a/b"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_share(bad)


HOLD = """
import sys, time
from hml_finetune.compare.share import cell_lock
with cell_lock(sys.argv[1]) as held:
    print(held, flush=True)
    time.sleep(60)
"""


def test_a_cell_lock_keeps_other_processes_off_until_its_holder_dies(tmp_path):
    run = tmp_path / "runs" / "cell"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "True"
        assert cell_running(run)
        with cell_lock(run) as held:
            assert not held
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    assert not cell_running(run)  # a killed holder leaves no stale lock
    with cell_lock(run) as held:
        assert held


def _fake_run(cfg, **kwargs):
    """Stands for run_finetune: a cell's metrics.json, and the order cells ran in."""
    out = Path(cfg.output_dir)
    RAN.append(out.name)
    (out / "metrics.json").write_text(json.dumps({"heads": {}, "seed": cfg.seed}))
    return {}


RAN: list[str] = []


def test_shares_run_their_cells_and_the_last_writes_the_report(tmp_path, monkeypatch):
    monkeypatch.setattr(compare, "run_finetune", _fake_run)
    RAN.clear()
    raw = {
        "base": str(REPO / "configs/finetune/linear_sample.yaml"),
        "sample": None,
        "starts": [{"name": "random", "weights": "random"}],
        "losses": [{"name": n, "overrides": [f"loss.name={n}"]} for n in ("mcloss", "weighted")],
        "seeds": [0, 1, 2],
        "output_dir": str(tmp_path / "grid"),
    }
    cfg = from_dict(CompareConfig, raw)
    monkeypatch.setattr(CompareConfig, "check_inputs", lambda self: None)
    names = [c.name for c in compare.grid_cells(cfg)]
    assert compare.run_compare(cfg, share=(1, 2)) is None  # cells of share 2 have no result yet
    assert names[0::2] == RAN
    assert not (tmp_path / "grid" / "report.md").exists()
    busy = compare.grid_cells(cfg)[1].run_dir  # held by another process: not run here
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(busy)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "True"
        assert compare.run_compare(cfg, share=(2, 2)) is None
        assert names[0::2] + names[3::2] == RAN
    finally:
        holder.kill()
        holder.wait()
    report = compare.run_compare(cfg, share=(2, 2))  # the held cell now runs; all have results
    assert RAN[-1] == names[1] and report == tmp_path / "grid" / "report.md"
    rows = json.loads((tmp_path / "grid" / "results.json").read_text())
    assert sorted((r["loss"], r["seed"]) for r in rows) == sorted(
        (n, s) for n in ("mcloss", "weighted") for s in (0, 1, 2)
    )
    assert {r["status"] for r in rows} == {"done"}
