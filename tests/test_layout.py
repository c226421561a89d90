"""The import contract of the two packages, read from the source with `ast` (nothing is imported).

- no import circles between modules (imports inside functions count: a lazy import that closes a
  circle is still a circle in the design);
- `ssl_benthic` never imports `hml_finetune`;
- each package's layers import only their own layer or those below it
  (ssl_benthic: core -> data -> weights -> pretrain -> embed; hml_finetune: hml -> hmc | finetune ->
  predict | compare, with `ssl_benthic.pretrain` only in compare);
- building both command-line parsers imports no torch (`--help` stays fast).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("ssl_benthic", "hml_finetune")

# layer of a module prefix (longest prefix wins); a module may import its own layer or lower ones
LAYERS = {
    "ssl_benthic.core": 0,
    "ssl_benthic.data": 1,
    "ssl_benthic.weights": 2,
    "ssl_benthic.pretrain": 3,
    "ssl_benthic.embed": 4,  # features out of any start, kNN scores with the monitor's scorer
    "ssl_benthic": 4,  # the package face and cli.py
    "hml_finetune.hml": 10,
    "hml_finetune.hmc": 11,
    "hml_finetune.finetune": 11,
    "hml_finetune.predict": 12,
    "hml_finetune.compare": 12,
    "hml_finetune": 13,
}
# siblings of one layer that must not import each other
APART = [
    ("hml_finetune.hmc", "hml_finetune.finetune"),
    ("hml_finetune.predict", "hml_finetune.compare"),
]
ONLY_FROM = {"ssl_benthic.pretrain": ("ssl_benthic", "hml_finetune.compare")}


def module_names(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted name -> file of every module under `root/<package>`."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The module `name` refers to: itself, else its longest known prefix (an attribute of it)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in its file (package faces included)."""
    known = module_names(root, packages)
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from pkg import mod` names mod; `from mod import name` names mod
                targets = [
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                    for a in node.names
                ]
            for target in targets:
                if target.split(".")[0] in packages:
                    found = _resolve(target, known)
                    if found is not None and found != name:
                        graph[name].add(found)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _prefix(name: str, table: dict[str, object] | tuple[str, ...]) -> str | None:
    best = None
    for prefix in table:
        if (name == prefix or name.startswith(prefix + ".")) and (
            best is None or len(prefix) > len(best)
        ):
            best = prefix
    return best


def layer_breaks(graph: dict[str, set[str]]) -> list[str]:
    """Every import that goes up a layer, across apart siblings, or to a guarded package."""
    broken = []
    for src, targets in sorted(graph.items()):
        for dst in sorted(targets):
            s, d = _prefix(src, LAYERS), _prefix(dst, LAYERS)
            if src.startswith("ssl_benthic") and dst.startswith("hml_finetune"):
                broken.append(f"{src} -> {dst} (ssl_benthic never imports hml_finetune)")
            elif s and d and LAYERS[d] > LAYERS[s]:
                broken.append(f"{src} -> {dst} (a lower layer imports a higher one)")
            elif s and d and ((s, d) in APART or (d, s) in APART):
                broken.append(f"{src} -> {dst} (sibling layers stay apart)")
            guard = _prefix(dst, tuple(ONLY_FROM))
            if guard and _prefix(src, (guard,)) is None and _prefix(src, ONLY_FROM[guard]) is None:
                broken.append(f"{src} -> {dst} (only {', '.join(ONLY_FROM[guard])} may)")
    return broken


def test_the_packages_have_no_import_circles() -> None:
    assert circles(import_graph(REPO)) == []


def test_every_import_goes_down_the_pipeline() -> None:
    assert layer_breaks(import_graph(REPO)) == []


def test_a_circle_is_found_through_a_lazy_import(tmp_path: Path) -> None:
    pkg = tmp_path / "ssl_benthic"
    (pkg / "core").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "core" / "__init__.py").write_text("")
    (pkg / "core" / "a.py").write_text("from ssl_benthic.core.b import B\n")
    (pkg / "core" / "b.py").write_text(
        textwrap.dedent(
            """
            B = 1
            def late():
                from ssl_benthic.core import a
            """
        )
    )
    (pkg / "core" / "c.py").write_text("import ssl_benthic.core.a\n")
    graph = import_graph(tmp_path, ("ssl_benthic",))
    assert graph["ssl_benthic.core.c"] == {"ssl_benthic.core.a"}
    assert circles(graph) == [["ssl_benthic.core.a", "ssl_benthic.core.b"]]


def test_layer_breaks_name_the_import() -> None:
    graph = {
        "ssl_benthic.core.x": {"ssl_benthic.data.y"},
        "ssl_benthic.data.y": {"hml_finetune.hml.z"},
        "hml_finetune.hmc.run": {"hml_finetune.finetune.train"},
        "hml_finetune.predict.run": {"ssl_benthic.pretrain.run", "ssl_benthic.core.x"},
        "hml_finetune.compare.run": {"ssl_benthic.pretrain.run"},
    }
    assert layer_breaks(graph) == [
        "hml_finetune.hmc.run -> hml_finetune.finetune.train (sibling layers stay apart)",
        "hml_finetune.predict.run -> ssl_benthic.pretrain.run (only ssl_benthic, "
        "hml_finetune.compare may)",
        "ssl_benthic.core.x -> ssl_benthic.data.y (a lower layer imports a higher one)",
        "ssl_benthic.data.y -> hml_finetune.hml.z (ssl_benthic never imports hml_finetune)",
    ]


@pytest.mark.parametrize("package", PACKAGES)
def test_building_the_parser_imports_no_torch(package: str) -> None:
    code = (
        f"import sys; from {package}.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('torch', 'pytorch_lightning', 'timm', 'lightly') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
