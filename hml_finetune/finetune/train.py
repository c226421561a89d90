"""`hml-finetune train` / `evaluate`: HML heads on a backbone (linear probe or fine-tuning) on labelled
image shards, thresholds tuned on val, metrics per head on test.

Training always runs through the Lightning Trainer (devices, precision, DDP, checkpoints under
`output_dir/checkpoints`, resume, CSV/TensorBoard logs, progress bar), the cached-feature linear probe
included: its epochs are a TensorDataset of features, so an epoch costs a few head steps, and
checkpoints, resume and logs stay the same code path as fine-tuning (the Trainer's fixed start-up
cost, about a second, is the price; `bench/linear_probe_cache.py` measures the per-epoch gain).
Scoring after training runs on global rank 0 in one plain pass over each split.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import warnings
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_only

from hml_finetune.finetune.config import FinetuneConfig
from hml_finetune.finetune.data import (
    TrainData,
    align_split,
    class_frequency,
    encode_train,
    prepare_data,
    training_mask,
)
from hml_finetune.finetune.labels import hierarchy_to_dict
from hml_finetune.finetune.lightning_module import HMLModule, build_losses
from hml_finetune.finetune.model import (
    HMLModel,
    backbone_kwargs,
    build_backbone,
    image_transform,
    resolve_norm,
)
from hml_finetune.finetune.results import metrics_markdown, train_frequency
from hml_finetune.finetune.scoring import finish_run, split_features
from hml_finetune.hml.hierarchy import Hierarchy
from ssl_benthic.core.checkpoints import (
    RunCheckpoint,
    checkpoint_dir,
    find_resume,
    prepare_output_dir,
)
from ssl_benthic.core.config import load_config, save_config, to_dict
from ssl_benthic.core.devices import on_gpu, process_device
from ssl_benthic.core.errors import Interrupted
from ssl_benthic.core.trainer import fit, make_trainer
from ssl_benthic.data.shards.manifest import load_manifest
from ssl_benthic.weights.load import weights_identity
from ssl_benthic.weights.vit_features import backbone_img_size

__all__ = ["RUN_FILES", "resolve_strategy", "build_trainer", "run_finetune", "cli_train"]

RUN_FILES = (
    "model.ckpt",
    "metrics.json",
    "metrics.md",
)  # what a finished run leaves besides checkpoints


def _device_count(devices: int | str, accelerator: str) -> int:
    """How many processes per node `devices` asks for ('auto' / -1: every visible GPU, else 1)."""
    text = str(devices).strip()
    if text in ("auto", "-1"):
        return torch.cuda.device_count() if on_gpu(accelerator) else 1
    return len([d for d in text.strip("[]").split(",") if d.strip()]) if "," in text else int(text)


def resolve_strategy(cfg: FinetuneConfig) -> str:
    """`trainer.strategy`, except that LP-FT under DDP needs `find_unused_parameters`: while the
    encoder is held, its parameters get no gradient and plain DDP would wait for them forever."""
    t = cfg.trainer
    lpft = cfg.mode == "finetune" and cfg.optimizer.encoder_frozen_epochs > 0
    multi = t.num_nodes > 1 or _device_count(t.devices, t.accelerator) > 1
    if lpft and multi and t.strategy in ("auto", "ddp", "ddp_spawn"):
        spawn = "_spawn" if t.strategy == "ddp_spawn" else ""
        return f"ddp{spawn}_find_unused_parameters_true"
    return t.strategy


def build_trainer(cfg: FinetuneConfig, extra_callbacks: Sequence[pl.Callback] = ()) -> pl.Trainer:
    """Trainer from `trainer.*`: last.ckpt every N epochs and at the end, CSV (+TensorBoard) logs."""
    t = cfg.trainer
    # the one checkpoint, last.ckpt, replaced every N epochs and at the end
    checkpoint = RunCheckpoint(
        dirpath=checkpoint_dir(cfg.output_dir),
        filename="last",
        every_n_epochs=t.checkpoint_every_n_epochs,
        save_top_k=1,
        monitor=None,
    )
    return make_trainer(
        cfg.output_dir,
        checkpoint,
        tensorboard=t.tensorboard,
        callbacks=extra_callbacks,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=resolve_strategy(cfg),
        precision=t.precision,
        max_epochs=t.max_epochs,
        log_every_n_steps=t.log_every_n_steps,
        enable_progress_bar=t.enable_progress_bar,
        enable_model_summary=False,
    )


def _meta(
    cfg: FinetuneConfig,
    hierarchies: dict[str, Hierarchy],
    singles: dict[str, list[str]],
    data: TrainData,
) -> dict:
    """What model.ckpt keeps besides the weights: the config as run, each head's hierarchy and
    scheme record (evaluation and prediction never need a scheme file again), statistics."""
    freqs = {
        h: train_frequency(y, training_mask(m, hierarchies[h])).tolist()
        for h, (y, m) in data.targets.items()
    }
    freqs.update({h: class_frequency(y, len(singles[h])) for h, y in data.single.items()})
    return {
        "config": to_dict(cfg),
        "hierarchies": {h: hierarchy_to_dict(x) for h, x in hierarchies.items()},
        "single": {h: list(c) for h, c in singles.items()},
        "backbone_kwargs": backbone_kwargs(cfg.backbone),
        "mean": list(cfg.data.mean or ()),
        "std": list(cfg.data.std or ()),
        "train_freq": freqs,
        "n_train": len(data.split),
        "thresholds": None,
        "weights": weights_identity(cfg.backbone.weights, cfg.backbone.weights_file),
        "schemes": {h: s.record() for h, s in data.schemes.items()},
        "label_map": _train_source(cfg.data.train).get("label_map"),
        "patch": _patch(_train_source(cfg.data.train)),
    }


def _train_source(shards: str) -> dict:
    """The training manifest's `source` ({} without one): a point export's label map (code ->
    {head, path}), so `predict --format coralnet` can write label codes back, and its patch size."""
    folder = Path(shards)
    if not (folder / "manifest.json").is_file():
        return {}
    source = load_manifest(folder).get("source") or {}
    return source if isinstance(source, dict) else {}


def _patch(source: dict) -> dict | None:
    """How the training patches were cut ({patch, resize}), for `predict`'s defaults; None when
    the shards are not patches of a point export."""
    if not isinstance(source.get("patch"), int):
        return None
    return {"patch": source["patch"], "resize": int(source.get("resize") or 0)}


def _resolved(cfg: FinetuneConfig, backbone: torch.nn.Module, schemes: dict) -> FinetuneConfig:
    """The config as run: the normalisation used, and each head's scheme with its file's sha256
    (so the written config.yaml reruns exactly, and fails if a scheme file has changed)."""
    mean, std = resolve_norm(cfg, backbone)
    heads = dataclasses.replace(
        cfg.heads,
        schemes={h: s.name for h, s in schemes.items() if not s.flat},
        scheme_sha256={h: s.sha256 for h, s in schemes.items() if s.sha256},
    )
    data = dataclasses.replace(cfg.data, mean=tuple(mean), std=tuple(std))
    return dataclasses.replace(cfg, data=data, heads=heads)


def _cache_features(
    cfg: FinetuneConfig, model: HMLModel
) -> dict[str, tuple[torch.Tensor, list[str]]]:
    """Backbone features of the three splits, computed once (the linear probe's frozen encoder)."""
    device = process_device(cfg.trainer.accelerator)
    model.backbone.to(device)
    feats = {
        name: split_features(cfg, model, getattr(cfg.data, name), device, True)
        for name in ("train", "val", "test")
    }
    model.backbone.cpu()
    return feats


def run_finetune(
    cfg: FinetuneConfig,
    resume: str | None = None,
    *,
    callbacks: Sequence[pl.Callback] = (),
    overwrite: bool = False,
) -> dict:
    """Train, tune thresholds on val, score on test; write metrics.json/.md and config.yaml.

    Returns {"heads": {head: evaluate() keys + rare_recall, per_node, pr_curve, threshold_value},
    "start", "mode", "loss", "seed", "threshold", ...} on global rank 0 ({} on other ranks).
    Also writes output_dir/model.ckpt (weights + hierarchies + tuned thresholds) for `evaluate`.
    `callbacks` are added to the Trainer's (benchmarks, tests). A new run into an output_dir that
    holds another run is refused unless `overwrite`; on SIGTERM a resumable last.ckpt is saved and
    `Interrupted` raised.
    """
    cfg.validate()
    cfg.check_inputs()
    ckpt = find_resume(cfg.output_dir, resume)
    if rank_zero_only.rank == 0:
        prepare_output_dir(cfg.output_dir, resume, overwrite, RUN_FILES)
    pl.seed_everything(cfg.trainer_seed, workers=True, verbose=False)
    p = prepare_data(cfg)
    size, note = backbone_img_size(cfg.backbone.weights, cfg.backbone.img_size, cfg.data.img_size)
    if note:  # a ViT export made for another size: resampled, not an AssertionError in forward
        rank_zero_info(note)
        cfg = dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, img_size=size))
    backbone = build_backbone(cfg.backbone, cfg.encoder_noise, cfg.seed)
    cfg = _resolved(cfg, backbone, p.schemes)
    hierarchies, singles, data = p.hierarchies, p.singles, p.data
    model = HMLModel(backbone, hierarchies, cfg.heads, cfg.mode == "linear", singles)
    feats: dict[str, tuple[torch.Tensor, list[str]]] = {}
    if cfg.cached:
        feats = _cache_features(cfg, model)
        where = {k: i for i, k in enumerate(feats["train"][1])}
        keep = [k for k in data.split.keys if k in where]
        data = encode_train(
            align_split(data.split, keep),
            hierarchies,
            singles,
            p.schemes,
            feats["train"][0][[where[k] for k in keep]],
            data.full_size,
        )
    augment = cfg.data.augment and cfg.mode == "finetune"
    transform = image_transform(cfg.data.img_size, cfg.data.mean, cfg.data.std, augment)
    losses = build_losses(cfg, hierarchies, data.targets)
    module = HMLModule(
        cfg, model, hierarchies, losses, data, transform, _meta(cfg, hierarchies, singles, data)
    )
    trainer = build_trainer(cfg, callbacks)
    # a linear probe's backbone is in eval mode on purpose (frozen BN statistics)
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    if trainer.is_global_zero:
        save_config(cfg, Path(cfg.output_dir) / "config.yaml")
    fit(trainer, model=module, ckpt_path=ckpt, weights_only=True)
    if not trainer.is_global_zero:
        return {}
    return finish_run(cfg, module, {"val": p.val, "test": p.test}, feats)


def cli_train(args: argparse.Namespace) -> int:
    """`hml-finetune train --config F [--resume last|PATH] [--overwrite] [key=value ...]`."""
    cfg = load_config(FinetuneConfig, args.config, args.overrides)
    try:
        result = run_finetune(cfg, resume=args.resume, overwrite=args.overwrite)
    except Interrupted as exc:
        command = ["hml-finetune", "train", "--config", args.config, *args.overrides]
        raise Interrupted(f"{exc}: {shlex.join([*command, '--resume', 'last'])}") from None
    if result:
        print(metrics_markdown(result))
        print(f"wrote {Path(cfg.output_dir) / 'metrics.json'} and metrics.md")
    return 0
