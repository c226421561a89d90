"""Pretrain each method on the synthetic sample (CPU, a fixed budget), then probe frozen features.

For every method: `pretrain` with `configs/pretrain/<method>_sample.yaml` (stopped after `--minutes` if its
`max_steps` are not reached first), export the backbone, and fit on the labelled train split / score on the
test split a linear probe (sklearn LogisticRegression on standardised features) and a cosine kNN (k = 20,
lightly's `knn_predict`) for the substrate and biota heads at fixed depths. The same architecture with random
init is the baseline; the majority class is shown too. Prints a table and writes bench/results/ssl_sample.md.

    python bench/ssl_sample.py [--minutes 3 --methods byol,simclr --sample shards/sample]
    python bench/ssl_sample.py --minutes 0.2 --max-steps 3 --methods byol   # smoke run
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ssl_benthic.core.config import load_config
from ssl_benthic.data.sample.make_sample import make_sample
from ssl_benthic.data.shards.reader import iter_samples
from ssl_benthic.pretrain.config import PretrainConfig
from ssl_benthic.pretrain.knn_monitor import embed, knn_top1, label_at_depth
from ssl_benthic.pretrain.methods.base import eval_transform
from ssl_benthic.pretrain.run import pretrain
from ssl_benthic.weights.backbones import create_backbone
from ssl_benthic.weights.export import export_backbone

ROOT = Path(__file__).resolve().parents[1]
PROBE_C = (0.001, 0.01, 0.1, 1.0)
METHODS = "byol,mocov2,mocov3,dino,barlowtwins,simclr,simsiam"


class StopAfter(pl.Callback):
    """Stops training once `minutes` of wall time have passed (checked after every step)."""

    def __init__(self, minutes: float) -> None:
        self.seconds, self.start = minutes * 60, time.perf_counter()

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if time.perf_counter() - self.start > self.seconds:
            trainer.should_stop = True


@dataclass
class Split:
    images: torch.Tensor
    metas: list[dict]


def load_split(path: Path, transform) -> Split:
    images, metas = [], []
    for _key, image, meta in iter_samples(path):
        images.append(transform(image))
        metas.append(meta)
    return Split(torch.stack(images), metas)


def labels(split: Split, head: str, depth: int) -> list[str | None]:
    return [label_at_depth(m, head, depth) for m in split.metas]


def _indexed(y: list, index: dict) -> tuple[list[int], np.ndarray]:
    keep = [i for i, v in enumerate(y) if v is not None and v in index]
    return keep, np.array([index[y[i]] for i in keep])


def probe(feats: dict[str, torch.Tensor], ys: dict[str, list]) -> tuple[float, float, float]:
    """(linear top-1, kNN top-1, majority-class top-1) on test, known labels only.

    The logistic-regression probe picks its inverse regularisation C on the val split (512 features
    and a few hundred images overfit at the default C = 1), then scores test.
    """
    classes = sorted({v for v in ys["train"] if v is not None})
    index = {c: j for j, c in enumerate(classes)}
    (tr, ytr), (va, yva), (te, yte) = (_indexed(ys[k], index) for k in ("train", "val", "test"))
    xtr, xva, xte = feats["train"][tr].numpy(), feats["val"][va].numpy(), feats["test"][te].numpy()

    def fit(c: float):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000))
        return clf.fit(xtr, ytr)

    best_c = max(PROBE_C, key=lambda c: (fit(c).predict(xva) == yva).mean())
    linear = float((fit(best_c).predict(xte) == yte).mean())
    knn = knn_top1(
        torch.from_numpy(xtr),
        torch.from_numpy(ytr),
        torch.from_numpy(xte),
        torch.from_numpy(yte),
        len(classes),
        k=20,
        t=0.1,
    )
    majority = Counter(ytr.tolist()).most_common(1)[0][0]
    return linear, knn, float((yte == majority).mean())


def features(backbone: torch.nn.Module, split: Split) -> torch.Tensor:
    return embed(backbone, split.images, 128, torch.device("cpu")).cpu()


def train_method(method: str, args: argparse.Namespace) -> tuple[PretrainConfig, Path, int, float]:
    overrides = [
        f"data.shards={args.sample / 'unlabelled'}",
        f"output_dir={args.out / method}",
        "monitor.knn=null",
        "logger.tensorboard=false",
    ]
    if args.max_steps is not None:
        overrides.append(f"trainer.max_steps={args.max_steps}")
    if args.seed is not None:
        overrides.append(f"trainer.seed={args.seed}")
    cfg = load_config(
        PretrainConfig, ROOT / "configs" / "pretrain" / f"{method}_sample.yaml", overrides
    )
    ckpt = Path(cfg.output_dir) / "checkpoints" / "last.ckpt"
    start = time.perf_counter()
    if not (args.reuse and ckpt.is_file()):
        pretrain(cfg, extra_callbacks=[StopAfter(args.minutes)], overwrite=True)
    minutes = (time.perf_counter() - start) / 60
    export = export_backbone(ckpt, Path(cfg.output_dir) / "export", overwrite=True)
    step = int(torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"])
    return cfg, export, step, minutes


def sample_recipes() -> list[str]:
    """Methods with a sample recipe, configs/pretrain/<method>_sample.yaml."""
    folder = ROOT / "configs" / "pretrain"
    return sorted(f.name.removesuffix("_sample.yaml") for f in folder.glob("*_sample.yaml"))


def heads(spec: str) -> list[tuple[str, int]]:
    return [(h.split(":")[0], int(h.split(":")[1])) for h in spec.split(",")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sample", type=Path, default=ROOT / "shards" / "sample")
    p.add_argument(
        "--methods", default=METHODS, help="comma-separated, each with a <method>_sample.yaml"
    )
    p.add_argument("--minutes", type=float, default=3.0, help="training budget per method")
    p.add_argument("--max-steps", type=int, default=None, help="override the configs' max_steps")
    p.add_argument("--heads", default="substrate:3,biota:2", help="head:depth pairs to probe")
    p.add_argument(
        "--seed", type=int, default=None, help="pretraining seed (default: the recipe's)"
    )
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_ssl_sample")
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "ssl_sample.md")
    p.add_argument(
        "--reuse", action="store_true", help="probe existing checkpoints under --out, no training"
    )
    args = p.parse_args(argv)
    known = sample_recipes()
    unknown = [m for m in args.methods.split(",") if m not in known]
    if unknown:
        p.error(
            f"--methods: no configs/pretrain/<method>_sample.yaml for {', '.join(unknown)}; "
            f"known: {', '.join(known)}"
        )
    if not (args.sample / "unlabelled").is_dir():
        make_sample(args.sample)
    rows = []
    for method in args.methods.split(","):
        cfg, export, step, minutes = train_method(method, args)
        transform = eval_transform(cfg.transform)
        splits = {k: load_split(args.sample / k, transform) for k in ("train", "val", "test")}
        torch.manual_seed(0)
        models = {
            "ssl": create_backbone(cfg.backbone.name, weights=export),
            "random": create_backbone(cfg.backbone.name),
        }
        feats = {k: {s: features(m, sp) for s, sp in splits.items()} for k, m in models.items()}
        for head, depth in heads(args.heads):
            ys = {s: labels(sp, head, depth) for s, sp in splits.items()}
            ssl, rnd = probe(feats["ssl"], ys), probe(feats["random"], ys)
            rows.append((method, cfg.backbone.name, step, minutes, f"{head}@{depth}", ssl, rnd))
            print(
                f"{method} {head}@{depth}: linear {ssl[0]:.3f} vs random {rnd[0]:.3f}, "
                f"kNN {ssl[1]:.3f} vs random {rnd[1]:.3f}, majority {ssl[2]:.3f}",
                flush=True,
            )
    table = render(rows, args)
    print(table)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(table)
    return 0


def render(rows: list, args: argparse.Namespace) -> str:
    lines = [
        "# SSL pretraining on the synthetic sample: frozen-feature probes vs random init",
        "",
        f"Command: `python bench/ssl_sample.py --minutes {args.minutes} --methods {args.methods}"
        + (f" --max-steps {args.max_steps}" if args.max_steps is not None else "")
        + (f" --seed {args.seed}" if args.seed is not None else "")
        + (f" --heads {args.heads} --out {args.out}" + (" --reuse" if args.reuse else ""))
        + "`  ",
        f"Machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}. "
        "Probes fit on the labelled train split, scored on the test split (top-1); the linear probe's C "
        f"is chosen on the val split from {PROBE_C}.",
        "",
        "| method | backbone | steps | min | head@depth | linear | random linear | margin | kNN | random kNN | margin | majority |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, bb, step, minutes, head, ssl, rnd in rows:
        lines.append(
            f"| {method} | {bb} | {step} | {'reused' if args.reuse else f'{minutes:.1f}'} | {head} | {ssl[0]:.3f} | {rnd[0]:.3f} | "
            f"{ssl[0] - rnd[0]:+.3f} | {ssl[1]:.3f} | {rnd[1]:.3f} | {ssl[1] - rnd[1]:+.3f} | {ssl[2]:.3f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
