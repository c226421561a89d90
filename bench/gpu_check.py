"""The helper of `bench/gpu_check.sh`: short pretraining runs on one GPU, summarised in one markdown table.

Rows: BYOL ResNet-50 at 224 px, bf16, channels-last, 8 loader workers, with `transform.device` cpu and
accelerator (images/s and data wait: the Throughput callback's values in the run's CSV log, median and
mean over the steps after the first quarter); MoCo v3 ViT-S/16 (12 heads, as in the paper) on the
accelerator path; a 1-GPU DDP smoke run of the `ssl-benthic pretrain` command itself (strategy ddp,
devices 1, a few steps: its exit status). Each row gives its run's peak GPU memory
(`torch.cuda.max_memory_allocated`). The shards are the synthetic sample drawn at 256 px in a temporary
folder, each image stored several times under new keys, so that 8 workers have whole batches to cut.
Every run is a child process, so its peak memory and CUDA state are its own.

    bash bench/gpu_check.sh                      # the way to run it (checks for a GPU, makes .venv)
    .venv/bin/python bench/gpu_check.py [--steps 60 --workers 8 --out bench/results/gpu_check.md]
    .venv/bin/python bench/gpu_check.py --cpu-dry-run   # the same orchestration, tiny, on a CPU
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
NO_GPU = 2  # exit status without a GPU (as gpu_check.sh's own check)
PEAK = "peak_memory.json"


@dataclass
class Case:
    """One run: what the table calls it, its recipe and overrides, and how it is launched."""

    label: str
    device: str
    config: str
    overrides: list[str] = field(default_factory=list)
    cli: bool = False  # `ssl-benthic pretrain` itself (the smoke run) rather than this helper


@dataclass
class Result:
    """What a run gives the table."""

    status: int
    seconds: float
    images_per_s: float | None = None
    data_wait: float | None = None
    peak_gib: float | None = None


# ----- shards -----------------------------------------------------------------------------------


def _raw_images(folder: Path) -> list[tuple[str, bytes]]:
    """(key, JPEG bytes) of every sample of a shard folder, read into memory as stored."""
    from ssl_benthic.data.shards.reader import shard_urls

    out = []
    for url in shard_urls(folder):
        with tarfile.open(url) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".jpg"):
                    data = tar.extractfile(member).read()
                    out.append((member.name.removesuffix(".jpg"), data))
    return out


def draw_shards(root: Path, drawn: int, copies: int) -> Path:
    """The sample's unlabelled images at 256 px, each stored `copies` times, in shards of 64."""
    from ssl_benthic.data.sample.make_sample import make_sample
    from ssl_benthic.data.shards.format import ShardSample
    from ssl_benthic.data.shards.writer import write_shards

    make_sample(root / "sample", n_unlabelled=drawn, n_labelled=0, size=256, max_per_shard=64)
    samples = [
        ShardSample(f"{key}_c{c}", data, "jpg", {})
        for key, data in _raw_images(root / "sample" / "unlabelled")
        for c in range(copies)
    ]
    write_shards(samples, root / "shards", name="gpu", max_per_shard=64)
    return root / "shards"


# ----- the runs ---------------------------------------------------------------------------------


def cases(args: argparse.Namespace, shards: Path, out: Path) -> list[Case]:
    """The four runs, with the overrides that make them short, single-GPU and self-contained."""
    steps, batch = args.steps, args.batch_size
    common = [
        f"data.shards={shards}",
        f"data.num_workers={args.workers}",
        f"data.batch_size={batch}",
        f"data.epoch_samples={steps * batch}",
        "data.shuffle_buffer=1000",
        "trainer.devices=1",
        "trainer.num_nodes=1",
        "trainer.max_epochs=1",
        f"trainer.max_steps={steps}",
        "trainer.log_every_n_steps=1",
        "trainer.checkpoint_every_n_steps=1000000",
        "monitor.knn=null",
        "logger.tensorboard=false",
    ]
    if args.cpu_dry_run:  # tiny models, CPU, full precision: checks this script, not the GPU
        common += [
            "trainer.accelerator=cpu",
            "trainer.precision=32-true",
            "transform.input_size=64",
        ]
        byol_net = ["backbone.name=resnet18", "method.params.proj_hidden_dim=64"]
        byol_net += ["method.params.pred_hidden_dim=64", "method.params.proj_dim=32"]
        vit = ["backbone.name=vit_tiny_patch16_224", "backbone.img_size=64"]
    else:
        common += ["trainer.accelerator=gpu", "trainer.precision=bf16-mixed"]
        byol_net = []
        vit = ["backbone.name=vit_small_patch16_224", "backbone.kwargs={num_heads: 12}"]
    byol = "configs/pretrain/byol.yaml"
    byol_run = [*common, *byol_net, "trainer.channels_last=true"]
    return [
        Case(
            "BYOL ResNet-50 224 px, bf16, channels-last",
            "cpu",
            byol,
            [*byol_run, "trainer.strategy=auto", "transform.device=cpu"]
            + [f"output_dir={out / 'byol_cpu'}"],
        ),
        Case(
            "BYOL ResNet-50 224 px, bf16, channels-last",
            "accelerator",
            byol,
            [*byol_run, "trainer.strategy=auto", "transform.device=accelerator"]
            + [f"output_dir={out / 'byol_accelerator'}"],
        ),
        Case(
            "MoCo v3 ViT-S/16 224 px, bf16",
            "accelerator",
            "configs/pretrain/mocov3.yaml",
            [*common, *vit, "trainer.strategy=auto", "transform.device=accelerator"]
            + [f"output_dir={out / 'mocov3'}"],
        ),
        Case(
            f"DDP smoke: `ssl-benthic pretrain` strategy ddp, devices 1, {args.smoke_steps} steps",
            "accelerator",
            byol,
            [*byol_run, "trainer.strategy=ddp", "transform.device=accelerator"]
            + [f"trainer.max_steps={args.smoke_steps}", f"output_dir={out / 'ddp_smoke'}"],
            cli=True,
        ),
    ]


def run_one(config: str, overrides: list[str]) -> int:
    """In this process: one pretraining run, then its peak GPU memory into OUTPUT_DIR/peak_memory.json."""
    from ssl_benthic.core.config import load_config
    from ssl_benthic.pretrain.config import PretrainConfig
    from ssl_benthic.pretrain.run import pretrain

    cfg = load_config(PretrainConfig, config, overrides)
    out = pretrain(cfg)
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    (out / PEAK).write_text(json.dumps({"peak_bytes": peak}))
    return 0


def _throughput(output_dir: Path) -> tuple[float | None, float | None]:
    """Median images/s and mean data wait of the logged steps after the first quarter."""
    logs = sorted(output_dir.glob("logs/version_*/metrics.csv"))
    if not logs:
        return None, None
    rows = [r for r in csv.DictReader(logs[-1].open()) if r.get("images_per_s")]
    rows = rows[len(rows) // 4 :] or rows
    if not rows:
        return None, None
    rates = [float(r["images_per_s"]) for r in rows]
    waits = [float(r["data_wait"]) for r in rows]
    return statistics.median(rates), statistics.fmean(waits)


def launch(case: Case, log: Path) -> Result:
    """Run a case as a child process (its output to `log`) and read what it left behind."""
    if case.cli:
        command = [str(Path(sys.executable).with_name("ssl-benthic")), "pretrain"]
        command += ["--config", case.config, *case.overrides]
    else:
        command = [sys.executable, __file__, "--run", case.config, *case.overrides]
    start = time.perf_counter()
    with log.open("w") as f:
        status = subprocess.run(command, cwd=REPO, stdout=f, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - start
    output_dir = Path(
        next(o for o in case.overrides if o.startswith("output_dir=")).split("=", 1)[1]
    )
    rate, wait = _throughput(output_dir)
    peak = None
    if (output_dir / PEAK).is_file():
        peak_bytes = json.loads((output_dir / PEAK).read_text())["peak_bytes"]
        peak = peak_bytes / 2**30 if peak_bytes is not None else None
    return Result(status, seconds, rate, wait, peak)


# ----- the table ----------------------------------------------------------------------------------


def _fmt(value: float | None, pattern: str) -> str:
    return "n/a" if value is None else pattern.format(value)


def table(args: argparse.Namespace, results: list[tuple[Case, Result]]) -> str:
    """One markdown table, headed by the machine and the settings."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU (CPU dry run)"
    when = datetime.date.today().isoformat()
    lines = [
        f"# GPU check (`bash bench/gpu_check.sh`), {when}",
        "",
        f"{gpu}; torch {torch.__version__}; batch {args.batch_size}, {args.steps} steps, "
        f"{args.workers} loader workers, sample shards at 256 px. images/s: median, data wait: mean, "
        "over the logged steps after the first quarter; peak: torch.cuda.max_memory_allocated.",
        "",
        "| run | transform.device | images/s | data wait | peak GPU memory | wall s | exit |",
        "|---|---|---|---|---|---|---|",
    ]
    for case, r in results:
        lines.append(
            f"| {case.label} | {case.device} | {_fmt(r.images_per_s, '{:.0f}')} | "
            f"{_fmt(r.data_wait, '{:.2f}')} | {_fmt(r.peak_gib, '{:.1f} GiB')} | {r.seconds:.0f} | "
            f"{r.status} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--run"]:
        return run_one(argv[1], argv[2:])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--smoke-steps", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--drawn", type=int, default=512, help="sample images drawn at 256 px")
    p.add_argument("--copies", type=int, default=8, help="times each drawn image is stored")
    p.add_argument("--out", default=None, help="default: bench/results/gpu_check.md (GPU runs)")
    p.add_argument("--logs", default=None, help="keep the runs' output here (default: a temp dir)")
    p.add_argument(
        "--cpu-dry-run", action="store_true", help="tiny runs on a CPU: checks the script"
    )
    args = p.parse_args(argv)
    if args.cpu_dry_run:  # a few tiny steps; the table is printed, not stored, unless --out says
        args.steps, args.smoke_steps, args.batch_size, args.workers = 4, 2, 8, 2
        args.drawn, args.copies = 32, 2
    elif args.out is None:
        args.out = "bench/results/gpu_check.md"
    if not args.cpu_dry_run and not torch.cuda.is_available():
        print("gpu_check: no GPU: torch.cuda.is_available() is False", file=sys.stderr)
        return NO_GPU
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.logs) if args.logs else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        shards = draw_shards(root, args.drawn, args.copies)
        print(f"shards drawn in {time.perf_counter() - start:.0f} s: {shards}", flush=True)
        results = []
        for i, case in enumerate(cases(args, shards, root / "runs")):
            result = launch(case, root / f"run{i}.log")
            print(
                f"{case.label} [{case.device}]: exit {result.status}, {result.seconds:.0f} s",
                flush=True,
            )
            if result.status != 0:
                print((root / f"run{i}.log").read_text()[-3000:], file=sys.stderr)
            results.append((case, result))
    text = table(args, results)
    print("\n" + text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    return 0 if all(r.status == 0 for _, r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
