"""A label hierarchy (a DAG in topological order) and the targets and masks it defines.

Node j's descendant set D(j) includes j. Depth is the LONGEST path from a root (so on a DAG a node
is always deeper than each of its parents); height is the longest path down to a leaf.
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch

BelowLabel = Literal["unknown", "negative"]


class Hierarchy:
    """Nodes in topological order (parents before children) with parent/child lists."""

    def __init__(self, nodes: Iterable[str], edges: Iterable[tuple[str, str]]) -> None:
        """Build from every node name (no duplicates) and (parent, child) edges between them."""
        given = list(nodes)
        seen: set[str] = set()
        for name in given:
            if name in seen:
                raise ValueError(f"duplicate node {name!r} in hierarchy")
            seen.add(name)
        parents: dict[str, list[str]] = {n: [] for n in given}
        children: dict[str, list[str]] = {n: [] for n in given}
        edge_set: set[tuple[str, str]] = set()
        for parent, child in edges:
            for name in (parent, child):
                if name not in seen:
                    raise ValueError(f"edge ({parent!r}, {child!r}) names unknown node {name!r}")
            if (parent, child) in edge_set:
                raise ValueError(f"duplicate edge ({parent!r}, {child!r}) in hierarchy")
            if parent == child:
                raise ValueError(f"cycle in hierarchy: {parent!r} -> {parent!r}")
            edge_set.add((parent, child))
            parents[child].append(parent)
            children[parent].append(child)
        self.nodes: list[str] = _topological_order(given, parents, children)
        self.index: dict[str, int] = {n: i for i, n in enumerate(self.nodes)}
        self.parents = parents
        self.children = children
        self.roots: list[str] = [n for n in self.nodes if not parents[n]]
        self.depth: dict[str, int] = {}
        for n in self.nodes:
            self.depth[n] = 1 + max((self.depth[p] for p in parents[n]), default=-1)
        self.height: dict[str, int] = {}
        for n in reversed(self.nodes):
            self.height[n] = 1 + max((self.height[c] for c in children[n]), default=-1)
        self.depth_array = np.array([self.depth[n] for n in self.nodes], dtype=np.int64)
        self.height_array = np.array([self.height[n] for n in self.nodes], dtype=np.int64)
        self._R: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.nodes)

    def __repr__(self) -> str:
        return (
            f"Hierarchy({len(self.nodes)} nodes, {len(self.roots)} roots, {self.num_edges} edges)"
        )

    @property
    def num_edges(self) -> int:
        return sum(len(c) for c in self.children.values())

    # ----------------------------------------------------------------- constructors
    @classmethod
    def from_edges(cls, edges: Iterable[tuple[str, str]]) -> Hierarchy:
        """From (parent, child) pairs; nodes are taken in order of first mention."""
        edges = list(edges)
        nodes = list(dict.fromkeys(n for edge in edges for n in edge))
        return cls(nodes, edges)

    @classmethod
    def from_paths(cls, paths: Iterable[str], sep: str = " > ") -> Hierarchy:
        """From label paths `A > B > C`: every prefix is a node named by the full prefix string."""
        nodes: dict[str, None] = {}
        edges: dict[tuple[str, str], None] = {}
        listed: set[str] = set()
        for path in paths:
            if path in listed:
                raise ValueError(f"duplicate node {path!r} in the path list")
            listed.add(path)
            parts = path.split(sep)
            if any(not p.strip() for p in parts):
                raise ValueError(f"empty component in label path {path!r}")
            prefixes = [sep.join(parts[: i + 1]) for i in range(len(parts))]
            for i, name in enumerate(prefixes):
                nodes.setdefault(name)
                if i:
                    edges.setdefault((prefixes[i - 1], name))
        return cls(nodes, edges)

    @classmethod
    def from_arff(cls, path: str | Path, dag: bool | None = None) -> Hierarchy:
        """From the `@ATTRIBUTE class hierarchical ...` line of an HMC ARFF file (see `parse_arff_hierarchy`)."""
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line[:10].upper() == "@ATTRIBUTE" and " hierarchical " in line.lower():
                    return parse_arff_hierarchy(line, dag=dag, source=str(path))
                if line[:5].upper() == "@DATA":
                    break
        raise ValueError(f"{path}: no '@ATTRIBUTE class hierarchical' line before @DATA")

    def split_roots(self) -> dict[str, Hierarchy]:
        """One sub-hierarchy per root (one per head): the root and all its descendants."""
        out = {}
        for root in self.roots:
            keep = {root} | self.descendants(root)
            nodes = [n for n in self.nodes if n in keep]
            edges = [(p, c) for p in nodes for c in self.children[p]]
            out[root] = Hierarchy(nodes, edges)
        return out

    # ----------------------------------------------------------------- relations
    def ancestors(self, node: str) -> set[str]:
        """Strict ancestors of `node` (the node itself excluded)."""
        return self._walk(node, self.parents)

    def descendants(self, node: str) -> set[str]:
        """Strict descendants of `node` (the node itself excluded)."""
        return self._walk(node, self.children)

    def _walk(self, node: str, links: dict[str, list[str]]) -> set[str]:
        if node not in self.index:
            raise KeyError(f"unknown node {node!r}")
        seen: set[str] = set()
        todo = list(links[node])
        while todo:
            n = todo.pop()
            if n not in seen:
                seen.add(n)
                todo.extend(links[n])
        return seen

    def descendant_matrix(self) -> np.ndarray:
        """R (K, K) bool, R[i, j] = True iff j is in D(i) (j a descendant of i, or j == i)."""
        if self._R is None:
            K = len(self.nodes)
            R = np.eye(K, dtype=bool)
            for name in reversed(self.nodes):
                i = self.index[name]
                for c in self.children[name]:
                    R[i] |= R[self.index[c]]
            self._R = R
        return self._R

    def edge_index(self) -> tuple[np.ndarray, np.ndarray]:
        """(parent_idx, child_idx) int64 arrays, one entry per edge."""
        pairs = [(self.index[p], self.index[c]) for p in self.nodes for c in self.children[p]]
        arr = np.array(pairs, dtype=np.int64).reshape(-1, 2)
        return arr[:, 0].copy(), arr[:, 1].copy()

    # ----------------------------------------------------------------- targets and masks
    def encode(
        self,
        label_paths: Sequence[str],
        sample_key: str | None = None,
        below_label: BelowLabel = "unknown",
    ) -> tuple[np.ndarray, np.ndarray]:
        """Targets y (K,) float32 and mask m (K,) float32 for one sample's annotated nodes.

        y = 1 on annotated nodes and their ancestors. m = 0 (unknown) on strict descendants of an
        annotated node that has children, unless positive (`below_label="negative"` makes them
        known negatives, as the HMC benchmarks do), and on every node of a root (head) that no label
        reaches. An empty label list therefore gives an all-zero mask.
        """
        if below_label not in ("unknown", "negative"):
            raise ValueError(f"below_label must be 'unknown' or 'negative', got {below_label!r}")
        R = self.descendant_matrix()
        K = len(self.nodes)
        y = np.zeros(K, dtype=bool)
        unknown = np.zeros(K, dtype=bool)
        for label in label_paths:
            j = self.index.get(label)
            if j is None:
                where = f" in sample {sample_key!r}" if sample_key is not None else ""
                raise ValueError(f"unknown label {label!r}{where}: not a node of the hierarchy")
            y |= R[:, j]
            if below_label == "unknown":
                unknown |= R[j]
                unknown[j] = False
        roots = self._root_index()
        head_known = R[roots[y[roots]]].any(axis=0)
        mask = head_known & (y | ~unknown)
        return y.astype(np.float32), mask.astype(np.float32)

    def encode_many(
        self,
        label_lists: Sequence[Sequence[str]],
        sample_keys: Sequence[str] | None = None,
        below_label: BelowLabel = "unknown",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch form of `encode`: float32 tensors targets (B, K) and mask (B, K)."""
        K = len(self.nodes)
        y = np.zeros((len(label_lists), K), dtype=np.float32)
        m = np.zeros((len(label_lists), K), dtype=np.float32)
        for b, labels in enumerate(label_lists):
            key = sample_keys[b] if sample_keys is not None else f"#{b}"
            y[b], m[b] = self.encode(labels, sample_key=key, below_label=below_label)
        return torch.from_numpy(y), torch.from_numpy(m)

    def _root_index(self) -> np.ndarray:
        return np.array([self.index[r] for r in self.roots], dtype=np.int64)


def _topological_order(
    nodes: list[str], parents: dict[str, list[str]], children: dict[str, list[str]]
) -> list[str]:
    """Kahn's algorithm, stable in the given node order; a cycle raises naming its nodes."""
    indeg = {n: len(parents[n]) for n in nodes}
    queue = deque(n for n in nodes if indeg[n] == 0)
    order: list[str] = []
    while queue:
        n = queue.popleft()
        order.append(n)
        for c in children[n]:
            indeg[c] -= 1
            if indeg[c] == 0:
                queue.append(c)
    if len(order) < len(nodes):
        left = {n for n in nodes if indeg[n] > 0}
        raise ValueError(f"cycle in hierarchy: {' -> '.join(_find_cycle(left, parents))}")
    return order


def _find_cycle(left: set[str], parents: dict[str, list[str]]) -> list[str]:
    """Follow parents inside the unsorted remainder until a node repeats: that loop is a cycle."""
    node = min(left)
    path: list[str] = []
    pos: dict[str, int] = {}
    while node not in pos:
        pos[node] = len(path)
        path.append(node)
        node = next(p for p in parents[node] if p in left)
    cycle = path[pos[node] :] + [node]
    return cycle[::-1]


def _unique_terms(terms: list[str], source: str) -> list[str]:
    """The terms in first-seen order. A term written twice names the same node (or GO edge) twice,
    as ImCLEF07D's header does (78 terms, 46 distinct): C-HMCNN's graph merges them, so do we."""
    unique = list(dict.fromkeys(terms))
    if len(unique) < len(terms):
        repeated = sorted({t for t in terms if terms.count(t) > 1})
        warnings.warn(
            f"{source}: {len(terms) - len(unique)} repeated terms in the class hierarchy merged "
            f"({len(unique)} distinct; e.g. {', '.join(map(repr, repeated[:3]))})",
            stacklevel=3,
        )
    return unique


def parse_arff_hierarchy(line: str, dag: bool | None = None, source: str = "") -> Hierarchy:
    """Parse `@ATTRIBUTE class hierarchical a,b,...`.

    Tree form (FunCat, `01/02/03`): each term is a path; nodes are named by the full path ('01/02')
    and a single node 'root' is added above the top level, as C-HMCNN does. DAG form (GO): each
    term is a `parent/child` edge, 'root' included as written. `dag=None` picks the DAG form when
    a term starts with 'root/' or the source name contains '_GO'.
    """
    spec = line.split(None, 3)
    if len(spec) < 4 or spec[2].lower() != "hierarchical":
        raise ValueError(f"{source}: not a hierarchical class attribute: {line[:80]!r}")
    terms = _unique_terms([t.strip() for t in spec[3].strip().split(",") if t.strip()], source)
    if dag is None:
        dag = "_GO" in Path(source).name or any(t.startswith("root/") for t in terms)
    if dag:
        edges = []
        for t in terms:
            parts = t.split("/")
            if len(parts) != 2:
                raise ValueError(f"{source}: GO term {t!r} is not a 'parent/child' pair")
            edges.append((parts[0], parts[1]))
        return Hierarchy.from_edges(edges)
    if "root" in terms:
        raise ValueError(f"{source}: 'root' is added above the top level; do not list it")
    nodes = dict.fromkeys(["root", *terms])
    edges_t: list[tuple[str, str]] = []
    for t in terms:
        parent = t.rsplit("/", 1)[0] if "/" in t else "root"
        if parent not in nodes:
            raise ValueError(f"{source}: node {t!r} has no listed parent {parent!r}")
        edges_t.append((parent, t))
    return Hierarchy(nodes, edges_t)
