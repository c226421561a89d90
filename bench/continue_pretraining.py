"""Do an import's features survive continued pretraining? kNN (and linear) probes on the sample before
and after N steps of Barlow Twins from an imported Barlow Twins encoder, for a few learning rates,
warm-ups and head initialisations (the projector from the import, or fresh).

The import is a Barlow Twins run on the sample (`bench/ssl_sample.py`'s, or one made here), imported
with `ssl-benthic import-weights` like a published checkpoint, so its projector is kept. Users of
other toolkits report kNN collapsing when they continue from a public backbone with fresh heads: the
fresh projector's first gradients are large and random.

    OMP_NUM_THREADS=1 python bench/continue_pretraining.py --steps 100 \\
        --out runs/bench_continue --results bench/results/continue_pretraining.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from ssl_sample import ROOT, features, labels, load_split, probe

from ssl_benthic.core.config import load_config
from ssl_benthic.data.sample.make_sample import make_sample
from ssl_benthic.pretrain.config import PretrainConfig
from ssl_benthic.pretrain.methods.base import eval_transform
from ssl_benthic.pretrain.run import pretrain
from ssl_benthic.weights.backbones import create_backbone
from ssl_benthic.weights.import_weights import import_weights

RECIPE = ROOT / "configs" / "pretrain" / "barlowtwins_sample.yaml"
# (name, learning rate factor of the recipe's, warm-up steps, heads)
SETTINGS = [
    ("recipe lr, no warm-up, import heads", 1.0, 0, "import"),
    ("recipe lr, no warm-up, fresh heads", 1.0, 0, "fresh"),
    ("recipe lr, 20-step warm-up, fresh heads", 1.0, 20, "fresh"),
    ("0.1x lr, 20-step warm-up, import heads", 0.1, 20, "import"),
    ("0.1x lr, 20-step warm-up, fresh heads", 0.1, 20, "fresh"),
]
HEADS = (("substrate", 3), ("biota", 2))


def source_run(args: argparse.Namespace) -> Path:
    """A Barlow Twins checkpoint on the sample: the one given, or `--source-steps` made here."""
    if args.source is not None:
        return Path(args.source)
    overrides = [
        f"data.shards={args.sample / 'unlabelled'}",
        f"output_dir={args.out / 'source'}",
        f"trainer.max_steps={args.source_steps}",
        "monitor.knn=null",
        "logger.tensorboard=false",
    ]
    pretrain(load_config(PretrainConfig, RECIPE, overrides), overwrite=True)
    return args.out / "source" / "checkpoints" / "last.ckpt"


def continued(args: argparse.Namespace, imported: Path, lr: float, warmup: int, heads: str) -> Path:
    """Continue `args.steps` steps from the import; the export folder of the result."""
    base = load_config(PretrainConfig, RECIPE)
    out = args.out / f"lr{lr:g}_w{warmup}_{heads}"
    overrides = [
        f"data.shards={args.sample / 'unlabelled'}",
        f"output_dir={out}",
        f"backbone.weights={imported}",
        f"method.init_heads={heads}",
        f"optimizer.lr={base.optimizer.lr * lr}",
        f"optimizer.warmup_steps={warmup}",
        f"trainer.max_steps={args.steps}",
        "monitor.knn=null",
        "logger.tensorboard=false",
    ]
    pretrain(load_config(PretrainConfig, RECIPE, overrides), overwrite=True)
    export = out / "export"
    import_weights(out / "checkpoints" / "last.ckpt", export, overwrite=True)
    return export


def scores(weights: Path, splits: dict, ys: dict) -> list[tuple[float, float]]:
    """(linear, kNN) top-1 per head of the backbone at `weights`."""
    backbone = create_backbone("resnet18", weights=weights).eval()
    feats = {name: features(backbone, split) for name, split in splits.items()}
    return [probe(feats, ys[head])[:2] for head, _ in HEADS]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sample", type=Path, default=ROOT / "shards" / "sample")
    p.add_argument("--source", default=None, help="a Barlow Twins checkpoint (default: make one)")
    p.add_argument("--source-steps", type=int, default=300)
    p.add_argument("--steps", type=int, default=100, help="steps of continued pretraining")
    p.add_argument("--out", type=Path, default=Path("runs/bench_continue"))
    p.add_argument("--results", type=Path, default=None)
    args = p.parse_args(argv)
    if not (args.sample / "manifest.json").is_file():
        make_sample(args.sample)
    torch.manual_seed(0)
    imported = args.out / "import"
    import_weights(source_run(args), imported, overwrite=True)
    transform = eval_transform(load_config(PretrainConfig, RECIPE).transform)
    splits = {name: load_split(args.sample / name, transform) for name in ("train", "val", "test")}
    ys = {head: {n: labels(s, head, d) for n, s in splits.items()} for head, d in HEADS}
    rows = [("the import (before)", scores(imported, splits, ys))]
    for name, lr, warmup, heads in SETTINGS:
        rows.append((name, scores(continued(args, imported, lr, warmup, heads), splits, ys)))
        print(render(rows, args), flush=True)
    text = render(rows, args)
    print(text)
    if args.results is not None:
        args.results.write_text(text)
    return 0


def render(rows: list, args: argparse.Namespace) -> str:
    before = rows[0][1]
    lines = [
        f"# Continued Barlow Twins pretraining from an import: {args.steps} steps on the sample",
        "",
        f"Command: `python bench/continue_pretraining.py {' '.join(sys.argv[1:])}`  ",
        "Probes on frozen features (test top-1; linear probe C on val, cosine kNN k = 20); the change",
        "against the import in brackets.",
        "",
        "| setting | " + " | ".join(f"{h} linear | {h} kNN" for h, _ in HEADS) + " |",
        "|---" * (1 + 2 * len(HEADS)) + "|",
    ]
    for name, values in rows:
        cells = []
        for (lin, knn), (lin0, knn0) in zip(values, before, strict=True):
            cells += [f"{lin:.3f} ({lin - lin0:+.3f})", f"{knn:.3f} ({knn - knn0:+.3f})"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
