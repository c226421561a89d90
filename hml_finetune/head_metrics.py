"""Test-split scores of one HML head: `evaluate()` plus per-node rows, rare-node recall and a PR curve;
and the metrics.json / metrics.md files of a run.

Rare nodes: evaluated nodes whose training frequency n_j / N_j is below `RARE_FREQ` (n_j positive,
N_j known training samples; nodes never known in training are left out) and that have test positives.

A single-label head is scored by `single_label_metrics` with the same keys where they mean the same
thing (au_prc = macro AP over classes, macro_recall = macro accuracy, micro scores = accuracy), so
the report and the comparison read every head alike.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchmetrics.functional.classification import (
    binary_average_precision,
    binary_precision_recall_curve,
    multiclass_accuracy,
    multiclass_average_precision,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

from hml_finetune.data.labels import IGNORE_INDEX
from hml_finetune.hierarchy import Hierarchy
from hml_finetune.metrics import apply_thresholds, eval_columns, evaluate, prf, stat_counts

RARE_FREQ = 0.05
PR_POINTS = 200

__all__ = [
    "RARE_FREQ",
    "train_frequency",
    "node_rows",
    "rare_recall",
    "pr_curve",
    "head_metrics",
    "single_label_metrics",
    "json_safe",
    "metrics_markdown",
    "write_metrics",
]


def train_frequency(targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """n_j / N_j over known training entries (K,), NaN where N_j = 0."""
    known = mask != 0
    n = ((targets > 0.5) & known).sum(0).double()
    N = known.sum(0).double()
    return torch.where(N > 0, n / N.clamp(min=1), torch.full_like(n, math.nan))


def node_rows(
    probs: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    hierarchy: Hierarchy,
    threshold: float | torch.Tensor,
    train_freq: torch.Tensor,
) -> list[dict[str, Any]]:
    """One row per evaluated node: node, depth, train_freq, test positives, recall, f1, ap (NaN
    where the node has no known test positive)."""
    thr = torch.as_tensor(threshold, dtype=probs.dtype)
    tp, fp, fn = stat_counts(apply_thresholds(probs, thr), targets, mask)
    _, recall, f1 = prf(tp, fp, fn)
    rows = []
    for j in eval_columns(hierarchy).tolist():
        known = mask[:, j] != 0
        pos = int(tp[j] + fn[j])
        ap = math.nan
        if pos > 0:
            y = (targets[known, j] > 0.5).long()
            ap = float(binary_average_precision(probs[known, j].double(), y))
        rows.append(
            {
                "node": hierarchy.nodes[j],
                "depth": int(hierarchy.depth_array[j]),
                "train_freq": float(train_freq[j]),
                "test_positives": pos,
                "recall": float(recall[j]) if pos else math.nan,
                "f1": float(f1[j]) if pos else math.nan,
                "ap": ap,
            }
        )
    return rows


def rare_recall(rows: list[dict[str, Any]], rare_freq: float = RARE_FREQ) -> float:
    """Macro recall over nodes with train_freq < rare_freq and test positives (NaN if none)."""
    vals = [
        r["recall"]
        for r in rows
        if r["test_positives"] > 0
        and not math.isnan(r["train_freq"])
        and r["train_freq"] < rare_freq
    ]
    return float(np.mean(vals)) if vals else math.nan


def pr_curve(
    probs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, hierarchy: Hierarchy
) -> dict[str, list[float]]:
    """Micro precision-recall curve over the known evaluated entries, at most ~PR_POINTS points."""
    cols = eval_columns(hierarchy)
    p, y, m = probs[:, cols], targets[:, cols], mask[:, cols] != 0
    return _pr_points(p[m], (y[m] > 0.5).long())


def _pr_points(scores: torch.Tensor, t: torch.Tensor) -> dict[str, list[float]]:
    """Binary PR curve of scores vs 0/1 targets, thinned to at most ~PR_POINTS points."""
    if t.sum() == 0:
        return {"precision": [], "recall": []}
    precision, recall, _ = binary_precision_recall_curve(scores.double(), t)
    keep = np.unique(np.linspace(0, len(precision) - 1, min(PR_POINTS, len(precision))).round())
    idx = torch.from_numpy(keep.astype(np.int64))
    return {"precision": precision[idx].tolist(), "recall": recall[idx].tolist()}


def head_metrics(
    probs: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    hierarchy: Hierarchy,
    threshold: float | torch.Tensor,
    train_freq: torch.Tensor,
) -> dict[str, Any]:
    """`evaluate()` keys + rare_recall, per_node, pr_curve and the threshold(s) used."""
    probs, targets, mask = probs.float(), targets.float(), mask.float()
    out = evaluate(probs, targets, mask, hierarchy, threshold)
    rows = node_rows(probs, targets, mask, hierarchy, threshold, train_freq)
    out["rare_recall"] = rare_recall(rows)
    out["n_rare_nodes"] = sum(
        1 for r in rows if r["test_positives"] and r["train_freq"] < RARE_FREQ
    )
    out["per_node"] = rows
    out["pr_curve"] = pr_curve(probs, targets, mask, hierarchy)
    out["threshold_value"] = threshold.tolist() if torch.is_tensor(threshold) else float(threshold)
    return out


def _single_rows(
    probs: torch.Tensor, y: torch.Tensor, classes: list[str], train_freq: torch.Tensor
) -> list[dict[str, Any]]:
    """One row per class (as `node_rows`, depth 1): one-vs-rest recall, F1 and AP."""
    C, nan = len(classes), math.nan
    recall = multiclass_recall(probs, y, C, average=None, ignore_index=IGNORE_INDEX)
    f1 = multiclass_f1_score(probs, y, C, average=None, ignore_index=IGNORE_INDEX)
    ap = multiclass_average_precision(probs, y, C, average=None, ignore_index=IGNORE_INDEX)
    pos = torch.bincount(y[y != IGNORE_INDEX], minlength=C)
    return [
        {
            "node": name,
            "depth": 1,
            "train_freq": float(train_freq[j]),
            "test_positives": int(pos[j]),
            "recall": float(recall[j]) if pos[j] else nan,
            "f1": float(f1[j]) if pos[j] else nan,
            "ap": float(ap[j]) if pos[j] else nan,
        }
        for j, name in enumerate(classes)
    ]


def single_label_metrics(
    probs: torch.Tensor, y: torch.Tensor, classes: list[str], train_freq: torch.Tensor
) -> dict[str, Any]:
    """Scores of a single-label head from softmax probabilities (N, C) and class indices (N,)
    (`IGNORE_INDEX` = unannotated, left out); the prediction is the argmax.

    accuracy (micro), macro_accuracy (= macro recall), macro_f1, macro_precision (torchmetrics
    macro: classes neither present nor predicted are left out); au_prc = mean one-vs-rest AP over
    classes with test positives; rare_recall, per_node, per_depth (depth 1) and pr_curve (micro
    one-vs-rest) as for HML heads. All NaN when no test sample is annotated.
    """
    probs, y = probs.float(), y.long()
    known = y != IGNORE_INDEX
    C, nan = len(classes), math.nan
    rows = _single_rows(probs, y, classes, train_freq)
    out: dict[str, Any] = {"kind": "single", "n_classes": C, "n_annotated": int(known.sum())}
    if not known.any():
        keys = ("accuracy", "macro_accuracy", "macro_precision", "macro_f1", "au_prc")
        out.update(dict.fromkeys(keys, nan))
    else:
        kw = {"num_classes": C, "ignore_index": IGNORE_INDEX}
        out["accuracy"] = float(multiclass_accuracy(probs, y, average="micro", **kw))
        out["macro_accuracy"] = float(multiclass_accuracy(probs, y, average="macro", **kw))
        out["macro_precision"] = float(multiclass_precision(probs, y, average="macro", **kw))
        out["macro_f1"] = float(multiclass_f1_score(probs, y, average="macro", **kw))
        aps = [r["ap"] for r in rows if r["test_positives"]]
        out["au_prc"] = float(np.mean(aps))
    acc = out["accuracy"]
    out.update(macro_recall=out["macro_accuracy"], micro_precision=acc, micro_recall=acc)
    out.update(
        micro_f1=acc, n_nodes=C, n_nodes_with_positives=sum(bool(r["test_positives"]) for r in rows)
    )
    with_pos = [r for r in rows if r["test_positives"]]
    out["per_depth"] = {
        1: {
            "n_nodes": C,
            "n_nodes_with_positives": len(with_pos),
            "recall_micro": acc,
            "f1_micro": acc,
            "recall_macro": float(np.mean([r["recall"] for r in with_pos])) if with_pos else nan,
            "f1_macro": float(np.mean([r["f1"] for r in with_pos])) if with_pos else nan,
        }
    }
    out["rare_recall"] = rare_recall(rows)
    out["n_rare_nodes"] = sum(1 for r in with_pos if r["train_freq"] < RARE_FREQ)
    out["per_node"] = rows
    onehot = torch.nn.functional.one_hot(y[known], C) if known.any() else torch.zeros(0, C)
    out["pr_curve"] = _pr_points(probs[known].flatten(), onehot.long().flatten())
    out["threshold_value"] = None  # argmax, no threshold
    return out


def json_safe(value: Any) -> Any:
    """NaN/inf -> None, tuples -> lists, keys -> str: strict JSON."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _fmt(value: Any) -> str:
    return (
        "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"
    )


def metrics_markdown(result: dict[str, Any]) -> str:
    """Headline scores per head, then recall/F1 per depth."""
    keys = ["au_prc", "macro_precision", "macro_recall", "macro_f1", "micro_f1", "rare_recall"]
    lines = [
        f"# HML metrics: start `{result.get('start')}`, mode {result.get('mode')}, "
        f"loss {result.get('loss')}, seed {result.get('seed')}, threshold {result.get('threshold')}",
        "",
        "| head | " + " | ".join(keys) + " | pred depth | true depth |",
        "|---" * (len(keys) + 3) + "|",
    ]
    for head, m in result["heads"].items():
        cells = " | ".join(_fmt(m.get(k)) for k in keys)
        depths = f"{_fmt(m.get('pred_depth'))} | {_fmt(m.get('true_depth'))}"
        lines.append(f"| {head} | {cells} | {depths} |")
    single = {h: m for h, m in result["heads"].items() if m.get("kind") == "single"}
    if single:
        lines += ["", "## Single-label heads (argmax; au_prc = macro AP)", ""]
        lines += ["| head | accuracy | macro accuracy | macro F1 |", "|---|---|---|---|"]
        for head, m in single.items():
            lines.append(
                f"| {head} | {_fmt(m['accuracy'])} | {_fmt(m['macro_accuracy'])} | "
                f"{_fmt(m['macro_f1'])} |"
            )
    lines += ["", "## Per depth (micro recall / micro F1)", ""]
    lines += ["| head | depth | nodes | recall | F1 |", "|---|---|---|---|---|"]
    for head, m in result["heads"].items():
        for depth, d in m["per_depth"].items():
            lines.append(
                f"| {head} | {depth} | {d['n_nodes']} | {_fmt(d['recall_micro'])} | "
                f"{_fmt(d['f1_micro'])} |"
            )
    return "\n".join(lines) + "\n"


def write_metrics(result: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write out_dir/metrics.json (strict JSON: NaN -> null) and out_dir/metrics.md."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / "metrics.json", out / "metrics.md"
    js.write_text(json.dumps(json_safe(result), indent=2) + "\n")
    md.write_text(metrics_markdown(result))
    return js, md
