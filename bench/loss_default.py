"""Where does the weighted loss help? Weighted vs plain MCLoss, paired over seeds, on the sample
(a `compare` grid: threshold rule, fewer labels, omega, placement, the focal weight; linear probe
and optionally fine-tuning) and on the HMC FunCat runs of bench/hmc.py (bench/results/hmc_runs.jsonl).

Every verdict is the comparison report's: Δ = weighted − MCLoss of the same start, mode and seed
(HMC: dataset and seed), mean over the pairs, two-sided sign-flip permutation p (exact up to 2^20
sign patterns, else 100,000 sampled ones). Prints the tables; writes bench/results/loss_default.md.

    OMP_NUM_THREADS=1 python bench/loss_default.py [--seeds 0,1,2] [--starts random,byol]
        [--settings S,...] [--other-settings S,...] [--finetune] [--out runs/bench/loss_default]
        [--result bench/results/loss_default.md] [--report-only]

The first start runs every condition (SETTINGS, or --settings), the others the recipe pair and the
fixed threshold; a condition whose two settings did not run is left out of the tables.
A missing BYOL export (--byol-export) is made with configs/pretrain/byol_sample.yaml.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hml_finetune.compare.config import CompareConfig
from hml_finetune.compare.report import Cell, loss_verdicts, sign_flip_p
from hml_finetune.compare.run import grid_cells, run_compare
from ssl_benthic.core.config import from_dict

HEADS = ("biota", "substrate", "relief", "bedforms")
SETTINGS = {  # loss setting -> finetune overrides (the recipe: per-node thresholds, all labels)
    "mcloss": ["loss.name=mcloss"],
    "weighted": ["loss.name=weighted"],
    "mcloss_fixed": ["loss.name=mcloss", "threshold=0.5"],
    "weighted_fixed": ["loss.name=weighted", "threshold=0.5"],
    "mcloss_frac0.25": ["loss.name=mcloss", "train_fraction=0.25"],
    "weighted_frac0.25": ["loss.name=weighted", "train_fraction=0.25"],
    "w_omega1": ["loss.name=weighted", "loss.omega=1.0"],
    "w_negative": ["loss.name=weighted", "loss.placement=negative"],
    "w_omega0.05": ["loss.name=weighted", "loss.omega=0.05"],
    "mcloss_global": ["loss.name=mcloss", "threshold=global"],
    "weighted_global": ["loss.name=weighted", "threshold=global"],
    "mcloss_2heads": ["loss.name=mcloss", "heads.n_heads=2"],
    "wfocal_2heads": ["loss.name=weighted_focal", "heads.n_heads=2"],
}
FIRST_START = list(SETTINGS)  # what the first start runs by default
OTHER_STARTS = list(SETTINGS)[:4]  # and every other start: the recipe pair and the fixed threshold
SAMPLE_PAIRS = [  # (condition, weighted-side setting, MCLoss setting, mode)
    ("per-node (recipe)", "weighted", "mcloss", "linear"),
    ("per-node, placement negative", "w_negative", "mcloss", "linear"),
    ("per-node, omega 0.05", "w_omega0.05", "mcloss", "linear"),
    ("per-node, omega 1", "w_omega1", "mcloss", "linear"),
    ("fixed 0.5", "weighted_fixed", "mcloss_fixed", "linear"),
    ("global tuned", "weighted_global", "mcloss_global", "linear"),
    ("per-node, 25% of labels", "weighted_frac0.25", "mcloss_frac0.25", "linear"),
    (
        "per-node, 2 heads, weighted focal (phi 0.25, k 2)",
        "wfocal_2heads",
        "mcloss_2heads",
        "linear",
    ),
]
FINETUNE = [  # configs/finetune/finetune_sample.yaml's fine-tuning settings
    "optimizer.lr=0.001",
    "optimizer.encoder_lr_mult=0.1",
    "optimizer.encoder_warmup_epochs=1",
    "optimizer.encoder_frozen_epochs=5",
    "data.augment=true",
]
HMC_PAIRS = [  # (condition, weighted row, MCLoss row) of bench/hmc.py
    ("fixed 0.5 (published protocol)", "reference@0.5", "mcloss@0.5"),
    ("fixed 0.5, placement negative", "negative@0.5", "mcloss@0.5"),
    ("fixed 0.5, placement positive", "positive@0.5", "mcloss@0.5"),
    ("fixed 0.5, weighted focal (gmu, 2 heads)", "wfocal-gmu@0.5", "mcloss@0.5"),
    ("global tuned", "reference@tuned", "mcloss@tuned"),
    ("global tuned, placement negative", "negative@tuned", "mcloss@tuned"),
    ("per-node", "reference@per-node", "mcloss@per-node"),
    ("per-node, placement negative", "negative@per-node", "mcloss@per-node"),
]
HMC_METRICS = {"au_prc": "AU(PRC)", "macro_recall": "macro recall", "macro_f1": "macro F1"}
SAMPLE_METRICS = {"au_prc": "AU(PRC)", "rare_recall": "rare recall", "macro_f1": "macro F1"}


def sample_grid(
    args: argparse.Namespace, start: str, mode: str, settings: Sequence[str]
) -> CompareConfig:
    """One compare grid on the sample: one start x one mode x `settings` x seeds."""
    starts = {
        "random": {"name": "random", "weights": "random"},
        "byol": {
            "name": "byol",
            "weights": args.byol_export,
            "pretrain": {
                "recipe": "configs/pretrain/byol_sample.yaml",
                "output_dir": str(Path(args.byol_export).parent),
            },
        },
    }
    epochs = args.linear_epochs if mode == "linear" else args.finetune_epochs
    extra = FINETUNE if mode == "finetune" else []
    return from_dict(
        CompareConfig,
        {
            "base": "configs/finetune/linear_sample.yaml",
            "base_overrides": [
                "trainer.enable_progress_bar=false",
                f"trainer.max_epochs={epochs}",
                *extra,
            ],
            "sample": args.sample,
            "starts": [starts[start]],
            "modes": [mode],
            "losses": [{"name": s, "overrides": SETTINGS[s]} for s in settings],
            "seeds": [int(s) for s in args.seeds.split(",")],
            "output_dir": str(Path(args.out) / f"{mode}-{start}"),
        },
        source="bench/loss_default.py",
    )


def done_cells(cfg: CompareConfig) -> list[Cell]:
    """The grid's cells with their metrics.json (status done) where they have one."""
    cells = grid_cells(cfg)
    for c in cells:
        path = c.run_dir / "metrics.json"
        if path.is_file():
            c.status, c.result = "done", json.loads(path.read_text())
    return cells


def _cell(mean: float, p: float, n: int) -> str:
    return "-" if n == 0 else f"{mean:+.3f} (p {p:.2g})"


def sample_table(cells: list[Cell], pairs: Sequence[tuple[str, str, str, str]]) -> list[str]:
    """One row per condition, start, mode and head; then each condition pooled over starts and
    heads (the (start, head, seed) differences; heads of one run are not independent)."""
    names = " | ".join(f"Δ {v}" for v in SAMPLE_METRICS.values())
    lines = [f"| condition | start | mode | head | {names} |", "|---" * 7 + "|"]
    pooled: dict[tuple[str, str], list[float]] = {}
    for cond, w, m, mode in pairs:
        for head in HEADS:
            rows = [r for r in loss_verdicts(cells, head, [(w, m)]) if r["mode"] == mode]
            by: dict[tuple[str, str], dict[str, dict]] = {}
            for r in rows:
                by.setdefault((r["start"], r["mode"]), {})[r["metric"]] = r
                pooled.setdefault((cond, r["metric"]), []).extend(r["diffs"])
            for (start, mode), per in by.items():
                cols = [
                    _cell(per[k]["mean_diff"], per[k]["p"], len(per[k]["diffs"]))
                    for k in SAMPLE_METRICS
                ]
                lines.append(f"| {cond} | {start} | {mode} | {head} | " + " | ".join(cols) + " |")
    lines += [
        "",
        "Pooled over starts, heads and seeds (the heads of one run share its features and seed, so "
        "read this p as a summary, not as independent evidence); +a −b of n: pairs with Δ > 0, < 0:",
        "",
    ]
    lines += [f"| condition | {names} |", "|---" * 4 + "|"]
    for cond, *_ in pairs:
        if not any(pooled.get((cond, k)) for k in SAMPLE_METRICS):
            continue  # not run
        cols = []
        for k in SAMPLE_METRICS:
            d = pooled.get((cond, k), [])
            if not d:
                cols.append("-")
                continue
            up, down = sum(x > 0 for x in d), sum(x < 0 for x in d)
            cols.append(
                f"{_cell(float(np.mean(d)), sign_flip_p(d), len(d))}, +{up} −{down} of {len(d)}"
            )
        lines.append(f"| {cond} | " + " | ".join(cols) + " |")
    return lines + [""]


def hmc_table(runs: list[dict], funcat: bool) -> list[str]:
    """Per HMC condition: Δ over the (dataset, seed) pairs both rows have, its sign-flip p and in
    how many datasets the seed-mean Δ is positive; FunCat datasets (funcat) or the others."""
    names = " | ".join(f"Δ {v}" for v in HMC_METRICS.values())
    lines = [f"| condition | weighted row | MCLoss row | pairs | {names} |", "|---" * 7 + "|"]
    runs = [r for r in runs if r["dataset"].endswith("_FUN") == funcat]
    for cond, w, m in HMC_PAIRS:
        a = {(r["dataset"], r["seed"]): r for r in runs if r["row"] == w}
        b = {(r["dataset"], r["seed"]): r for r in runs if r["row"] == m}
        keys = sorted(set(a) & set(b))
        if not keys:
            continue
        cols = []
        for k in HMC_METRICS:
            d = np.array([a[x][k] - b[x][k] for x in keys])
            per_ds: dict[str, list[float]] = {}
            for x, v in zip(keys, d, strict=True):
                per_ds.setdefault(x[0], []).append(v)
            up = sum(np.mean(v) > 0 for v in per_ds.values())
            cols.append(f"{d.mean():+.4f} (p {sign_flip_p(d):.2g}), + in {up}/{len(per_ds)}")
        lines.append(f"| {cond} | {w} | {m} | {len(keys)} | " + " | ".join(cols) + " |")
    return lines + [""]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--starts", default="random,byol")
    p.add_argument("--byol-export", default="runs/demo/byol/export")
    p.add_argument("--settings", help=f"the first start's loss settings (default {FIRST_START})")
    p.add_argument("--other-settings", help=f"the other starts' (default {OTHER_STARTS})")
    p.add_argument(
        "--finetune", action="store_true", help="also fine-tune the last start (mcloss, weighted)"
    )
    p.add_argument("--linear-epochs", type=int, default=30)
    p.add_argument("--finetune-epochs", type=int, default=15)
    p.add_argument("--sample", default="shards/sample")
    p.add_argument("--hmc-runs", default="bench/results/hmc_runs.jsonl")
    p.add_argument("--out", default="runs/bench/loss_default")
    p.add_argument("--result", default="bench/results/loss_default.md")
    p.add_argument("--report-only", action="store_true", help="tabulate what has run")
    args = p.parse_args()
    command = shlex.join(["python", *sys.argv])
    t0 = time.perf_counter()
    starts = args.starts.split(",")
    first = args.settings.split(",") if args.settings else FIRST_START
    others = args.other_settings.split(",") if args.other_settings else OTHER_STARTS
    grids = [
        sample_grid(args, s, "linear", first if i == 0 else others) for i, s in enumerate(starts)
    ]
    pairs = list(SAMPLE_PAIRS)
    if args.finetune:
        grids.append(sample_grid(args, starts[-1], "finetune", ["mcloss", "weighted"]))
        pairs.append(("fine-tuning, per-node", "weighted", "mcloss", "finetune"))
    cells: list[Cell] = []
    for cfg in grids:
        if not args.report_only:
            run_compare(cfg, command=command)
        cells += done_cells(cfg)
    wall = time.perf_counter() - t0
    hmc_path = Path(args.hmc_runs)
    hmc = [json.loads(x) for x in hmc_path.read_text().splitlines() if x.strip()]
    body = [
        "## Sample (synthetic CATAMI sample, ResNet-18 at 64 px)",
        "",
        f"Seeds {args.seeds}; {len([c for c in cells if c.status == 'done'])} of {len(cells)} "
        "cells done. Each cell: Δ = weighted − MCLoss (mean over seeds, p of the exact sign-flip "
        "test; 0.25 is the smallest possible at 3 seeds).",
        "",
        *sample_table(cells, pairs),
        f"## HMC FunCat ({hmc_path}, bench/hmc.py, 7 datasets)",
        "",
        "Δ = weighted − MCLoss over (dataset, seed) pairs; p of the sign-flip test over those pairs "
        "(21 pairs: 100,000 sampled sign patterns); '+ in k/n': datasets whose seed-mean Δ is > 0.",
        "",
        *hmc_table(hmc, funcat=True),
        "The other datasets of the same file (Enron; Diatoms and ImCLEF07A ran MCLoss rows only):",
        "",
        *hmc_table(hmc, funcat=False),
    ]
    print("\n".join(body))
    text = [
        "# Loss default: weighted vs MCLoss, paired",
        "",
        "```",
        f"OMP_NUM_THREADS=1 {command}",
        "```",
        "",
        f"Wall time of this invocation (cells already done are not rerun): {wall:.0f} s. "
        f"Full reports: `{Path(args.out)}/<mode>-<start>/report.md`.",
        "",
        *body,
    ]
    out = Path(args.result)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(text))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
