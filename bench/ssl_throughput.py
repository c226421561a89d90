"""Training images/s of `ssl-benthic pretrain` against a minimal hand-written loop, on CPU, as a ratio.

Both read the same shards with the same reader and BYOL transform, and train the same model (timm
backbone + lightly BYOL heads and loss, SGD, `update_momentum`) at the same batch size. The hand loop is
plain PyTorch: no Lightning, no logging, no checkpoints, no schedules. Runs alternate (hand, pretrain,
hand, ...) and the medians are compared, so a busy machine affects both alike. Target: ratio >= 0.9.

    python bench/ssl_throughput.py [--steps 30 --warmup 5 --batch-size 32 --size 64 --repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from lightly.models.utils import update_momentum

from ssl_benthic.core.config import from_dict
from ssl_benthic.data.sample.make_sample import make_sample
from ssl_benthic.data.shards.reader import make_loader
from ssl_benthic.pretrain.config import PretrainConfig
from ssl_benthic.pretrain.methods import get_method
from ssl_benthic.pretrain.run import pretrain


def recipe(args: argparse.Namespace, shards: Path, out: Path) -> PretrainConfig:
    return from_dict(
        PretrainConfig,
        {
            "method": {
                "name": "byol",
                "params": {"proj_hidden_dim": 1024, "proj_dim": 128, "pred_hidden_dim": 1024},
            },
            "backbone": {"name": args.backbone},
            "data": {
                "shards": str(shards),
                "batch_size": args.batch_size,
                "num_workers": args.num_workers,
                "shuffle_buffer": 200,
                "epoch_samples": args.batch_size * (args.steps + args.warmup),
            },
            "transform": {"input_size": args.size},
            "optimizer": {"name": "sgd", "lr": 0.1, "warmup_steps": 0},
            "trainer": {
                "accelerator": "cpu",
                "devices": 1,
                "max_epochs": 1,
                "log_every_n_steps": 10,
                "checkpoint_every_n_steps": 10**6,
                "keep_last_k": 1,
            },
            "logger": {"csv": True, "tensorboard": True},
            "output_dir": str(out),
        },
    )


class StepTimer(pl.Callback):
    """Wall time from the start of step `warmup` to the end of the last step."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end, self.steps = warmup, 0.0, 0.0, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx >= self.warmup:
            self.steps += 1
            self.end = time.perf_counter()


def run_pretrain(cfg: PretrainConfig, warmup: int) -> float:
    timer = StepTimer(warmup)
    pretrain(cfg, extra_callbacks=[timer])
    return timer.steps * cfg.data.batch_size / (timer.end - timer.start)


def run_hand_loop(cfg: PretrainConfig, warmup: int) -> float:
    """The same lightly parts in a bare loop: forward, loss, backward, SGD step, momentum update."""
    method_cls = get_method(cfg.method.name)
    model = method_cls(cfg)
    loader = make_loader(
        cfg.data.shards,
        batch_size=cfg.data.batch_size,
        transform=method_cls.build_transform(cfg.transform),
        num_workers=cfg.data.num_workers,
        shuffle_buffer=cfg.data.shuffle_buffer,
        epoch_samples=cfg.data.epoch_samples,
        rank=0,
        world_size=1,
    )
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    start, steps = 0.0, 0
    for i, (views, _metas) in enumerate(loader):
        if i == warmup:
            start = time.perf_counter()
        loss = model.compute_loss(list(views))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for student, teacher in model.teacher_pairs():
                update_momentum(student, teacher, m=0.99)
        if i >= warmup:
            steps += 1
    return steps * cfg.data.batch_size / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--size", type=int, default=64, help="input size in pixels")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        n = args.batch_size * (args.steps + args.warmup)
        make_sample(Path(tmp) / "sample", n_unlabelled=n, n_labelled=0, size=args.size)
        shards = Path(tmp) / "sample" / "unlabelled"
        hand, ours = [], []
        for r in range(args.repeats):
            cfg = recipe(args, shards, Path(tmp) / f"run{r}")
            torch.manual_seed(r)
            hand.append(run_hand_loop(cfg, args.warmup))
            torch.manual_seed(r)
            ours.append(run_pretrain(cfg, args.warmup))
            print(
                f"repeat {r}: hand loop {hand[-1]:.1f} images/s, pretrain {ours[-1]:.1f} images/s",
                flush=True,
            )
    h, o = statistics.median(hand), statistics.median(ours)
    print(
        f"\n{args.backbone} {args.size}px batch {args.batch_size}, {args.steps} timed steps, "
        f"torch threads {torch.get_num_threads()}, workers {args.num_workers}\n"
        f"hand loop {h:.1f} images/s | pretrain {o:.1f} images/s | ratio {o / h:.3f} (target >= 0.9)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
