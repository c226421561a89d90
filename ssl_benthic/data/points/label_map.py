"""Label codes of an annotation tool (CoralNet's short codes) mapped to label paths and heads.

A map is a CSV with the header `code,path` and an optional `head` column. A path with a bracketed
root (`[BIOTA] > Biota > Cnidaria`) belongs to the head named by that root lowercased (`biota`); a
path without one to the row's `head` cell, else to `label`. Without a map every code is its own label
of the head `label`. The map goes into the manifest's `source.label_map` ({code: {path, head}}), so
predictions can be turned back into the tool's codes.

A point export gives one label per point, so a point whose codes fall in one head is a known negative
of every other head of the map (`negative_heads`, recorded per sample by make-shards). Where heads
can apply to the same point (a condition code on a point that also shows a biota class the annotator
did not record), the optional `overlap` column says so per code: the heads (separated by `|`) a point
with that code may also belong to, or `*` for every head; such heads are left unknown for it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ssl_benthic.core.catami import bracketed_head
from ssl_benthic.core.errors import DataError
from ssl_benthic.data.csv_rows import DEFAULT_ENCODING, read_csv

__all__ = ["DEFAULT_HEAD", "LabelMap", "head_of_path", "read_label_map"]

DEFAULT_HEAD = "label"


def head_of_path(path: str, default: str = DEFAULT_HEAD) -> str:
    """The head of a label path: its bracketed root lowercased (`[BIOTA] > ...` -> `biota`), else `default`."""
    return bracketed_head(path) or default


@dataclass(frozen=True)
class LabelMap:
    """code -> (head, path); `file` is where it came from (None: codes are their own labels)."""

    entries: dict[str, tuple[str, str]]
    file: str | None = None
    overlap: dict[str, frozenset[str]] = field(default_factory=dict)  # code -> heads, "*" = all

    def label(self, code: str) -> tuple[str, str]:
        """(head, path) of a code; without a map file, (`label`, code)."""
        if self.file is None:
            return DEFAULT_HEAD, code
        return self.entries[code]

    def heads(self) -> list[str]:
        """Every head of the map, sorted."""
        return sorted({head for head, _ in self.entries.values()})

    def negative_heads(self, codes: list[str]) -> list[str]:
        """The heads a point with `codes` is a known negative of: every head of the map that no
        code of the point falls in, less those its codes overlap with (`overlap`)."""
        if self.file is None or not codes:
            return []
        own = {self.entries[c][0] for c in codes}
        shared = set().union(*(self.overlap.get(c, frozenset()) for c in codes))
        if "*" in shared:
            return []
        return [h for h in self.heads() if h not in own and h not in shared]

    def check_codes(self, counts: Counter, where: Path) -> None:
        """Refuse codes of `where` that the map lacks, listing each with its count (largest first)."""
        if self.file is None:
            return
        missing = sorted(
            ((n, c) for c, n in counts.items() if c not in self.entries),
            key=lambda nc: (-nc[0], nc[1]),
        )
        if missing:
            listed = ", ".join(f"{c!r} ({n})" for n, c in missing)
            raise DataError(
                f"{where}: {len(missing)} label codes are not in the label map {self.file}: "
                f"{listed}; add them as code,path rows; nothing written"
            )

    def source(self) -> dict:
        """What the manifest's `source` records: the map file and {code: {path, head}}."""
        if self.file is None:
            return {"label_map": None}
        entries = {c: {"head": h, "path": p} for c, (h, p) in sorted(self.entries.items())}
        return {"label_map_file": self.file, "label_map": entries}


def read_label_map(path: str | Path | None, encoding: str = DEFAULT_ENCODING) -> LabelMap:
    """Read a `code,path[,head]` CSV; an empty code or path, or a code listed twice, names its row."""
    if path is None:
        return LabelMap({})
    path = Path(path)
    header, rows = read_csv(path, encoding)
    if "code" not in header or "path" not in header:
        raise DataError(f"{path}: a label map needs the columns code,path (found: {header})")
    entries: dict[str, tuple[str, str]] = {}
    overlap: dict[str, frozenset[str]] = {}
    for line, row in rows:
        code, label = row["code"].strip(), row["path"].strip()
        if not code or not label:
            raise DataError(f"{path} row {line}: empty code or path")
        if code in entries:
            raise DataError(f"{path} row {line}: code {code!r} is listed twice")
        default = (row.get("head") or "").strip() or DEFAULT_HEAD
        entries[code] = (head_of_path(label, default), label)
        shared = frozenset(h.strip() for h in (row.get("overlap") or "").split("|") if h.strip())
        if shared:
            overlap[code] = shared
    if not entries:
        raise DataError(f"{path}: the label map has no rows")
    _check_overlap(path, overlap, {h for h, _ in entries.values()})
    return LabelMap(entries, str(path), overlap)


def _check_overlap(path: Path, overlap: dict[str, frozenset[str]], heads: set[str]) -> None:
    """An `overlap` cell naming a head the map does not have is a typo that would make that
    code's points negatives silently: refuse it, naming the code and the heads."""
    for code, shared in overlap.items():
        unknown = sorted(shared - heads - {"*"})
        if unknown:
            raise DataError(
                f"{path}: code {code!r}: overlap names head(s) {unknown} that the map does not "
                f"have (heads: {', '.join(sorted(heads))}; '*' means every head)"
            )
