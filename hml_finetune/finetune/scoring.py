"""Scoring a trained stage-2 model: temperatures fitted on val, then thresholds tuned on the calibrated
val probabilities, metrics per head on test, the run's metrics.json/.md and model.ckpt.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from hml_finetune.finetune.config import FinetuneConfig, PredictConfig
from hml_finetune.finetune.data import align_split
from hml_finetune.finetune.features import cached_features, extract_features
from hml_finetune.finetune.labels import LabelledSplit, encode_singles, encode_split
from hml_finetune.finetune.lightning_module import HMLModule
from hml_finetune.finetune.model import HMLModel, image_transform
from hml_finetune.finetune.results import head_metrics, single_label_metrics, write_metrics
from hml_finetune.hml.calibration import choose_temperature
from hml_finetune.hml.hierarchy import Hierarchy
from hml_finetune.hml.metrics import eval_columns
from hml_finetune.hml.schemes import Scheme
from hml_finetune.hml.thresholds import (
    DEFAULT_THRESHOLD,
    MIN_HEAD_POSITIVES,
    known_positives,
    tune_rule,
)
from ssl_benthic.core.devices import process_device

__all__ = [
    "choose_threshold",
    "score_heads",
    "calibrate_heads",
    "split_features",
    "finish_run",
    "run_fields",
]


def choose_threshold(
    rule: str | float,
    probs: torch.Tensor,
    y: torch.Tensor,
    m: torch.Tensor,
    h: Hierarchy,
    head: str,
) -> tuple[float | torch.Tensor, str]:
    """A head's threshold and the rule that gave it: 'fixed X', 'global' or 'per-node' (tuned on
    validation), or `DEFAULT_THRESHOLD` with a warning when the head has fewer than
    `MIN_HEAD_POSITIVES` known validation positives (tuned on nothing, the lowest grid value wins).
    """
    if rule not in ("global", "per-node"):
        return float(rule), f"fixed {float(rule):g}"
    n = known_positives(y, m, eval_columns(h))
    if n < MIN_HEAD_POSITIVES:
        why = f"{n} validation positives < {MIN_HEAD_POSITIVES}"
        warnings.warn(
            f"head {head!r}: {why}: threshold {DEFAULT_THRESHOLD:g} (the default), not tuned",
            stacklevel=2,
        )
        return DEFAULT_THRESHOLD, f"default {DEFAULT_THRESHOLD:g}: {why}"
    return tune_rule(rule, probs, y, m, h, columns=eval_columns(h)), str(rule)


def score_heads(
    probs: dict[str, torch.Tensor],
    split: LabelledSplit,
    hierarchies: dict[str, Hierarchy],
    thresholds: dict[str, float | torch.Tensor],
    train_freq: dict[str, list[float]],
    schemes: Mapping[str, Scheme],
    singles: dict[str, list[str]] | None = None,
    rules: dict[str, str] | None = None,
    raw_probs: dict[str, torch.Tensor] | None = None,
    temperatures: dict[str, float] | None = None,
    predict: PredictConfig | None = None,
) -> dict[str, dict]:
    """`head_metrics` per HML head (`kind` hierarchical or flat, `threshold_rule` from `rules`,
    `temperature`, the `hierarchical` block with the label rule of `predict` and the ECE of
    `raw_probs`, the uncalibrated probabilities), then `single_label_metrics` per single-label
    head (classes in `singles`), from the predicted probabilities of the samples of `split`."""
    out = {}
    pc = predict or PredictConfig()
    for head, (y, m) in encode_split(split, hierarchies, schemes).items():
        freq = torch.tensor(train_freq[head])
        raw = raw_probs[head].cpu() if raw_probs is not None else None
        h, rule, p_min = hierarchies[head], pc.label_rule, pc.min_probability
        out[head] = head_metrics(
            probs[head].cpu(), y, m, h, thresholds[head], freq, raw, rule, p_min
        )
        out[head]["kind"] = "flat" if schemes[head].flat else "hierarchical"
        out[head]["scheme"] = schemes[head].record()
        out[head]["threshold_rule"] = (rules or {}).get(head, "stored")
        out[head]["temperature"] = (temperatures or {}).get(head, 1.0)
    for head, y in encode_singles(split, singles or {}).items():
        freq = torch.tensor(train_freq[head], dtype=torch.float64)
        out[head] = single_label_metrics(probs[head].cpu(), y, (singles or {})[head], freq)
    return out


def calibrate_heads(
    cfg: FinetuneConfig,
    model: HMLModel,
    features: torch.Tensor,
    targets: dict[str, tuple[torch.Tensor, torch.Tensor]],
    hierarchies: dict[str, Hierarchy],
) -> tuple[dict[str, float], dict[str, str]]:
    """(temperature, how it was set) per HML head, fitted on validation features (`calibration`
    of the recipe), and set on `model` so that what follows (threshold tuning) sees them."""
    temps, how = {}, {}
    with torch.no_grad():
        logits = model.head_logits(features)
    for head, (y, m) in targets.items():
        z, ens = logits[head].float(), model.heads[head]

        def probs_at(t: float, z: torch.Tensor = z, ens=ens) -> torch.Tensor:
            with torch.no_grad():
                return ens.predict_from_logits(z / t).cpu()

        temps[head], how[head] = choose_temperature(
            cfg.calibration, probs_at, y, m, hierarchies[head], head
        )
    model.temperatures = dict(temps)
    return temps, how


def split_features(
    cfg: FinetuneConfig, model: HMLModel, shards: str, device: torch.device, cache: bool
) -> tuple[torch.Tensor, list[str]]:
    mean, std = list(cfg.data.mean), list(cfg.data.std)
    if cache:
        return cached_features(cfg, model.backbone, shards, mean, std, device)
    transform = image_transform(cfg.data.img_size, mean, std, augment=False)
    return extract_features(
        model.backbone, shards, transform, cfg.data.batch_size, device, cfg.trainer.precision
    )


def finish_run(
    cfg: FinetuneConfig,
    module: HMLModule,
    splits: dict[str, LabelledSplit],
    feats: dict[str, tuple[torch.Tensor, list[str]]],
) -> dict:
    """Tune thresholds on val, score test, write metrics and model.ckpt; the result dict."""
    model, hierarchies, meta = module.model, module.hierarchies, module.meta
    device = process_device(cfg.trainer.accelerator)
    model.to(device)
    for name in ("val", "test"):
        if name not in feats:
            feats[name] = split_features(cfg, model, getattr(cfg.data, name), device, False)
    val_f, val_keys = feats["val"]
    val_split = align_split(splits["val"], val_keys)
    schemes = module.data.schemes
    val_targets = encode_split(val_split, hierarchies, schemes)
    model.eval()
    temps, how = calibrate_heads(cfg, model, val_f.to(device), val_targets, hierarchies)
    val_probs = model.predict_features(
        val_f.to(device)
    )  # calibrated: thresholds fit what is applied
    thresholds: dict[str, float | torch.Tensor] = {}
    rules: dict[str, str] = {}
    for head, (y, m) in val_targets.items():
        thresholds[head], rules[head] = choose_threshold(
            cfg.threshold, val_probs[head].cpu(), y, m, hierarchies[head], head
        )
    test_f, test_keys = feats["test"]
    test_f = test_f.to(device)
    heads = score_heads(
        model.predict_features(test_f),
        align_split(splits["test"], test_keys),
        hierarchies,
        thresholds,
        meta["train_freq"],
        schemes,
        model.single,
        rules,
        model.predict_features(test_f, calibrated=False),
        temps,
        cfg.predict,
    )
    meta["thresholds"] = {h: t.tolist() if torch.is_tensor(t) else t for h, t in thresholds.items()}
    meta["threshold_rules"] = rules
    meta["temperatures"], meta["calibration_rules"] = temps, how
    result = {
        "heads": heads,
        **run_fields(cfg),
        "train_fraction": cfg.train_fraction,
        "encoder_noise": cfg.encoder_noise,
        "n_train": meta["n_train"],
        "weights": meta["weights"],
        "output_dir": str(cfg.output_dir),
    }
    out = Path(cfg.output_dir)
    write_metrics(result, out)
    model.cpu()
    torch.save({"state_dict": model.state_dict(), "hml_finetune": meta}, out / "model.ckpt")
    return result


def run_fields(cfg: FinetuneConfig) -> dict:
    """What identifies a run in results and reports: start, its feature pool (a ViT's cls, mean
    or cls+mean), mode, loss, seed, threshold rule."""
    return {
        "start": cfg.backbone.weights,
        "pool": cfg.backbone.pool,
        "mode": cfg.mode,
        "loss": cfg.loss.name,
        "seed": cfg.seed,
        "threshold": cfg.threshold,
    }
