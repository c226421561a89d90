"""`ssl-benthic summary DIR`: what a shard folder holds, per split, head and depth.

Reads only the `.json` members of each shard listed in a split's manifest.json (no image decoding).
Depth is the number of levels below the head root (`[BIOTA] > Biota > Sponges` has depth 2), with the
separator each head's labels use (`--label-sep`, else the one of `SEPARATORS` found in most of its
labels: `Animalia/Cnidaria/Anthozoa` has depth 3). A label
"stops early" when it is a strict prefix of the sample's `true_labels` path (synthetic sample only);
for any data set, "non-leaf" counts labels at a CATAMI node that has deeper nodes below it.
"""

from __future__ import annotations

import argparse
import json
import tarfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from ssl_benthic.core.catami import HEADS, SEP, has_children, head_of, is_valid_path, label_depth
from ssl_benthic.data.shards.format import MANIFEST
from ssl_benthic.data.shards.manifest import split_folders


def iter_metas(folder: Path) -> Iterator[tuple[str, dict]]:
    """(key, metadata) of every sample in the shards that `folder/manifest.json` lists."""
    manifest = json.loads((folder / MANIFEST).read_text("utf-8"))
    for entry in manifest["shards"]:
        with tarfile.open(folder / entry["file"], "r:") as tar:
            for info in tar:
                if info.isreg() and info.name.endswith(".json"):
                    yield info.name[: -len(".json")], json.loads(tar.extractfile(info).read())


SEPARATORS = (" > ", ">", " / ", "/", " | ", "|", " :: ", "::", ";")  # ties: the earlier one


def _stops_early(path: str, true_paths: list[str]) -> bool:
    return any(t.startswith(path + SEP) for t in true_paths)


def label_separator(paths: list[str]) -> str:
    """The separator of `SEPARATORS` that splits the most of `paths` (` > ` when none does)."""
    counts = [sum(sep in p for p in paths) for sep in SEPARATORS]
    best = max(range(len(SEPARATORS)), key=lambda i: (counts[i], -i))
    return SEPARATORS[best] if counts[best] else SEP


def summarize_split(folder: Path, label_sep: str | None = None) -> dict:
    """Counts for one split: samples, labelled samples, and per head annotated / unannotated / early /
    non-leaf / invalid counts and a histogram of label depths (levels split at `label_sep`, else at
    the head's own separator, `label_separator`)."""
    metas = [m for _, m in iter_metas(folder)]
    labelled = [m for m in metas if any((m.get("labels") or {}).values())]
    heads = sorted({h for m in labelled for h in (*m["labels"], *m.get("true_labels", {}))})
    # an image with empty label lists (an unlabelled row of a CSV) counts as unlabelled
    out: dict = {"samples": len(metas), "labelled": len(labelled), "heads": {}}
    for head in heads:
        depth: Counter = Counter()
        row = {
            "annotated": 0,
            "unannotated": 0,
            "labels": 0,
            "stop_early": 0,
            "non_leaf": 0,
            "invalid": 0,
        }
        sep = label_sep or label_separator(
            [p for m in labelled for p in m["labels"].get(head) or []]
        )
        for m in labelled:
            paths = m["labels"].get(head) or []
            row["annotated" if paths else "unannotated"] += 1
            true = m.get("true_labels", {}).get(head, [])
            for p in paths:
                row["labels"] += 1
                depth[label_depth(p, sep)] += 1
                row["stop_early"] += _stops_early(p, true)
                if head in HEADS:  # CATAMI heads are checked against the scheme; others cannot be
                    valid = is_valid_path(p) and head_of(p) == head
                    row["invalid"] += not valid
                    row["non_leaf"] += valid and has_children(p)
                else:
                    row["invalid"] = row["non_leaf"] = None
        out["heads"][head] = {**row, "depth": dict(sorted(depth.items()))}
    return out


def summarize(dir: str | Path, label_sep: str | None = None) -> dict:
    """Summary of every split under `dir` (a shard folder, or a folder of split folders)."""
    folders = split_folders(dir).items()
    return {"splits": {name: summarize_split(folder, label_sep) for name, folder in folders}}


def format_summary(summary: dict) -> str:
    """The summary as two plain-text tables: samples per split, then labels per split and head."""
    lines = [f"{'split':<12}{'samples':>9}{'labelled':>10}"]
    for name, s in summary["splits"].items():
        lines.append(f"{name:<12}{s['samples']:>9}{s['labelled']:>10}")
    depths = sorted(
        {
            int(d)
            for s in summary["splits"].values()
            for h in s["heads"].values()
            for d in h["depth"]
        }
    )
    head_cols = f"{'split':<12}{'head':<11}{'annot':>7}{'unannot':>9}{'early':>7}{'nonleaf':>9}{'invalid':>9}"
    lines += ["", head_cols + "".join(f"{'d' + str(d):>6}" for d in depths)]
    for name, s in summary["splits"].items():
        for head, h in s["heads"].items():
            nonleaf, invalid = (("-" if v is None else v) for v in (h["non_leaf"], h["invalid"]))
            row = f"{name:<12}{head:<11}{h['annotated']:>7}{h['unannotated']:>9}{h['stop_early']:>7}{nonleaf:>9}{invalid:>9}"
            lines.append(row + "".join(f"{h['depth'].get(d, 0):>6}" for d in depths))
    lines.append(
        "(dN = labels N levels below the head root; early = shallower than the true label; "
        "nonleaf/invalid against the CATAMI scheme, '-' for heads of other schemes)"
    )
    return "\n".join(lines)


def cli_summary(args: argparse.Namespace) -> int:
    """`ssl-benthic summary DIR`: print the tables (a DataError, exit 2, if DIR holds no shards)."""
    print(format_summary(summarize(args.dir, args.label_sep)))
    return 0
