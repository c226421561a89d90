"""Which start and which loss on the sample: an SSL export vs random init, linear probe and
fine-tuning, plain MCLoss (the default) vs the weighted loss, several seeds (a `compare` grid).

Targets: the SSL start beats random init on AU(PRC) for biota and substrate, with the recipes'
default loss (MCLoss); and, per (start, mode, head), whether the weighted loss raises rare-node
recall over MCLoss without losing more than 0.02 AU(PRC) (where it helps, not a target: MCLoss
became the default on that evidence, bench/results/loss_default.md).
Prints the per-head tables and the target checks; writes bench/results/finetune_sample.md.

    OMP_NUM_THREADS=2 .venv/bin/python bench/finetune_sample.py [--ssl-export runs/demo/byol/export]
        [--seeds 0,1,2] [--modes linear,finetune] [--out runs/bench/finetune_sample] [key=value ...]

Extra key=value arguments are finetune overrides applied to every cell (e.g. trainer.max_epochs=2).
A missing export is made with configs/pretrain/byol_sample.yaml (output_dir: the export's parent).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hml_finetune.compare.config import CompareConfig
from hml_finetune.compare.run import run_compare
from ssl_benthic.core.config import from_dict

RESULT = Path("bench/results/finetune_sample.md")
FINETUNE = [  # the fine-tuning settings of configs/finetune/finetune_sample.yaml
    "optimizer.lr=0.001",
    "optimizer.encoder_lr_mult=0.1",
    "optimizer.encoder_warmup_epochs=1",
    "optimizer.encoder_frozen_epochs=5",
    "data.augment=true",
    "data.num_workers=2",
]
HEADS = ("biota", "substrate")
DEFAULT_LOSS = "mcloss"  # configs/finetune/*.yaml: loss.name
MAX_AUPRC_LOSS = 0.02


def build_config(args: argparse.Namespace) -> CompareConfig:
    """The grid: {random, ssl} x modes x {mcloss, weighted} x seeds on the sample."""
    export = Path(args.ssl_export)
    return from_dict(
        CompareConfig,
        {
            "base": "configs/finetune/linear_sample.yaml",
            "base_overrides": [
                "trainer.enable_progress_bar=false",
                f"trainer.max_epochs={args.linear_epochs}",
                *args.overrides,
            ],
            "sample": args.sample,
            "starts": [
                {"name": "random", "weights": "random"},
                {
                    "name": "ssl",
                    "weights": str(export),
                    "pretrain": {
                        "recipe": "configs/pretrain/byol_sample.yaml",
                        "output_dir": str(export.parent),
                    },
                },
            ],
            "modes": args.modes.split(","),
            "mode_overrides": {
                "finetune": [*FINETUNE, f"trainer.max_epochs={args.finetune_epochs}"]
            },
            "losses": [
                {"name": "mcloss", "overrides": ["loss.name=mcloss"]},
                {"name": "weighted", "overrides": ["loss.name=weighted"]},
            ],
            "seeds": [int(s) for s in args.seeds.split(",")],
            "output_dir": args.out,
        },
        source="bench/finetune_sample.py",
    )


def means(rows: list[dict]) -> dict[tuple, dict[str, float]]:
    """(start, mode, loss, head) -> mean of each metric over the done seeds (NaN when none)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["status"] == "done":
            groups.setdefault((r["start"], r["mode"], r["loss"], r["head"]), []).append(r)
    out = {}
    for key, runs in groups.items():
        out[key] = {}
        for metric in ("au_prc", "macro_recall", "macro_f1", "rare_recall"):
            vals = [r[metric] for r in runs if r[metric] is not None]
            out[key][metric] = float(np.mean(vals)) if vals else math.nan
    return out


def target_checks(m: dict[tuple, dict[str, float]], modes: list[str]) -> list[str]:
    """One line per target and (mode, head) or (start, mode, head): PASS / FAIL / n/a."""
    lines = []

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else "PASS" if ok else "FAIL"

    for mode in modes:
        for head in HEADS:
            ssl = m.get(("ssl", mode, DEFAULT_LOSS, head), {}).get("au_prc", math.nan)
            rnd = m.get(("random", mode, DEFAULT_LOSS, head), {}).get("au_prc", math.nan)
            ok = None if math.isnan(ssl) or math.isnan(rnd) else ssl > rnd
            lines.append(
                f"- SSL > random AU(PRC), {mode}, {head} ({DEFAULT_LOSS}, the default loss): "
                f"{ssl:.3f} vs {rnd:.3f}: {verdict(ok)}"
            )
    for start in ("ssl", "random"):
        for mode in modes:
            for head in HEADS:
                w = m.get((start, mode, "weighted", head), {})
                p = m.get((start, mode, "mcloss", head), {})
                rw, rp = w.get("rare_recall", math.nan), p.get("rare_recall", math.nan)
                aw, ap = w.get("au_prc", math.nan), p.get("au_prc", math.nan)
                vals = (rw, rp, aw, ap)
                ok = (
                    None
                    if any(math.isnan(v) for v in vals)
                    else rw > rp and ap - aw <= MAX_AUPRC_LOSS
                )
                lines.append(
                    f"- weighted helps, {start} {mode} {head}: rare recall {rw:.3f} vs "
                    f"{rp:.3f}, AU(PRC) {aw:.3f} vs {ap:.3f}: "
                    f"{'n/a' if ok is None else 'yes' if ok else 'no'}"
                )
    return lines


def tables(report: Path) -> str:
    """The per-head tables section of report.md."""
    text = report.read_text()
    start = text.index("## Test metrics per head")
    end = text.index("## Plots", start) if "## Plots" in text else text.index("## Commands")
    return text[start:end].replace("## Test metrics", "### Test metrics", 1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ssl-export", default="runs/demo/byol/export")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--modes", default="linear,finetune")
    p.add_argument("--linear-epochs", type=int, default=30)
    p.add_argument("--finetune-epochs", type=int, default=15)
    p.add_argument("--sample", default="shards/sample")
    p.add_argument("--out", default="runs/bench/finetune_sample")
    p.add_argument("--result", default=str(RESULT), help="markdown summary to write")
    p.add_argument("overrides", nargs="*", help="finetune key=value overrides for every cell")
    args = p.parse_args()
    cfg = build_config(args)
    command = shlex.join([sys.executable.split("/")[-1], *sys.argv])
    t0 = time.perf_counter()
    report = run_compare(cfg, command=command)
    wall = time.perf_counter() - t0
    rows = json.loads((report.parent / "results.json").read_text())
    checks = target_checks(means(rows), cfg.modes)
    body = tables(report)
    print(body + "\n".join(checks))
    lines = [
        "# Fine-tuning on the sample: SSL vs random init, MCLoss vs weighted",
        "",
        "```",
        f"OMP_NUM_THREADS={torch.get_num_threads()} {command}",
        "```",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, "
        f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}. "
        f"Wall time of this invocation (cells already done are not rerun): {wall:.0f} s.",
        f"Full report with plots and per-run configs: `{report}`.",
        "",
        body,
        "## Targets (means over seeds)",
        "",
        *checks,
        "",
    ]
    out = Path(args.result)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print(f"wrote {out} (full report: {report})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
