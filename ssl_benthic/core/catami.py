"""The CATAMI label scheme (the paths BenthicNet labels use), shipped as package data.

A path reads `[HEAD] > Level 1 > Level 2 > ...`; its head is the bracketed root in lower case, and its
depth is the number of levels below that root (`[BIOTA] > Biota > Sponges` has depth 2).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

SEP = " > "
HEADS = ("biota", "substrate", "relief", "bedforms")

__all__ = [
    "SEP",
    "HEADS",
    "load_catami_paths",
    "bracketed_head",
    "label_depth",
    "head_of",
    "depth_of",
    "catami_nodes",
    "is_valid_path",
    "has_children",
]


@lru_cache(maxsize=1)
def _paths() -> tuple[str, ...]:
    text = resources.files("ssl_benthic").joinpath("resources/catami_paths.csv").read_text("utf-8")
    seen: dict[str, None] = {}
    for line in text.splitlines()[1:]:  # first line is the column name `catami`
        path = line.strip().rstrip(",").strip()
        if path:
            seen.setdefault(path, None)
    return tuple(seen)


def load_catami_paths() -> list[str]:
    """The CATAMI label paths of the scheme, in file order, without duplicates or trailing commas."""
    return list(_paths())


def bracketed_head(path: str) -> str | None:
    """The head a path names with a bracketed root (`[BIOTA] > ...` -> `biota`), else None: paths
    of schemes without one (`Animalia > Cnidaria`, a flat class `ACRO`) take their head from config."""
    root = path.split(SEP, 1)[0].strip()
    if root.startswith("[") and root.endswith("]") and len(root) > 2:
        return root[1:-1].lower()
    return None


def label_depth(path: str, sep: str = SEP) -> int:
    """Levels below the head root, for any scheme and separator `sep`: `[BIOTA] > Biota > Sponges`
    -> 2, `Animalia > Cnidaria` -> 2 (its root is implied), `ACRO` -> 1."""
    parts = path.split(sep)
    root = parts[0].strip()
    bracketed = root.startswith("[") and root.endswith("]") and len(root) > 2
    return len(parts) - 1 if bracketed else len(parts)


def head_of(path: str) -> str:
    """The head a path belongs to: `[BIOTA] > Biota > ...` -> `biota`."""
    head = bracketed_head(path)
    if head is None:
        raise ValueError(f"label path {path!r} does not start with a bracketed head like '[BIOTA]'")
    return head


def depth_of(path: str) -> int:
    """Number of levels below the head root: `[BIOTA] > Biota > Sponges` -> 2."""
    return path.count(SEP)


@lru_cache(maxsize=1)
def catami_nodes() -> frozenset[str]:
    """Every path of the scheme and every prefix of one (labels may stop early), roots excluded."""
    nodes = set()
    for path in _paths():
        parts = path.split(SEP)
        nodes.update(SEP.join(parts[:k]) for k in range(2, len(parts) + 1))
    return frozenset(nodes)


def is_valid_path(path: str) -> bool:
    """True if `path` is a path of the scheme or a prefix of one with at least one level below the root."""
    return path in catami_nodes()


@lru_cache(maxsize=4096)
def has_children(path: str) -> bool:
    """True if the scheme has a deeper path below `path` (a label there could have gone deeper)."""
    prefix = path + SEP
    return any(node.startswith(prefix) for node in catami_nodes())
