"""kNN scores of an embedding against labelled shards, at each depth of each head.

The bank is the labelled shards embedded with the same start; the queries are the embedding's own
rows. At a (head, depth), a sample's label is its path cut to that depth (`knn_monitor.label_at_depth`:
unknown, too shallow or ambiguous samples are left out) and the score is the kNN monitor's top-1
accuracy (`knn_monitor.knn_top1`: lightly's `knn_predict` on L2-normalised features, the k most
cosine-similar bank samples voting with weight exp(sim / t)). A query class the bank lacks counts
as a miss. Depths where the bank has fewer than two classes are not scored.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ssl_benthic.core.catami import depth_of
from ssl_benthic.core.devices import pick_device
from ssl_benthic.core.errors import UserError
from ssl_benthic.core.paths import sha256_file
from ssl_benthic.data.shards.format import MANIFEST
from ssl_benthic.embed.inputs import ShardSource
from ssl_benthic.embed.run import features_of
from ssl_benthic.embed.start import Start
from ssl_benthic.pretrain.knn_monitor import knn_top1, label_at_depth

__all__ = ["knn_table", "format_table", "read_index_labels", "knn_against"]


def _cut(labels: list[dict], head: str, depth: int) -> list[str | None]:
    return [label_at_depth({"labels": lab}, head, depth) for lab in labels]


def _score(
    bank: torch.Tensor,
    b: list[str | None],
    query: torch.Tensor,
    q: list[str | None],
    k: int,
    t: float,
) -> dict[str, Any] | None:
    classes = sorted({x for x in b if x is not None})
    if len(classes) < 2:
        return None
    classes += sorted({x for x in q if x is not None} - set(classes))
    index = {c: i for i, c in enumerate(classes)}
    bi = [i for i, x in enumerate(b) if x is not None]
    qi = [i for i, x in enumerate(q) if x is not None]
    if not qi:
        return None
    top1 = knn_top1(
        bank[bi],
        torch.tensor([index[b[i]] for i in bi]),
        query[qi],
        torch.tensor([index[q[i]] for i in qi]),
        len(classes),
        k,
        t,
    )
    return {"classes": len(classes), "bank": len(bi), "query": len(qi), "top1": top1}


def knn_table(
    bank: np.ndarray,
    bank_labels: list[dict],
    query: np.ndarray,
    query_labels: list[dict],
    k: int,
    temperature: float,
) -> list[dict[str, Any]]:
    """One row {head, depth, classes, bank, query, top1} per scored (head, depth), heads sorted."""
    # float64: the vote weights exp(sim / t) overflow float32 for t below about 1/88
    b = nn.functional.normalize(torch.from_numpy(np.asarray(bank, np.float64)), dim=1)
    q = nn.functional.normalize(torch.from_numpy(np.asarray(query, np.float64)), dim=1)
    rows = []
    for head in sorted({h for lab in bank_labels for h in lab}):
        deepest = max(depth_of(p) for lab in bank_labels for p in lab.get(head, []))
        for depth in range(deepest + 1):
            cut_b, cut_q = _cut(bank_labels, head, depth), _cut(query_labels, head, depth)
            scored = _score(b, cut_b, q, cut_q, k, temperature)
            if scored is not None:
                rows.append({"head": head, "depth": depth, **scored})
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as an aligned text table."""
    lines = [f"{'head':<12} {'depth':>5} {'classes':>7} {'bank':>7} {'query':>7} {'top1':>6}"]
    for r in rows:
        lines.append(
            f"{r['head']:<12} {r['depth']:>5} {r['classes']:>7} {r['bank']:>7} "
            f"{r['query']:>7} {r['top1']:>6.3f}"
        )
    return "\n".join(lines)


def read_index_labels(index_csv: Path) -> list[dict[str, list[str]]]:
    """{head: paths} of every row of an index.csv (`labels.<head>` cells split at `|`)."""
    with open(index_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [
        {k[len("labels.") :]: v.split("|") for k, v in r.items() if k.startswith("labels.") and v}
        for r in rows
    ]


def knn_against(
    out: str | Path,
    shards: str | Path,
    start: Start,
    batch_size: int,
    device: str,
    k: int,
    temperature: float,
) -> list[dict[str, Any]]:
    """Score the embedding in `out` against `shards` embedded with `start`; write out/knn.json."""
    out = Path(out)
    query_labels = read_index_labels(out / "index.csv")
    if not any(query_labels):
        raise UserError(f"--knn: no row of {out / 'index.csv'} has a label to score")
    query = np.load(out / "features.npy").astype(np.float32)
    source = ShardSource(Path(shards))
    bank, records, _ = features_of(source, start, batch_size, pick_device(device), "kNN bank")
    rows = knn_table(bank, [r.labels for r in records], query, query_labels, k, temperature)
    if not rows:
        raise UserError(f"--knn {shards}: no head and depth with two classes in both sets")
    result = {
        "bank": {"path": str(shards), "manifest_sha256": sha256_file(Path(shards) / MANIFEST)},
        "k": k,
        "temperature": temperature,
        "rows": rows,
    }
    (out / "knn.json").write_text(json.dumps(result, indent=2) + "\n")
    return rows
