"""Random vs BYOL (ResNet-18) vs MAE (ViT-Ti) starts on the synthetic sample: pretrain, export, then
a `compare` linear probe over seeds, each SSL start beside a random init of its own architecture.

A ViT-Ti/8 and a ResNet-18 differ in architecture, so MAE is compared with a random ViT-Ti built
exactly as its export (timm name and model_kwargs; one init drawn with `--vit-seed`, imported with
`import-weights`) and BYOL with the random ResNet-18 of `compare` (drawn from each probe seed). The
ViTs are probed on their `cls` token and on the mean of their patch tokens (`backbone.pool`).
Prints the tables (mean ± std over seeds) and the stage timings as ratios against the random
ResNet-18's compare cells; writes bench/results/foundation_sample.md.

    OMP_NUM_THREADS=1 python bench/foundation_sample.py [--byol-steps 40 --mae-steps 120]
        [--seeds 0,1,2] [--out runs/bench/foundation_sample] [--reuse] [key=value ...]

Extra key=value arguments are finetune overrides applied to every compare cell.
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
import timm
import torch
from safetensors.torch import save_file

from hml_finetune.compare.config import CompareConfig
from hml_finetune.compare.run import run_compare
from ssl_benthic.core.config import from_dict
from ssl_benthic.data.sample.make_sample import make_sample
from ssl_benthic.pretrain.run import load_recipe, pretrain
from ssl_benthic.weights.backbones import read_export
from ssl_benthic.weights.export import export_backbone
from ssl_benthic.weights.import_weights import import_weights

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "bench" / "results" / "foundation_sample.md"
RECIPES = {"byol": "configs/pretrain/byol_sample.yaml", "mae": "configs/pretrain/mae_sample.yaml"}
METRICS = {
    "au_prc": "AU(PRC)",
    "macro_f1": "macro F1",
    "rare_recall": "rare recall",
    "h_f1": "hF",
    "hop_distance": "hop distance",
}
REFERENCE = "random_rn18"  # the compare cells every timing is divided by
OWN_RANDOM = {  # start -> the random init of its own architecture and feature
    "byol": "random_rn18",
    "mae": "random_vitti",
    "mae_mean": "random_vitti_mean",
}


def pretrain_export(method: str, steps: int, out: Path, reuse: bool) -> dict:
    """Pretrain `method`'s sample recipe for `steps` steps into out/<method>, export it; timings."""
    cfg = load_recipe(
        ROOT / RECIPES[method],
        [
            f"trainer.max_steps={steps}",
            f"output_dir={out / method}",
            "monitor.knn=null",
            "logger.tensorboard=false",
            "trainer.enable_progress_bar=false",
        ],
    )
    export = out / method / "export"
    info = {"method": method, "export": export, "steps": steps, "batch": cfg.data.batch_size}
    if reuse and (export / "backbone.json").is_file():
        return {**info, "pretrain_s": math.nan, "export_s": math.nan}
    t0 = time.perf_counter()
    pretrain(cfg, overwrite=True)
    t1 = time.perf_counter()
    export_backbone(out / method / "checkpoints" / "last.ckpt", export, overwrite=True)
    return {**info, "pretrain_s": t1 - t0, "export_s": time.perf_counter() - t1}


def random_like(export: Path, out: Path, seed: int) -> Path:
    """A random init of the export's exact architecture (timm name + model_kwargs, seeded), saved
    as a plain safetensors file and imported with `import_weights` like any downloaded file."""
    meta = read_export(export)[1]
    torch.manual_seed(seed)
    model = timm.create_model(
        meta["timm_name"], pretrained=False, num_classes=0, **meta["model_kwargs"]
    )
    raw = out / f"random_{meta['timm_name']}_s{seed}.safetensors"
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(raw))
    heads = {"num_heads": model.blocks[0].attn.num_heads}  # not in the weights: say it
    folder = out / "random_vitti"
    import_weights(
        raw, folder, model_kwargs=heads, mean=meta["mean"], std=meta["std"], overwrite=True
    )
    return folder


def compare_config(args: argparse.Namespace, exports: dict[str, Path]) -> CompareConfig:
    """The grid: 6 starts x linear x the weighted loss x seeds on the sample."""
    mean = ["backbone.pool=mean"]
    starts = [
        {"name": "random_rn18", "weights": "random"},
        {"name": "byol", "weights": str(exports["byol"])},
        {"name": "random_vitti", "weights": str(exports["random_vitti"])},
        {"name": "mae", "weights": str(exports["mae"])},
        {"name": "random_vitti_mean", "weights": str(exports["random_vitti"]), "overrides": mean},
        {"name": "mae_mean", "weights": str(exports["mae"]), "overrides": mean},
    ]
    return from_dict(
        CompareConfig,
        {
            "base": str(ROOT / "configs" / "finetune" / "linear_sample.yaml"),
            "base_overrides": [
                "trainer.enable_progress_bar=false",
                f"trainer.max_epochs={args.linear_epochs}",
                *args.overrides,
            ],
            "sample": str(args.sample),
            "starts": starts,
            "modes": ["linear"],
            "losses": [{"name": "weighted", "overrides": ["loss.name=weighted"]}],
            "seeds": [int(s) for s in args.seeds.split(",")],
            "output_dir": str(args.out / "compare"),
        },
        source="bench/foundation_sample.py",
    )


def timed_compare(cfg: CompareConfig, command: str) -> tuple[Path, dict[str, float]]:
    """`run_compare` with one more start each call (done cells are not rerun), so each start's
    cells (feature extraction + its probes + one report) are timed on their own; a last call with
    nothing to run times the report alone."""
    seconds, report = {}, None
    starts = list(cfg.starts)
    for i, start in enumerate(starts, 1):
        cfg.starts = starts[:i]
        t0 = time.perf_counter()
        report = run_compare(cfg, command=command)
        seconds[start.name] = time.perf_counter() - t0
    assert report is not None
    t0 = time.perf_counter()
    run_compare(cfg, command=command)  # nothing left to run: what one report (+ plots) costs
    seconds["(report + plots only)"] = time.perf_counter() - t0
    return report, seconds


def per_seed(rows: list[dict]) -> dict[tuple[str, str], dict[str, dict[int, float]]]:
    """(start, head) -> metric -> {seed: value} over done, scored runs."""
    out: dict[tuple[str, str], dict[str, dict[int, float]]] = {}
    for r in rows:
        if r["status"] != "done" or r.get("head_status") not in (None, "scored"):
            continue
        cell = out.setdefault((r["start"], r["head"]), {m: {} for m in METRICS})
        for m in METRICS:
            if r[m] is not None:
                cell[m][r["seed"]] = float(r[m])
    return out


def _ms(values: list[float], signed: bool = False) -> str:
    if not values:
        return "—"
    mean, std = float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return f"{mean:+.3f} ± {std:.3f}" if signed else f"{mean:.3f} ± {std:.3f}"


def metric_table(rows: list[dict], starts: list[str]) -> str:
    """Per head: each start's metrics (mean ± std over seeds) and its AU(PRC) difference to the
    random init of its own architecture (paired by seed)."""
    data = per_seed(rows)
    heads = sorted({h for _s, h in data})
    lines = []
    for head in heads:
        lines += [
            f"### {head}",
            "",
            "| start | " + " | ".join(METRICS.values()) + " | Δ AU(PRC) vs own random |",
            "|---" * (len(METRICS) + 2) + "|",
        ]
        for s in starts:
            cell = data.get((s, head))
            if cell is None:
                lines.append(f"| {s} | " + " | ".join("—" for _ in range(len(METRICS) + 1)) + " |")
                continue
            own = data.get((OWN_RANDOM.get(s, ""), head), {}).get("au_prc", {})
            mine = cell["au_prc"]
            diff = [mine[k] - own[k] for k in sorted(mine) if k in own]
            vals = [_ms(list(cell[m].values())) for m in METRICS]
            lines.append(f"| {s} | " + " | ".join(vals) + f" | {_ms(diff, signed=True)} |")
        lines.append("")
    return "\n".join(lines)


def timing_table(stages: list[tuple[str, float, str]], reference: float) -> str:
    """Stage, seconds, ratio to the reference stage, and a note (throughput)."""
    lines = [
        "| stage | s | ratio to compare random_rn18 | note |",
        "|---|---|---|---|",
    ]
    for name, secs, note in stages:
        if math.isnan(secs):  # not run: present already, or reused
            lines.append(f"| {name} | — | — | {note} |")
            continue
        lines.append(f"| {name} | {secs:.1f} | {secs / reference:.2f} | {note} |")
    return "\n".join(lines)


def stage_rows(sample_s: float, trained: list[dict], vit_s: float, cmp_s: dict) -> list:
    """(stage, seconds, note) rows in the order they ran."""
    rows = [("make-sample", sample_s, "skipped: present" if math.isnan(sample_s) else "")]
    for t in trained:
        note = f"{t['steps']} steps x {t['batch']}, "
        if math.isnan(t["pretrain_s"]):
            note += "reused (--reuse)"
        else:
            note += f"{t['steps'] * t['batch'] / t['pretrain_s']:.1f} images/s"
        rows.append((f"pretrain {t['method']}", t["pretrain_s"], note))
        rows.append((f"export {t['method']}", t["export_s"], ""))
    rows.append(("random ViT-Ti: build + import-weights", vit_s, ""))
    for name, secs in cmp_s.items():
        note = "" if name.startswith("(") else "features + probes, all seeds, + one report"
        rows.append((f"compare {name}", secs, note))
    return rows


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sample", type=Path, default=ROOT / "shards" / "sample")
    p.add_argument("--byol-steps", type=int, default=40, help="BYOL pretraining steps (batch 64)")
    p.add_argument("--mae-steps", type=int, default=120, help="MAE pretraining steps (batch 64)")
    p.add_argument("--vit-seed", type=int, default=0, help="seed of the random ViT-Ti init")
    p.add_argument("--seeds", default="0,1,2", help="probe seeds")
    p.add_argument("--linear-epochs", type=int, default=30)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "foundation_sample")
    p.add_argument("--result", type=Path, default=RESULT, help="markdown summary to write")
    p.add_argument("--reuse", action="store_true", help="keep exports already under --out")
    p.add_argument("overrides", nargs="*", help="finetune key=value overrides for every cell")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    command = shlex.join(["python", "bench/foundation_sample.py", *(argv or sys.argv[1:])])
    t_all = time.perf_counter()
    sample_s = math.nan
    if not (args.sample / "manifest.json").is_file():
        t0 = time.perf_counter()
        make_sample(args.sample)
        sample_s = time.perf_counter() - t0
    trained = [
        pretrain_export("byol", args.byol_steps, args.out, args.reuse),
        pretrain_export("mae", args.mae_steps, args.out, args.reuse),
    ]
    exports = {t["method"]: t["export"] for t in trained}
    t0 = time.perf_counter()
    exports["random_vitti"] = random_like(exports["mae"], args.out, args.vit_seed)
    vit_s = time.perf_counter() - t0
    cfg = compare_config(args, exports)
    starts = [s.name for s in cfg.starts]
    report, cmp_s = timed_compare(cfg, command)
    rows = json.loads((report.parent / "results.json").read_text())
    metrics = metric_table(rows, starts)
    stages = stage_rows(sample_s, trained, vit_s, cmp_s)
    timings = timing_table(stages, cmp_s[REFERENCE])
    wall = time.perf_counter() - t_all
    print(metrics + "\n" + timings)
    write_result(args, command, metrics, timings, report, wall)
    return 0


def write_result(
    args: argparse.Namespace, command: str, metrics: str, timings: str, report: Path, wall: float
) -> None:
    """bench/results/foundation_sample.md: command, machine, the tables."""
    threads = torch.get_num_threads()
    lines = [
        "# Random vs BYOL vs MAE starts on the synthetic sample (linear probe, `compare`)",
        "",
        "```",
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', threads)} {command}",
        "```",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs (shared), torch {torch.__version__},"
        f" {threads} threads. Wall time of this invocation: {wall:.0f} s. BYOL: ResNet-18,"
        f" {args.byol_steps} steps; MAE: ViT-Ti/8 at 64 px, {args.mae_steps} steps (batch 64"
        f" each, the sample recipes otherwise). Linear probe {args.linear_epochs} epochs on cached"
        f" features, weighted loss, per-node thresholds, seeds {args.seeds}. Test split."
        f" Full report: `{os.path.relpath(report, ROOT)}`.",
        "",
        "Starts: `random_rn18` (ResNet-18, random init drawn from each probe seed), `byol`,"
        f" `random_vitti` (the MAE export's architecture at random init, seed {args.vit_seed},"
        " one draw for all probe seeds), `mae`; `*_mean` are the same ViTs probed on the mean of"
        " their patch tokens instead of the class token.",
        "",
        "## Test metrics per head (mean ± std over seeds)",
        "",
        metrics,
        "## Stage timings",
        "",
        timings,
        "",
    ]
    args.result.parent.mkdir(parents=True, exist_ok=True)
    args.result.write_text("\n".join(lines))
    print(f"wrote {args.result} (full report: {report})")


if __name__ == "__main__":
    sys.exit(main())
