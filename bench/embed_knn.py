"""`ssl-benthic embed` + `--knn` on the synthetic sample for random, BYOL and MAE starts: kNN top-1
per head and depth, and embedding throughput as a ratio to the random ResNet-18 start.

The starts are those of bench/foundation_sample.py (its exports under --from): a random ResNet-18
(`--weights random --model resnet18`), the BYOL export, the random ViT-Ti import and the MAE
export, the ViTs on their class token and on the mean of their patch tokens. Each start embeds the
query split (`embed`, timed: images/s) and is scored with `--knn` against the bank split embedded
with the same start (`knn_against`, timed: bank images/s including the scoring), the functions
`ssl-benthic embed` calls; `--check-cli` also runs the command itself for the first start and
checks that its knn.json is the same. Writes bench/results/embed_knn.md.

    OMP_NUM_THREADS=1 python bench/embed_knn.py [--from runs/bench/foundation_sample]
        [--query test --bank train] [--out runs/bench/embed_knn] [--check-cli]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

from ssl_benthic.embed.inputs import ShardSource
from ssl_benthic.embed.knn import knn_against
from ssl_benthic.embed.run import embed
from ssl_benthic.embed.start import load_start
from ssl_benthic.pretrain.config import KnnMonitorConfig

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "bench" / "results" / "embed_knn.md"
MONITOR = KnnMonitorConfig()
REFERENCE = "random_rn18"


def starts(exports: Path) -> list[dict]:
    """name, --weights, --model, --pool of each start (exports: foundation_sample's --out)."""
    out = [{"name": "random_rn18", "weights": "random", "model": "resnet18", "pool": "cls"}]
    for name, folder in (
        ("byol", "byol/export"),
        ("random_vitti", "random_vitti"),
        ("mae", "mae/export"),
    ):
        out.append({"name": name, "weights": str(exports / folder), "model": None, "pool": "cls"})
    for name in ("random_vitti", "mae"):
        vit = next(s for s in out if s["name"] == name)
        out.append({**vit, "name": f"{name}_mean", "pool": "mean"})
    return out


def _rel(path: str | Path) -> str:
    """`path` relative to the repository root when it lies under it (commands run from there)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def cli_args(s: dict, args: argparse.Namespace) -> list[str]:
    """The `ssl-benthic embed` command line of start `s`, run from the repository root."""
    weights = s["weights"] if s["model"] else _rel(s["weights"])
    cmd = ["ssl-benthic", "embed", "--weights", weights]
    if s["model"]:
        cmd += ["--model", s["model"]]
    cmd += ["--pool", s["pool"], "--img-size", str(args.img_size)]
    cmd += ["--shards", _rel(args.sample / args.query)]
    cmd += ["--out", _rel(args.out / s["name"]), "--knn", _rel(args.sample / args.bank)]
    return cmd + ["--batch-size", str(args.batch_size), "--device", "cpu", "--overwrite"]


def run_start(s: dict, args: argparse.Namespace) -> dict:
    """Embed the query split and score kNN against the bank split; timings and rows."""
    t0 = time.perf_counter()
    start = load_start(s["weights"], None, s["pool"], args.img_size, s["model"], 0)
    t1 = time.perf_counter()
    record = embed(
        ShardSource(args.sample / args.query),
        start,
        args.out / s["name"],
        batch_size=args.batch_size,
        device="cpu",
        overwrite=True,
    )
    t2 = time.perf_counter()
    rows = knn_against(
        args.out / s["name"],
        args.sample / args.bank,
        start,
        args.batch_size,
        "cpu",
        MONITOR.k,
        MONITOR.temperature,
    )
    t3 = time.perf_counter()
    bank = rows[0]["bank"] if rows else 0
    return {
        **s,
        "load_s": t1 - t0,
        "embed_s": t2 - t1,
        "knn_s": t3 - t2,
        "count": record["count"],
        "bank_images": ShardSource(args.sample / args.bank).count(),
        "bank_labelled": bank,
        "features": start.record["num_features"],
        "timm_name": start.record["timm_name"],
        "rows": rows,
        "start": start,
    }


def best_embed_times(results: list[dict], args: argparse.Namespace) -> None:
    """Embed the query split `args.repeats - 1` more times per start, in turns (so a busy spell of
    the shared machine hits every start alike), and keep each start's fastest time."""
    for _ in range(args.repeats - 1):
        for r in results:
            t0 = time.perf_counter()
            embed(
                ShardSource(args.sample / args.query),
                r["start"],
                args.out / r["name"],
                batch_size=args.batch_size,
                device="cpu",
                overwrite=True,
            )
            r["embed_s"] = min(r["embed_s"], time.perf_counter() - t0)


def warm_up() -> None:
    """One untimed forward pass, so the first start does not pay the process's one-time costs."""
    start = load_start("random", None, "cls", 64, "resnet18", 0)
    with torch.inference_mode():
        start.backbone(torch.zeros(64, 3, 64, 64))


def check_cli(s: dict, result: dict, args: argparse.Namespace) -> str:
    """Run `ssl-benthic embed` itself for start `s` into another folder; its knn.json rows must be
    the ones the functions gave."""
    cmd = cli_args(s, args)
    out = _rel(args.out / f"{s['name']}_cli")
    cmd[cmd.index("--out") + 1] = out
    exe = Path(sys.executable).with_name("ssl-benthic")
    subprocess.run(
        [str(exe), *cmd[1:]], check=True, cwd=ROOT, env=os.environ, stdout=subprocess.DEVNULL
    )
    rows = json.loads((ROOT / out / "knn.json").read_text())["rows"]
    if rows != result["rows"]:
        raise SystemExit(f"ssl-benthic embed gave other kNN rows than the functions: {out}")
    return f"`{shlex.join(cmd[: cmd.index('--out')])} --out {out} ...` gave the same kNN rows."


def knn_table(results: list[dict]) -> str:
    """Rows (head, depth), a column per start: kNN top-1 of the query split."""
    names = [r["name"] for r in results]
    keys = [(row["head"], row["depth"], row["classes"], row["query"]) for row in results[0]["rows"]]
    lines = [
        "| head | depth | classes | queries | " + " | ".join(names) + " |",
        "|---" * (4 + len(names)) + "|",
    ]
    for head, depth, classes, query in keys:
        cells = []
        for r in results:
            hit = [x for x in r["rows"] if (x["head"], x["depth"]) == (head, depth)]
            cells.append(f"{hit[0]['top1']:.3f}" if hit else "—")
        lines.append(f"| {head} | {depth} | {classes} | {query} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def speed_table(results: list[dict]) -> str:
    """Per start: features, load s, embed images/s and kNN-bank images/s, with ratios."""
    ref = next(r for r in results if r["name"] == REFERENCE)
    ref_e, ref_k = ref["count"] / ref["embed_s"], ref["bank_images"] / ref["knn_s"]
    lines = [
        "| start | timm model | features | load s | embed images/s | ratio | kNN bank images/s | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        e, k = r["count"] / r["embed_s"], r["bank_images"] / r["knn_s"]
        lines.append(
            f"| {r['name']} | {r['timm_name']} | {r['features']} | {r['load_s']:.1f} | "
            f"{e:.1f} | {e / ref_e:.2f} | {k:.1f} | {k / ref_k:.2f} |"
        )
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sample", type=Path, default=ROOT / "shards" / "sample")
    p.add_argument(
        "--from",
        dest="exports",
        type=Path,
        default=ROOT / "runs" / "bench" / "foundation_sample",
        help="bench/foundation_sample.py's --out (its exports)",
    )
    p.add_argument("--query", default="test", help="split embedded and scored")
    p.add_argument("--bank", default="train", help="labelled split the kNN votes from")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--img-size", type=int, default=64, help="input size (the sample's)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "embed_knn")
    p.add_argument("--result", type=Path, default=RESULT)
    p.add_argument("--repeats", type=int, default=3, help="query embeds per start (best kept)")
    p.add_argument(
        "--check-cli", action="store_true", help="also run `ssl-benthic embed` for the first start"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    command = shlex.join(["python", "bench/embed_knn.py", *(argv or sys.argv[1:])])
    warm_up()
    results = []
    for s in starts(args.exports):
        results.append(run_start(s, args))
        r = results[-1]
        print(f"{s['name']}: embed {r['embed_s']:.1f} s, kNN {r['knn_s']:.1f} s", flush=True)
    best_embed_times(results, args)
    checked = check_cli(starts(args.exports)[0], results[0], args) if args.check_cli else ""
    knn, speed = knn_table(results), speed_table(results)
    print(knn + "\n\n" + speed + ("\n" + checked if checked else ""))
    write_result(args, command, results, knn, speed, checked)
    return 0


def write_result(
    args: argparse.Namespace, command: str, results: list, knn: str, speed: str, checked: str
) -> None:
    """bench/results/embed_knn.md: command, per-start CLI lines, the tables."""
    r0 = results[0]
    lines = [
        "# `ssl-benthic embed --knn` on the synthetic sample: random vs BYOL vs MAE starts",
        "",
        "```",
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', torch.get_num_threads())} {command}",
        "```",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs (shared), torch {torch.__version__},"
        f" {torch.get_num_threads()} threads, CPU. Query: `{args.query}` ({r0['count']} images);"
        f" bank: `{args.bank}` ({r0['bank_images']} images); k = {MONITOR.k}, temperature"
        f" {MONITOR.temperature} (the pretraining kNN monitor's); batch {args.batch_size},"
        f" {args.img_size} px."
        " Exports from bench/foundation_sample.py (see results/foundation_sample.md for their"
        " step budgets). A query class the bank lacks counts as a miss.",
        "",
        "Each start is the command",
        "",
        "```",
        *(shlex.join(cli_args(r, args)) for r in results),
        "```",
        "",
        "## kNN top-1 per head and depth",
        "",
        knn,
        "",
        "## Throughput (ratios to random_rn18 in the same process)",
        "",
        f"`embed images/s`: the query split through `embed` (read, decode, transform, forward,"
        f" chunk writes), best of {args.repeats} runs taken in turns over the starts. `kNN bank images/s`: the bank split embedded in memory plus the scoring.",
        "",
        speed,
        "",
        checked,
        "",
    ]
    args.result.parent.mkdir(parents=True, exist_ok=True)
    args.result.write_text("\n".join(lines))
    print(f"wrote {args.result}")


if __name__ == "__main__":
    sys.exit(main())
