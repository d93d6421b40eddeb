"""The packages' import graph keeps its shape (issue #15): the operator and the inference image
share only ``recops_contracts``, the contracts import no other package of ours, and no module
imports back up a chain that imports it (cycles hide in function-local imports, so those count).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "recops_contracts": ROOT / "operator/recops_contracts",
    "recops_operator": ROOT / "operator/recops_operator",
    "recops_localcluster": ROOT / "operator/recops_localcluster",
    "recops_serve": ROOT / "inference_image/recops_serve",
    "recops_infra": ROOT / "infra/recops_infra",
    "recops_stream": ROOT / "stream/recops_stream",
    "bench": ROOT / "bench",
}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg, root in PACKAGES.items():
        for path in root.rglob("*.py"):
            parts = [pkg, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _imported(module: str, path: Path, known: set[str]) -> Iterator[str]:
    """First-party modules that ``module`` imports anywhere in its body."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [base, *(f"{base}.{a.name}" for a in node.names)]
        else:
            continue
        for name in names:
            while name and name not in known:  # `from pkg import mod` or `import pkg.mod.attr`
                name = name.rpartition(".")[0]
            if name and name != module:
                yield name


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: set(_imported(m, p, set(mods))) for m, p in mods.items()}


def _top(module: str) -> str:
    return module.split(".")[0]


GRAPH = _graph()


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("recops_operator", "recops_serve"),
        ("recops_serve", "recops_operator"),
        ("recops_infra", "recops_operator"),
        ("recops_infra", "recops_serve"),
        ("recops_stream", "recops_operator"),
    ],
)
def test_no_import_between_components(source, target):
    edges = [(m, t) for m, ts in GRAPH.items() if _top(m) == source for t in ts if _top(t) == target]
    assert not edges, f"{source} imports {target}: {edges}"


def test_contracts_import_nothing_of_ours_but_themselves():
    edges = [
        (m, t)
        for m, ts in GRAPH.items()
        if _top(m) == "recops_contracts"
        for t in ts
        if _top(t) != "recops_contracts"
    ]
    assert not edges


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), parents excluded: a
    package's ``__init__`` importing its own submodules is not a cycle of design."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def edges(m: str) -> set[str]:
        return {t for t in graph[m] if not m.startswith(t + ".") and not t.startswith(m + ".")}

    def visit(m: str) -> None:
        index[m] = low[m] = len(index)
        stack.append(m)
        on.add(m)
        for t in edges(m):
            if t not in index:
                visit(t)
                low[m] = min(low[m], low[t])
            elif t in on:
                low[m] = min(low[m], index[t])
        if low[m] == index[m]:
            comp = []
            while True:
                t = stack.pop()
                on.discard(t)
                comp.append(t)
                if t == m:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for m in sorted(graph):
        if m not in index:
            visit(m)
    return out


def test_no_import_cycle():
    assert _cycles(GRAPH) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _copied_packages(dockerfile: str) -> set[str]:
    """The packages of ours a Dockerfile's COPY lines put into the image's build context."""
    copied = set()
    for line in (ROOT / dockerfile).read_text().splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            src = ROOT / line.split()[1]
            copied |= {pkg for pkg, root in PACKAGES.items() if root == src or src in root.parents}
    return copied


@pytest.mark.parametrize(
    ("dockerfile", "entry", "absent"),
    [
        ("operator/Dockerfile", "recops_operator", "recops_serve"),
        ("inference_image/Dockerfile", "recops_serve", "recops_operator"),
    ],
)
def test_each_image_ships_what_its_entry_point_imports_and_not_the_other_component(dockerfile, entry, absent):
    copied = _copied_packages(dockerfile)
    needed, todo = set(), [m for m in GRAPH if _top(m) == entry]
    while todo:
        m = todo.pop()
        if m not in needed:
            needed.add(m)
            todo.extend(GRAPH[m])
    assert {_top(m) for m in needed} <= copied, (
        f"{dockerfile} misses { ({_top(m) for m in needed} - copied) }"
    )
    assert absent not in copied
