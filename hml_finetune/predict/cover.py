"""Percent cover from point predictions: the share of an image's points whose label falls under each
node, at each depth, per image and per group of images (a metadata column: site, transect).

For a head, depth d and node v of depth d: points(v) = the points whose label is v or lies under v;
cover(v) = points(v) / the image's points (every point of the image, readable or not). A point whose
label stops above d (the head's root, or a node shallower than d) counts under `unresolved`, and a
point that could not be read under `unreadable`, so the covers at each depth sum to 1 and no point
is silently dropped. A group row pools the points of the group's images (image left empty).

Long format, one row per (group, image, head, depth, node) with points > 0 (absent rows are 0):
`group, image, head, depth, node, points, cover`, for R's read.csv and pandas' read_csv.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from hml_finetune.hml.hierarchy import Hierarchy
from hml_finetune.hml.schemes import Scheme
from ssl_benthic.core.errors import ConfigError

__all__ = ["UNRESOLVED", "UNREADABLE", "COLUMNS", "CoverCounts", "cover_groups", "write_cover"]

UNRESOLVED, UNREADABLE = "unresolved", "unreadable"
COLUMNS = ("group", "image", "head", "depth", "node", "points", "cover")


def _at_depth(h: Hierarchy | None, node: str, d: int) -> list[str]:
    """The ancestors-or-self of `node` at depth d ([UNRESOLVED] when `node` is shallower; a
    single-label head's class is its own depth-1 node)."""
    if h is None:
        return [node] if d == 1 else [UNRESOLVED]
    if h.depth[node] < d:
        return [UNRESOLVED]
    return [a for a in [node, *h.ancestors(node)] if h.depth[a] == d]


class CoverCounts:
    """Point counts per (image, head, depth, node), fed one point at a time by `predict`."""

    def __init__(
        self,
        hierarchies: dict[str, Hierarchy | None],
        schemes: dict[str, Scheme],
        groups: dict[str, str] | None = None,
    ) -> None:
        """`hierarchies`: per head its hierarchy (None for a single-label head); `groups`: image ->
        group (None: no group rows)."""
        self.hierarchies, self.schemes, self.groups = hierarchies, schemes, groups
        self.points: Counter[str] = Counter()  # image -> points
        self.counts: dict[tuple[str, str], Counter[str]] = {}  # (image, head) -> node -> points
        self.order: dict[str, None] = {}

    def add(self, image: str, nodes: dict[str, str] | None) -> None:
        """One point of `image`: its label node per head, or None when it could not be read."""
        self.order.setdefault(image)
        self.points[image] += 1
        for head in self.hierarchies:
            node = UNREADABLE if nodes is None else nodes[head]
            self.counts.setdefault((image, head), Counter())[node] += 1

    def depths(self, head: str, asked: Sequence[int] | None) -> list[int]:
        """The depths asked for, or every depth of the head (1 for a single-label head)."""
        if asked:
            return list(asked)
        h = self.hierarchies[head]
        return list(range(1, int(h.depth_array.max(initial=0)) + 1)) if h is not None else [1]

    def _name(self, head: str, node: str) -> str:
        special = node in (UNRESOLVED, UNREADABLE) or self.hierarchies[head] is None
        return node if special else self.schemes[head].label(node)

    def _by_depth(self, images: Iterable[str], head: str, d: int) -> Counter[str]:
        """Points per node name at depth d over `images`."""
        out: Counter[str] = Counter()
        for image in images:
            for node, n in self.counts.get((image, head), Counter()).items():
                under = [UNREADABLE] if node == UNREADABLE else None
                for v in under or _at_depth(self.hierarchies[head], node, d):
                    out[self._name(head, v)] += n
        return out

    def rows(self, depths: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """The long-format rows: per image, then (with groups) per group, by head and depth,
        nodes by points (most first) then name."""
        units = [((self.groups or {}).get(im, ""), im, [im]) for im in self.order]
        if self.groups is not None:
            members: dict[str, list[str]] = {}
            for im in self.order:
                members.setdefault(self.groups.get(im, ""), []).append(im)
            units += [(g, "", ims) for g, ims in members.items()]
        out = []
        for group, image, ims in units:
            total = sum(self.points[im] for im in ims)
            for head in self.hierarchies:
                for d in self.depths(head, depths):
                    counts = self._by_depth(ims, head, d)
                    for node, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
                        row = {"group": group, "image": image, "head": head, "depth": d}
                        out.append({**row, "node": node, "points": n, "cover": n / total})
        return out


def cover_groups(points: Iterable[Any], column: str) -> dict[str, str]:
    """image -> its value of the export's `column` (a point's metadata); a ConfigError when the
    column is missing or varies within one image (cover is grouped by image)."""
    out: dict[str, str] = {}
    for p in points:
        if column not in p.meta:
            known = ", ".join(sorted(p.meta)) or "none"
            raise ConfigError(
                f"--cover-by {column!r}: not a column of the export (others: {known})"
            )
        value = str(p.meta[column]).strip()
        if out.setdefault(p.image, value) != value:
            raise ConfigError(
                f"--cover-by {column!r}: image {p.image!r} has points with values "
                f"{out[p.image]!r} and {value!r}; it must be one value per image"
            )
    return out


def write_cover(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Write the rows as CSV with `COLUMNS` (cover to 6 decimals)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({**r, "cover": f"{r['cover']:.6f}"})
    return path
