"""Label schemes: which label paths a head accepts, so any hierarchy can train an HML head.

A head's scheme is `catami` (the built-in 311 paths), `data` (whatever paths the splits use, and
their ancestors) or a scheme file: CSV or text, one label path per line, an optional header line,
trailing commas ignored (like `catami_paths.csv`); e.g. SQUIDLE's extended CATAMI, a WoRMS lineage
list, a lab's own condition or morphology classes. Configured per head in `heads.schemes`.

Every label becomes a node `[HEAD] > level 1 > level 2 ...`: a path with a bracketed root keeps it
(and must name its own head), a path without one (`Animalia > Cnidaria`, a flat class `ACRO`) gets
its head's root. A scheme's paths may use another separator (`heads.separators`), read as ` > `.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ssl_benthic.core.catami import HEADS, SEP, bracketed_head, load_catami_paths
from ssl_benthic.core.errors import ConfigError, LabelError
from ssl_benthic.core.paths import sha256_file

if TYPE_CHECKING:
    pass

__all__ = [
    "Scheme",
    "head_root",
    "load_scheme",
    "scheme_from_record",
    "HEADER_WORDS",
]

HEADER_WORDS = ("path", "paths", "label", "labels", "name", "catami")


def head_root(head: str) -> str:
    """A head's root node: `condition` -> `[CONDITION]`."""
    return f"[{head.upper()}]"


@dataclass(frozen=True)
class Scheme:
    """The scheme of one head: its name (`catami`, `data` or the file as given), separator, the
    nodes it accepts (None: any, for `data`), the file's sha256, and whether its paths carry a
    bracketed root (how labels are written back out)."""

    head: str
    name: str
    sep: str = SEP
    nodes: frozenset[str] | None = None
    sha256: str | None = None
    bracketed: bool = True
    flat: bool = False

    def node(self, label: str) -> str:
        """The hierarchy node of a label: `[HEAD] > a > b` (the separator read as ` > `)."""
        if self.flat:
            return f"{head_root(self.head)}{SEP}{label}"
        parts = [p.strip() for p in label.split(self.sep)]
        path = SEP.join(parts)
        return path if bracketed_head(path) is not None else f"{head_root(self.head)}{SEP}{path}"

    def label(self, node: str) -> str:
        """A node written as the scheme writes its labels (the inverse of `node`)."""
        prefix = f"{head_root(self.head)}{SEP}"
        if (self.flat or not self.bracketed) and node.startswith(prefix):
            node = node[len(prefix) :]
        return node.replace(SEP, self.sep) if not self.flat else node

    def check(self, label: str, key: str, source: str) -> str:
        """The node of `label`, or a LabelError naming the sample, head, label and the nearest
        path of the scheme."""
        where = f"{source}: sample {key!r}" if source else f"sample {key!r}"
        if self.flat and (not isinstance(label, str) or not label.strip() or SEP.strip() in label):
            raise LabelError(
                f"{where}: flat head {self.head!r} label {label!r} must be a plain class name "
                f"(non-empty, no {SEP.strip()!r})"
            )
        node = self.node(label)
        owner = bracketed_head(node)
        if owner != self.head:
            raise LabelError(
                f"{where}: label {label!r} is filed under head {self.head!r} but belongs to "
                f"{owner!r}"
            )
        if self.nodes is not None and node not in self.nodes:
            near = difflib.get_close_matches(node, sorted(self.nodes), n=1, cutoff=0.0)
            hint = f"; the nearest path is {self.label(near[0])!r}" if near else ""
            raise LabelError(
                f"{where}: label {label!r} (head {self.head!r}) is not in the scheme "
                f"{self.name}{hint}"
            )
        return node

    def record(self) -> dict[str, Any]:
        """What checkpoints and results keep of the scheme (never the file itself)."""
        return {
            "name": self.name,
            "file": Path(self.name).name if self.name not in ("catami", "data") else None,
            "sha256": self.sha256,
            "sep": self.sep,
            "bracketed": self.bracketed,
            "flat": self.flat,
        }


def _prefixes(node: str) -> list[str]:
    """`[H] > a > b` -> [`[H] > a`, `[H] > a > b`]: a label may stop at any depth."""
    parts = node.split(SEP)
    return [SEP.join(parts[:k]) for k in range(2, len(parts) + 1)]


def _scheme_lines(path: Path, head: str) -> list[str]:
    """The label paths of a scheme file: first column, trailing commas and blank lines dropped,
    and a first line that is a header word (or the head's name) skipped."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: the scheme file is not UTF-8 ({exc.reason})") from None
    lines = [line.strip().rstrip(",").strip().strip('"') for line in text.splitlines()]
    lines = [line for line in lines if line]
    if lines and lines[0].lower() in (*HEADER_WORDS, head.lower()):
        lines = lines[1:]
    if not lines:
        raise ConfigError(f"{path}: the scheme file (head {head!r}) lists no label paths")
    return lines


def _from_paths(head: str, name: str, paths: list[str], sep: str, sha: str | None) -> Scheme:
    """The scheme of `head` from the paths under its own root (a file may cover several heads, as
    the CATAMI file covers four; a path without a bracketed root is the head's own); a head with no
    path in the file is a ConfigError naming the roots the file has."""
    probe = Scheme(head, name, sep, None, sha)
    nodes: set[str] = set()
    roots: dict[str, None] = {}
    bracketed = False
    for line in paths:
        node = probe.node(line)
        owner = bracketed_head(node)
        roots[head_root(owner or head)] = None
        if owner == head:
            nodes.update(_prefixes(node))
            bracketed |= bracketed_head(line.split(sep)[0].strip()) is not None
    if not nodes:
        found = ", ".join(sorted(roots))
        raise ConfigError(
            f"{name}: no path of head {head!r} (root {head_root(head)}); the file's roots: {found}"
        )
    return Scheme(head, name, sep, frozenset(nodes), sha, bracketed)


def load_scheme(head: str, spec: str, sep: str = SEP, flat: bool = False) -> Scheme:
    """The scheme `spec` of `head`: 'catami', 'data', or the path of a scheme file."""
    if flat:
        return Scheme(head, "data", SEP, None, None, bracketed=False, flat=True)
    if spec == "data":
        return Scheme(head, "data", sep, bracketed=False)
    if spec == "catami":
        if head not in HEADS:
            raise ConfigError(
                f"heads.schemes.{head}: 'catami' covers the heads {', '.join(HEADS)} only; "
                "use a scheme file or 'data'"
            )
        return _from_paths(head, "catami", _catami_paths(head), SEP, None)
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"heads.schemes.{head}: scheme file {spec!r} not found")
    sha = sha256_file(path)
    return _from_paths(head, spec, _scheme_lines(path, head), sep, sha)


def _catami_paths(head: str) -> list[str]:
    return [p for p in load_catami_paths() if bracketed_head(p) == head]


def scheme_from_record(head: str, record: dict[str, Any] | None) -> Scheme:
    """The scheme a checkpoint recorded, for writing labels back out (no file is read)."""
    r = record or {}
    return Scheme(
        head,
        r.get("name", "catami"),
        r.get("sep", SEP),
        None,
        r.get("sha256"),
        r.get("bracketed", True),
        r.get("flat", False),
    )
