"""The comparison report: `report.md` (a table per head, mean +- std over seeds, and one of its
hierarchical scores: hF, hop distance, mistake severity, ECE before / after calibration; the
weighted loss against MCLoss paired over seeds, with an exact sign-flip test),
`results.json` (one row per run and head) and matplotlib plots (with hop distance per label rule and
a reliability diagram per head), from the cells of a `compare` grid.

Every cell of the grid appears: cells that failed, were skipped or never ran (an interrupted grid)
are listed with their reason, and the report says it is partial. A head a run could not score (no
test labels) reads "no test labels" in its table and `head_status` in results.json, never 0.000.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402
from matplotlib.ticker import LogLocator, MaxNLocator, NullFormatter  # noqa: E402
from scipy.stats import permutation_test  # noqa: E402

from hml_finetune.finetune.results import NO_TEST_LABELS, RARE_FREQ, SCORED, json_safe  # noqa: E402

__all__ = [
    "Cell",
    "METRICS",
    "write_report",
    "result_rows",
    "best_generic",
    "sign_flip_p",
    "loss_verdicts",
]

METRICS = {
    "au_prc": "AU(PRC)",
    "macro_recall": "macro recall",
    "macro_f1": "macro F1",
    "rare_recall": "rare recall",
}
HIER_METRICS = {  # heads.<head>.hierarchical of metrics.json (#20)
    "h_f1": "hF",
    "hop_distance": "hop distance",
    "mistake_severity": "mistake severity",
    "ece_uncalibrated": "ECE before",
    "ece": "ECE after",
}
HIER_PLOTS = ("hop_distance", "reliability")
STATUSES = ("done", "failed", "skipped", "missing")
ZERO_FREQ = 1e-3  # where nodes never positive in training sit on the log axis


@dataclass
class Cell:
    """One run of the grid. status: done | failed | skipped | missing (not run yet / interrupted);
    `result` is the run's metrics.json when done, `error` the reason otherwise."""

    start: str
    mode: str
    loss: str
    seed: int
    run_dir: Path
    status: str = "missing"
    error: str | None = None
    result: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return f"{self.start}-{self.mode}-{self.loss}-s{self.seed}"

    @property
    def group(self) -> tuple[str, str, str]:
        return (self.start, self.mode, self.loss)


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


def _head_status(m: dict[str, Any]) -> str:
    """'scored' or 'no test labels' (metrics written before `status` existed were scored)."""
    return m.get("status") or SCORED


def result_rows(cells: Sequence[Cell]) -> list[dict[str, Any]]:
    """One row per done run and head (`head_status`: scored or no test labels, `threshold_rule`);
    one row with head None for every other cell."""
    rows = []
    for c in cells:
        base = {"start": c.start, "mode": c.mode, "loss": c.loss, "seed": c.seed}
        heads = (c.result or {}).get("heads", {}) if c.status == "done" else {}
        for head, m in heads.items():
            scores = {k: m.get(k) for k in METRICS}
            scores.update({k: (m.get("hierarchical") or {}).get(k) for k in HIER_METRICS})
            extra = {"head_status": _head_status(m), "threshold_rule": m.get("threshold_rule")}
            rows.append({**base, "head": head, **scores, "status": "done", **extra})
        if not heads:
            empty = dict.fromkeys([*METRICS, *HIER_METRICS])
            rows.append({**base, "head": None, **empty, "status": c.status, "error": c.error})
    return json_safe(rows)


def _heads(cells: Sequence[Cell]) -> list[str]:
    heads: dict[str, None] = {}
    for c in cells:
        if c.status == "done":
            heads.update(dict.fromkeys((c.result or {}).get("heads", {})))
    return list(heads)


def _groups(cells: Sequence[Cell]) -> dict[tuple[str, str, str], list[Cell]]:
    """Cells by (start, mode, loss), in grid order."""
    groups: dict[tuple[str, str, str], list[Cell]] = {}
    for c in cells:
        groups.setdefault(c.group, []).append(c)
    return groups


def _done(group: list[Cell], head: str) -> list[dict[str, Any]]:
    return [
        c.result["heads"][head]
        for c in group
        if c.status == "done" and head in (c.result or {}).get("heads", {})
    ]


def _mean_std(values: list[float]) -> str:
    """'mean ± std' (sample std, ddof 1) over the finite values; '-' when there are none."""
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.3f}"
    return f"{np.mean(vals):.3f} ± {np.std(vals, ddof=1):.3f}"


def _head_table(cells: Sequence[Cell], head: str) -> list[str]:
    lines = [
        f"### {head}",
        "",
        "| start | mode | loss | " + " | ".join(METRICS.values()) + " | seeds done |",
        "|---" * (len(METRICS) + 4) + "|",
    ]
    for (start, mode, loss), group in _groups(cells).items():
        runs = _done(group, head)
        scored = [m for m in runs if _head_status(m) != NO_TEST_LABELS]
        stats = " | ".join(_mean_std([_num(m.get(k)) for m in scored]) for k in METRICS)
        if runs and not scored:
            stats = " | ".join([NO_TEST_LABELS] * len(METRICS))
        done = f"{len(runs)}/{len(group)}"
        if 0 < len(scored) < len(runs):
            done += f" ({len(runs) - len(scored)} with {NO_TEST_LABELS})"
        lines.append(f"| {start} | {mode} | {loss} | {stats} | {done} |")
    return lines + [""]


def _hier_table(cells: Sequence[Cell], head: str) -> list[str]:
    """Hierarchical scores of a head per start / mode / loss (mean ± std over the scored seeds),
    with the label rule the runs used; nothing for a head without them (single-label)."""
    groups = {
        g: [m for m in _done(c, head) if "hierarchical" in m] for g, c in _groups(cells).items()
    }
    if not any(groups.values()):
        return []
    lines = [
        f"#### {head}: hierarchical scores (label rule in brackets)",
        "",
        "| start | mode | loss | " + " | ".join(HIER_METRICS.values()) + " |",
        "|---" * (len(HIER_METRICS) + 3) + "|",
    ]
    for (start, mode, loss), runs in groups.items():
        scored = [m["hierarchical"] for m in runs if _head_status(m) != NO_TEST_LABELS]
        stats = " | ".join(_mean_std([_num(x.get(k)) for x in scored]) for k in HIER_METRICS)
        rules = ", ".join(sorted({str(x.get("label_rule")) for x in scored})) or "-"
        lines.append(f"| {start} | {mode} | {loss} ({rules}) | {stats} |")
    return lines + [""]


def _depth_table(cells: Sequence[Cell], head: str) -> list[str]:
    """Micro F1 per depth of a head per start / mode / loss (mean ± std over the scored seeds)."""
    groups = {g: _done(c, head) for g, c in _groups(cells).items()}
    depths = sorted(
        {int(d) for runs in groups.values() for m in runs for d in m.get("per_depth", {})}
    )
    if not depths:
        return []
    lines = [
        f"#### {head}: F1 per depth (micro)",
        "",
        "| start | mode | loss | " + " | ".join(f"depth {d}" for d in depths) + " |",
        "|---" * (len(depths) + 3) + "|",
    ]
    for (start, mode, loss), runs in groups.items():
        scored = [m for m in runs if _head_status(m) != NO_TEST_LABELS]
        cols = [_mean_std([_num(_at_depth(m, d).get("f1_micro")) for m in scored]) for d in depths]
        lines.append(f"| {start} | {mode} | {loss} | " + " | ".join(cols) + " |")
    return lines + [""]


def _at_depth(m: dict[str, Any], depth: int) -> dict[str, Any]:
    per = m.get("per_depth") or {}
    return per.get(str(depth)) or per.get(depth) or {}


DIFF_METRICS = ("au_prc", "macro_f1", "rare_recall")


def _by_seed(group: list[Cell], head: str, key: str) -> dict[int, float]:
    """seed -> the head's `key` of each scored done cell (finite values only)."""
    out = {}
    for c in group:
        m = ((c.result or {}).get("heads") or {}).get(head) if c.status == "done" else None
        if m is not None and _head_status(m) != NO_TEST_LABELS and math.isfinite(_num(m.get(key))):
            out[c.seed] = _num(m.get(key))
    return out


def best_generic(cells: Sequence[Cell], head: str, generic: set[str]) -> dict[tuple, str]:
    """(mode, loss) -> the generic start with the highest mean AU(PRC) on `head`."""
    best: dict[tuple, tuple[float, str]] = {}
    for (start, mode, loss), group in _groups(cells).items():
        values = list(_by_seed(group, head, "au_prc").values())
        if start in generic and values:
            mean = float(np.mean(values))
            if (mode, loss) not in best or mean > best[(mode, loss)][0]:
                best[(mode, loss)] = (mean, start)
    return {k: v[1] for k, v in best.items()}


def _paired(a: dict[int, float], b: dict[int, float]) -> str:
    """'mean ± std (n)' of the per-seed differences a - b over the seeds both have."""
    diffs = [a[s] - b[s] for s in sorted(set(a) & set(b))]
    if not diffs:
        return "-"
    spread = f" ± {np.std(diffs, ddof=1):.3f}" if len(diffs) > 1 else ""
    return f"{np.mean(diffs):+.3f}{spread} ({len(diffs)})"


def _diff_table(cells: Sequence[Cell], head: str, generic: set[str]) -> list[str]:
    """Each start minus the best generic start of its mode and loss, per metric: the mean and
    sample std (ddof 1) of the per-seed differences, over the seeds both have."""
    best = best_generic(cells, head, generic)
    if not best:
        return []
    groups = _groups(cells)
    names = " | ".join(f"Δ {METRICS[k]}" for k in DIFF_METRICS)
    lines = [
        f"#### {head}: difference to the best generic start (per-seed differences, mean ± std (seeds))",
        "",
        f"| start | mode | loss | best generic | {names} |",
        "|---" * (len(DIFF_METRICS) + 4) + "|",
    ]
    for (start, mode, loss), group in groups.items():
        ref = best.get((mode, loss))
        if ref is None:
            continue
        other = groups[(ref, mode, loss)]
        cols = [_paired(_by_seed(group, head, k), _by_seed(other, head, k)) for k in DIFF_METRICS]
        lines.append(f"| {start} | {mode} | {loss} | {ref} | " + " | ".join(cols) + " |")
    return lines + [""]


VERDICT_METRICS = ("au_prc", "rare_recall", "macro_f1")
EXACT_MAX_PAIRS = 20  # 2^20 sign patterns; beyond, 100,000 random ones (seeded)
SIGN_FLIP_TEXT = (
    "two-sided exact sign-flip permutation test of the mean per-seed difference: p is the share "
    "of the 2^n ways to flip the signs of the n differences whose mean is at least as far from 0 "
    "(no normality assumed, unlike a paired t-test with 2 degrees of freedom at 3 seeds; with n "
    "seeds p cannot go below 2^(1-n): 0.25 at 3 seeds, 0.0625 at 5)"
)


def sign_flip_p(diffs: Sequence[float]) -> float:
    """Two-sided p of the sign-flip permutation test of mean(diffs) = 0 (paired, exact up to
    2^20 sign patterns): P(|mean(s * d)| >= |mean(d)|) over random signs s; 1.0 for one pair."""
    d = np.asarray(diffs, dtype=float)
    if d.size == 0:
        raise ValueError("sign_flip_p needs at least one difference")
    if d.size == 1:
        return 1.0  # both sign patterns are as far from 0 as the one seen
    exact = d.size <= EXACT_MAX_PAIRS
    res = permutation_test(
        (d,),
        np.mean,
        permutation_type="samples",
        alternative="two-sided",
        n_resamples=np.inf if exact else 100_000,
        vectorized=True,
        axis=-1,
        random_state=0,  # used beyond EXACT_MAX_PAIRS only
    )
    return float(min(1.0, res.pvalue))


def loss_verdicts(
    cells: Sequence[Cell], head: str, pairs: Sequence[tuple[str, str]]
) -> list[dict[str, Any]]:
    """Per (weighted setting, MCLoss setting) pair, start, mode and metric: the per-seed
    differences weighted - MCLoss over the seeds both scored, their mean and the sign-flip p."""
    groups = _groups(cells)
    starts_modes = list(dict.fromkeys((start, mode) for start, mode, _ in groups))
    rows = []
    for weighted, mcloss in pairs:
        for start, mode in starts_modes:
            a, b = groups.get((start, mode, weighted)), groups.get((start, mode, mcloss))
            if a is None or b is None:
                continue
            for key in VERDICT_METRICS:
                w, m = _by_seed(a, head, key), _by_seed(b, head, key)
                seeds = sorted(set(w) & set(m))
                diffs = [w[s] - m[s] for s in seeds]
                mean = float(np.mean(diffs)) if diffs else math.nan
                rows.append(
                    dict(
                        start=start,
                        mode=mode,
                        weighted=weighted,
                        mcloss=mcloss,
                        metric=key,
                        seeds=seeds,
                        diffs=diffs,
                        mean_diff=mean,
                        sign=int(np.sign(mean)) if diffs and abs(mean) > 1e-12 else 0,
                        p=sign_flip_p(diffs) if diffs else math.nan,
                    )
                )
    return rows


def _verdict_text(row: dict[str, Any]) -> str:
    if not row["diffs"]:
        return "-"
    who = {1: "weighted higher", -1: "MCLoss higher", 0: "equal"}[row["sign"]]
    return f"{row['mean_diff']:+.3f}, {who}, p {row['p']:.3f} ({len(row['diffs'])} seeds)"


def _verdict_table(cells: Sequence[Cell], head: str, pairs: Sequence[tuple[str, str]]) -> list[str]:
    """The paired verdict weighted vs MCLoss of a head, one row per pair, start and mode; nothing
    when the grid lacks one of the two losses."""
    rows = loss_verdicts(cells, head, pairs)
    if not rows:
        return []
    names = " | ".join(f"Δ {METRICS[k]}" for k in VERDICT_METRICS)
    lines = [
        f"#### {head}: weighted loss vs MCLoss, paired over seeds",
        "",
        f"Δ = weighted − MCLoss of the same start, mode and seed, mean over the seeds both have; "
        f"p: {SIGN_FLIP_TEXT}.",
        "",
        f"| start | mode | weighted | MCLoss | {names} |",
        "|---" * (len(VERDICT_METRICS) + 4) + "|",
    ]
    cols: dict[tuple, list[str]] = {}
    for r in rows:
        key = (r["start"], r["mode"], r["weighted"], r["mcloss"])
        cols.setdefault(key, []).append(_verdict_text(r))
    for key, texts in cols.items():
        lines.append("| " + " | ".join(key) + " | " + " | ".join(texts) + " |")
    scored = [r for r in rows if r["diffs"]]
    below = sum(r["sign"] < 0 for r in scored)
    above = sum(r["sign"] > 0 for r in scored)
    strong = sum(r["p"] < 0.05 for r in scored)
    lines += [
        "",
        f"Weighted below MCLoss in {below}, above in {above} of {len(scored)} comparisons "
        f"({strong} with p < 0.05).",
    ]
    return lines + [""]


def _label(group: tuple[str, str, str]) -> str:
    return " / ".join(group)


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


DEPTH_PANELS = (("precision_micro", "precision"), ("recall_micro", "recall"), ("f1_micro", "F1"))


def _depth_means(members: list[Cell], head: str, key: str) -> dict[int, float]:
    """Per depth, the mean of `key` over the done seeds (NaN where no seed has a value)."""
    per_depth: dict[int, list[float]] = {}
    for m in _done(members, head):
        for depth, d in m.get("per_depth", {}).items():
            per_depth.setdefault(int(depth), []).append(_num(d.get(key)))
    return {
        d: float(np.nanmean(v)) if not np.all(np.isnan(v)) else math.nan
        for d, v in sorted(per_depth.items())
    }


def _depths_without_positives(cells: Sequence[Cell], head: str) -> set[int]:
    """Depths at which no done run of the head has a test positive (no recall or F1 there)."""
    seen: dict[int, int] = {}
    for c in cells:
        m = (c.result or {}).get("heads", {}).get(head) if c.status == "done" else None
        for depth, d in (m or {}).get("per_depth", {}).items():
            seen[int(depth)] = seen.get(int(depth), 0) + int(d.get("n_nodes_with_positives", 0))
    return {d for d, n in seen.items() if n == 0}


def plot_depth_scores(cells: Sequence[Cell], head: str, path: Path) -> Path:
    """Micro precision, recall and F1 per depth side by side, one line per start / mode / loss
    (mean over the done seeds): which start labels deeper *and* more precisely. A depth with no
    test positives has no recall or F1: it is shaded and labelled, not drawn as 0."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), sharey=True)
    empty = _depths_without_positives(cells, head)
    for ax, (key, name) in zip(axes, DEPTH_PANELS, strict=True):
        for group, members in _groups(cells).items():
            means = _depth_means(members, head, key)
            depths = [d for d, v in means.items() if not math.isnan(v) and d not in empty]
            if depths:
                ax.plot(depths, [means[d] for d in depths], "o-", label=_label(group))
        for d in sorted(empty):
            ax.axvspan(d - 0.4, d + 0.4, color="0.9", zorder=0)
            ax.text(d, 0.5, "no test\npositives", ha="center", va="center", fontsize=7, color="0.4")
        ax.set(xlabel="depth", title=f"{head}: {name} per depth", ylim=(0, 1.02))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylabel("micro score (mean over seeds)")
    axes[-1].legend(fontsize=7)
    return _save(fig, path)


def _first_seed(members: list[Cell], head: str) -> dict[str, Any] | None:
    runs = [c for c in members if c.status == "done" and head in c.result.get("heads", {})]
    return min(runs, key=lambda c: c.seed).result["heads"][head] if runs else None


def plot_pr_curves(cells: Sequence[Cell], head: str, path: Path) -> Path:
    """Micro precision-recall curve of the lowest done seed, one per start / mode / loss."""
    fig, ax = plt.subplots(figsize=(5, 5))
    for group, members in _groups(cells).items():
        m = _first_seed(members, head)
        if m and m.get("pr_curve", {}).get("recall"):
            ax.plot(m["pr_curve"]["recall"], m["pr_curve"]["precision"], label=_label(group))
    ax.set(xlabel="recall", ylabel="precision", title=f"{head}: micro PR (lowest seed)")
    ax.set(xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_rare_recall(cells: Sequence[Cell], head: str, path: Path) -> Path:
    """Per-node test recall against training frequency n_j / N_j (log x), lowest done seed."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for group, members in _groups(cells).items():
        m = _first_seed(members, head)
        rows = [
            r
            for r in (m or {}).get("per_node", [])
            if r.get("test_positives") and r.get("train_freq") is not None
        ]
        if rows:
            freq = np.maximum([r["train_freq"] for r in rows], ZERO_FREQ)
            ax.scatter(
                freq, [_num(r["recall"]) for r in rows], s=14, alpha=0.7, label=_label(group)
            )
    ax.axvline(RARE_FREQ, color="grey", linestyle="--", linewidth=1, label=f"rare < {RARE_FREQ}")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10))  # labels at powers of ten only:
    ax.xaxis.set_minor_formatter(NullFormatter())  # unlabelled minor ticks never overlap
    ax.set_xlim(ZERO_FREQ / 1.5, 1.5)  # 10^-3 (never positive) to 10^0 always labelled
    ax.set(
        xlabel=f"node training frequency (0 drawn at {ZERO_FREQ})",
        ylabel="test recall",
        title=f"{head}: node recall vs frequency (lowest seed)",
        ylim=(-0.03, 1.03),
    )
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_hop_distance(cells: Sequence[Cell], head: str, path: Path) -> Path:
    """Mean test hop distance (over the done seeds) per start / mode / loss, one bar per label
    rule (lower is better: the label is fewer edges from the truth)."""
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(_groups(cells))), 4))
    groups = list(_groups(cells).items())
    rules = ("expected-hops", "threshold", "min-probability")
    width = 0.8 / len(rules)
    for r, rule in enumerate(rules):
        means = []
        for _, members in groups:
            vals = [
                _num((m.get("hierarchical") or {}).get("hop_distance_by_rule", {}).get(rule))
                for m in _done(members, head)
            ]
            finite = [v for v in vals if math.isfinite(v)]
            means.append(float(np.mean(finite)) if finite else math.nan)
        ax.bar(np.arange(len(groups)) + (r - 1) * width, means, width, label=rule)
    ax.set_xticks(np.arange(len(groups)), [_label(g) for g, _ in groups], fontsize=7, rotation=20)
    ax.set(ylabel="mean hop distance to the truth", title=f"{head}: hop distance per label rule")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_reliability(cells: Sequence[Cell], head: str, path: Path) -> Path:
    """Reliability diagram (positive share against mean probability per bin) of the lowest done
    seed per start / mode / loss: after calibration solid, before dashed; the diagonal is perfect."""
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linewidth=1)
    for group, members in _groups(cells).items():
        x = ((_first_seed(members, head) or {}).get("hierarchical")) or {}
        after, before = x.get("reliability") or {}, x.get("reliability_uncalibrated") or {}
        if after.get("confidence"):
            line = ax.plot(after["confidence"], after["accuracy"], "o-", label=_label(group))
            color = line[0].get_color()
            if before.get("confidence"):
                ax.plot(before["confidence"], before["accuracy"], "x--", color=color, alpha=0.6)
    ax.set(xlabel="mean probability", ylabel="positive share", xlim=(0, 1), ylim=(0, 1.02))
    ax.set_title(f"{head}: reliability (solid calibrated, dashed raw)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def _status_lines(cells: Sequence[Cell]) -> list[str]:
    counts = {s: sum(c.status == s for c in cells) for s in STATUSES}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    if counts["failed"] or counts["missing"]:
        head = (
            f"**PARTIAL grid**: {summary} of {len(cells)} cells. Re-run the same command to resume."
        )
    elif counts["skipped"]:
        head = f"Grid complete except skipped cells: {summary} of {len(cells)} cells."
    else:
        head = f"Grid complete: {counts['done']} of {len(cells)} cells done."
    lines = [head, ""]
    others = [c for c in cells if c.status != "done"]
    lines += ["## Cells not done", ""]
    if not others:
        return lines + ["None.", ""]
    lines += ["| cell | status | reason |", "|---|---|---|"]
    for c in others:
        reason = (c.error or "not run (grid interrupted or not reached)").replace("\n", " ")
        lines.append(f"| {c.name} | {c.status} | {reason.replace('|', '/')[:300]} |")
    return lines + [""]


def _weights_lines(cells: Sequence[Cell]) -> list[str]:
    """Which weights each start's done runs used: file and sha256 (every distinct one, so an
    export remade in the middle of a grid shows as two rows)."""
    seen: dict[tuple[str, str | None, str | None, str], int] = {}
    for c in cells:
        w = (c.result or {}).get("weights") if c.status == "done" else None
        if w is not None:
            key = (c.start, w.get("file"), w.get("sha256"))
            key = (*key, (c.result or {}).get("pool") or "-")
            seen[key] = seen.get(key, 0) + 1
    lines = ["## Weights per start", "", "| start | file | sha256 | pool | runs |"]
    lines.append("|---|---|---|---|---|")
    for (start, file, sha, pool), n in seen.items():
        where = file or "- (random init or the hub)"
        lines.append(f"| {start} | {where} | {sha or '-'} | {pool} | {n} |")
    return lines + [""]


def _rel(path: Path, root: Path) -> str:
    return os.path.relpath(path, root)


def _link(path: Path, root: Path) -> str:
    """A markdown link relative to the report, or '-' when the file does not exist."""
    return f"[{path.name}]({_rel(path, root)})" if path.is_file() else "-"


def write_report(
    output_dir: str | Path,
    cells: Sequence[Cell],
    *,
    commands: Sequence[str] = (),
    configs: Sequence[str | Path] = (),
    plots: bool = True,
    generic: Sequence[str] = (),
    loss_pairs: Sequence[tuple[str, str]] = (),
) -> Path:
    """Write output_dir/report.md, results.json and (plots=True) plots/*.png; return report.md.

    `commands`: the exact commands that made the grid; `configs`: config files to link;
    `generic`: the starts not trained on the domain (ImageNet, DINOv2...), which each start is
    compared with; `loss_pairs`: (weighted setting, MCLoss setting) names given a paired verdict.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result_rows(cells), indent=2) + "\n")
    heads = _heads(cells)
    lines = ["# Comparison report", ""] + _status_lines(cells)
    lines += ["## Test metrics per head (mean ± std over seeds)", ""]
    lines += [
        f"Rare nodes: 0 < training frequency < {RARE_FREQ} with test positives ('-': none).",
        "",
    ]
    for head in heads:
        lines += _head_table(cells, head)
        lines += _depth_table(cells, head)
        lines += _hier_table(cells, head)
        lines += _diff_table(cells, head, set(generic))
        lines += _verdict_table(cells, head, loss_pairs)
    if plots and heads:
        (out / "plots").mkdir(exist_ok=True)
        lines += ["## Plots", ""]
        for head in heads:
            for kind, plot in (
                ("depth_scores", plot_depth_scores),
                ("pr", plot_pr_curves),
                ("rare_recall", plot_rare_recall),
                ("hop_distance", plot_hop_distance),
                ("reliability", plot_reliability),
            ):
                if kind in HIER_PLOTS and not _hier_table(cells, head):
                    continue  # a single-label head has no hop distance or calibration
                png = plot(cells, head, out / "plots" / f"{head}_{kind}.png")
                lines.append(f"![{head} {kind}]({_rel(png, out)})")
            lines.append("")
    lines += _weights_lines(cells)
    lines += ["## Commands", "", "```"] + list(commands) + ["```", ""]
    lines += ["## Configs", ""]
    lines += [f"- {_link(Path(p), out)} ({p})" for p in configs]
    reproduce = "`hml-finetune train --config <run>/config.yaml --overwrite` reruns one cell."
    lines += [
        "",
        "## All cells",
        "",
        reproduce,
        "",
        "| cell | status | metrics | config |",
        "|---|---|---|---|",
    ]
    for c in cells:
        links = [_link(c.run_dir / f, out) for f in ("metrics.md", "config.yaml")]
        lines.append(f"| {c.name} | {c.status} | {links[0]} | {links[1]} |")
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
