"""Test-split scores of one HML head: `evaluate()` plus per-node rows, rare-node recall and a PR curve;
and the metrics.json / metrics.md files of a run.

Rare nodes: evaluated nodes whose training frequency n_j / N_j is below `RARE_FREQ` (n_j positive,
N_j known training samples; nodes never known in training are left out) and that have test positives.
Nodes with test positives but never positive in training (n_j = 0) are not rare but unseen: counted
in `n_unseen_nodes`, kept out of `rare_recall`.

A head without a known test positive is not scored: `status` "no test labels" and every score NaN
(null in metrics.json, "no test labels" in metrics.md), never 0.000. Scored heads have `status`
"scored".

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

from hml_finetune.finetune.labels import IGNORE_INDEX
from hml_finetune.hml.hierarchical_metrics import hierarchical_scores
from hml_finetune.hml.hierarchy import Hierarchy
from hml_finetune.hml.label_rules import coherent_sets
from hml_finetune.hml.metrics import eval_columns, evaluate, prf, stat_counts
from ssl_benthic.core.files import write_atomic

RARE_FREQ = 0.05
PR_POINTS = 200
SCORED, NO_TEST_LABELS = "scored", "no test labels"  # a head's `status`
SCORE_KEYS = (
    "au_prc",
    "macro_precision",
    "macro_recall",
    "macro_f1",
    "macro_precision_pos",
    "macro_recall_pos",
    "macro_f1_pos",
    "micro_precision",
    "micro_recall",
    "micro_f1",
    "pred_depth",
    "true_depth",
    "depth_gap",
    "rare_recall",
    "accuracy",
    "macro_accuracy",
)

__all__ = [
    "RARE_FREQ",
    "SCORED",
    "NO_TEST_LABELS",
    "is_rare",
    "is_unseen",
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
    """One row per evaluated node: node, depth, train_freq, test positives, recall, f1 (of the
    coherent sets), ap (NaN where the node has no known test positive)."""
    tp, fp, fn = stat_counts(coherent_sets(probs, threshold, hierarchy), targets, mask)
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


def is_rare(row: dict[str, Any], rare_freq: float = RARE_FREQ) -> bool:
    """A node row with test positives, seen in training (train_freq > 0) but below `rare_freq`."""
    return row["test_positives"] > 0 and 0.0 < row["train_freq"] < rare_freq


def is_unseen(row: dict[str, Any]) -> bool:
    """A node row with test positives that training never had a positive of (freq 0 or NaN)."""
    return row["test_positives"] > 0 and not row["train_freq"] > 0.0


def rare_recall(rows: list[dict[str, Any]], rare_freq: float = RARE_FREQ) -> float:
    """Macro recall over the rare nodes (`is_rare`; NaN if none): unseen nodes are left out."""
    vals = [r["recall"] for r in rows if is_rare(r, rare_freq)]
    return float(np.mean(vals)) if vals else math.nan


def _rare_counts(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """rare_recall, n_rare_nodes and n_unseen_nodes of a head's node rows."""
    return {
        "rare_recall": rare_recall(rows),
        "n_rare_nodes": sum(map(is_rare, rows)),
        "n_unseen_nodes": sum(map(is_unseen, rows)),
    }


def _not_scored(out: dict[str, Any]) -> dict[str, Any]:
    """A head without test labels: every score NaN (never 0.000) and `status` "no test labels"."""
    for key in SCORE_KEYS:
        if key in out:
            out[key] = math.nan
    for d in out.get("per_depth", {}).values():
        d.update(dict.fromkeys(("recall_micro", "f1_micro", "recall_macro", "f1_macro"), math.nan))
    out["status"] = NO_TEST_LABELS
    return out


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
    raw_probs: torch.Tensor | None = None,
    label_rule: str = "expected-hops",
    min_probability: float = 0.5,
) -> dict[str, Any]:
    """`evaluate()` keys + status, rare_recall, n_rare_nodes, n_unseen_nodes, per_node, pr_curve,
    the threshold(s) used and `hierarchical` (`hierarchical_scores` of the labels of `label_rule`;
    `raw_probs` the uncalibrated probabilities); all scores NaN with status "no test labels" when
    no test positive."""
    probs, targets, mask = probs.float(), targets.float(), mask.float()
    out = evaluate(probs, targets, mask, hierarchy, threshold)
    rows = node_rows(probs, targets, mask, hierarchy, threshold, train_freq)
    out["status"] = SCORED
    out.update(_rare_counts(rows))
    out["per_node"] = rows
    out["pr_curve"] = pr_curve(probs, targets, mask, hierarchy)
    out["threshold_value"] = threshold.tolist() if torch.is_tensor(threshold) else float(threshold)
    raw = None if raw_probs is None else raw_probs.float()
    out["hierarchical"] = hierarchical_scores(
        probs, raw, targets, mask, hierarchy, threshold, label_rule, min_probability
    )
    return out if out["n_nodes_with_positives"] else _not_scored(out)


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
    out["status"] = SCORED
    out.update(_rare_counts(rows))
    out["per_node"] = rows
    onehot = torch.nn.functional.one_hot(y[known], C) if known.any() else torch.zeros(0, C)
    out["pr_curve"] = _pr_points(probs[known].flatten(), onehot.long().flatten())
    out["threshold_value"] = None  # argmax, no threshold
    out["threshold_rule"] = "argmax"
    return out if known.any() else _not_scored(out)


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


def _head_cells(m: dict[str, Any], keys: list[str]) -> str:
    """A head's score cells: the scores, or "no test labels" in each cell of an unscored head."""
    if m.get("status") == NO_TEST_LABELS:
        return " | ".join([NO_TEST_LABELS] * len(keys))
    return " | ".join(_fmt(m.get(k)) for k in keys)


def metrics_markdown(result: dict[str, Any]) -> str:
    """Headline scores per head with the threshold rule it used, then recall/F1 per depth."""
    keys = ["au_prc", "macro_precision", "macro_recall", "macro_f1", "micro_f1", "rare_recall"]
    keys += ["pred_depth", "true_depth"]
    lines = [
        f"# HML metrics: start `{result.get('start')}`, mode {result.get('mode')}, "
        f"loss {result.get('loss')}, seed {result.get('seed')}, threshold {result.get('threshold')}",
        "",
        f"rare_recall: nodes with 0 < training frequency < {RARE_FREQ} and test positives.",
        "",
        "| head | " + " | ".join(keys[:-2]) + " | pred depth | true depth | threshold rule |",
        "|---" * (len(keys) + 2) + "|",
    ]
    for head, m in result["heads"].items():
        rule = m.get("threshold_rule") or "-"
        lines.append(f"| {head} | {_head_cells(m, keys)} | {rule} |")
    single = {h: m for h, m in result["heads"].items() if m.get("kind") == "single"}
    if single:
        lines += ["", "## Single-label heads (argmax; au_prc = macro AP)", ""]
        lines += ["| head | accuracy | macro accuracy | macro F1 |", "|---|---|---|---|"]
        for head, m in single.items():
            lines.append(
                f"| {head} | {_head_cells(m, ['accuracy', 'macro_accuracy', 'macro_f1'])} |"
            )
    lines += _hierarchical_lines(result["heads"])
    lines += ["", "## Per depth (micro recall / micro F1)", ""]
    lines += ["| head | depth | nodes | recall | F1 |", "|---|---|---|---|---|"]
    for head, m in result["heads"].items():
        if m.get("status") == NO_TEST_LABELS:
            lines.append(f"| {head} | - | - | {NO_TEST_LABELS} | {NO_TEST_LABELS} |")
            continue
        for depth, d in m["per_depth"].items():
            lines.append(
                f"| {head} | {depth} | {d['n_nodes']} | {_fmt(d['recall_micro'])} | "
                f"{_fmt(d['f1_micro'])} |"
            )
    return "\n".join(lines) + "\n"


HIER_KEYS = ("h_precision", "h_recall", "h_f1", "hop_distance", "mistake_severity")


def _hierarchical_lines(heads: dict[str, Any]) -> list[str]:
    """Per HML head: hP, hR, hF, hop distance and mistake severity of its label rule, ECE before
    and after calibration with the temperature, then hop distance per label rule."""
    hier = {h: m for h, m in heads.items() if "hierarchical" in m}
    if not hier:
        return []
    lines = ["", "## Hierarchical scores (test; label rule per head)", ""]
    lines += [
        "| head | label rule | hP | hR | hF | hop distance | mistake severity | "
        "ECE before | ECE after | temperature |",
        "|---" * 10 + "|",
    ]
    for head, m in hier.items():
        x = m["hierarchical"]
        cells = " | ".join(_fmt(x.get(k)) for k in HIER_KEYS)
        ece = f"{_fmt(x.get('ece_uncalibrated'))} | {_fmt(x.get('ece'))}"
        lines.append(
            f"| {head} | {x.get('label_rule')} | {cells} | {ece} | {_fmt(m.get('temperature'))} |"
        )
    lines += ["", "| head | label rule | hop distance |", "|---|---|---|"]
    for head, m in hier.items():
        for rule, d in m["hierarchical"].get("hop_distance_by_rule", {}).items():
            lines.append(f"| {head} | {rule} | {_fmt(d)} |")
    return lines


def write_metrics(result: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write out_dir/metrics.md, then out_dir/metrics.json (strict JSON: NaN -> null), each whole
    (`write_atomic`): metrics.json, what says a run finished, exists only complete and last."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / "metrics.json", out / "metrics.md"
    write_atomic(md, metrics_markdown(result))
    write_atomic(js, json.dumps(json_safe(result), indent=2) + "\n")
    return js, md
