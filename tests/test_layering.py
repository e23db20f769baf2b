"""The package's layering, checked from the source: every import (function-level ones too) goes to a lower layer
or stays inside its own package, so there are no upward imports and no cycles between packages.

Run as a script (`python tests/test_layering.py`) to print the import graph between packages."""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "edgecnn"

#: Bottom to top; a package may import only from its own package and from lower layers (docs/design.md).
LAYERS: list[set[str]] = [
    {"errors", "quiet", "columns"},
    {"registry", "schema", "stages", "results", "records", "devices", "names", "processes"},
    {"models", "data", "report"},
    {"hw", "measure", "export"},
    {"train", "intsim"},
    {"compress"},
    {"variants"},
    {"study"},
    {"config"},
    {"api", "config_reference"},
    {"pipeline"},
    {"search_runner"},
    {"cli_boundary", "cli_args"},
    {"cli_tools", "cli_data"},
    {"cli"},
    {"__main__"},
]
LEVEL = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def package_of(path: Path, root: Path = SRC) -> str:
    """The top-level package or module of a source file (``compress`` for compress/prune.py)."""
    return path.relative_to(root).parts[0].removesuffix(".py")


def import_edges(root: Path = SRC) -> list[tuple[str, str, str]]:
    """(source package, imported package, file) for every edgecnn import between two different packages."""
    edges = []
    for path in sorted(root.rglob("*.py")):
        src = package_of(path, root)
        if src == "__init__":  # the root's lazy re-export table
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                parts = name.split(".")
                if parts[0] == "edgecnn" and len(parts) > 1 and parts[1] != src:
                    edges.append((src, parts[1], str(path.relative_to(root))))
    return edges


def test_every_package_has_a_layer():
    packages = {package_of(p) for p in SRC.rglob("*.py")} - {"__init__"}
    assert packages <= set(LEVEL), f"packages without a layer: {sorted(packages - set(LEVEL))}"


def test_no_upward_imports():
    upward = [f"{file}: {src} (layer {LEVEL[src]}) imports {dst} (layer {LEVEL.get(dst)})"
              for src, dst, file in import_edges() if LEVEL.get(dst, 99) >= LEVEL[src]]
    assert not upward, "\n".join(upward)


def test_no_cycles_between_packages():
    graph: dict[str, set[str]] = defaultdict(set)
    for src, dst, _ in import_edges():
        graph[src].add(dst)
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                return path + [nxt]
            if nxt not in state and (cycle := visit(nxt, path + [nxt])):
                return cycle
        state[node] = 2
        return None

    for start in list(graph):
        if start not in state:
            assert (cycle := visit(start, [start])) is None, " -> ".join(cycle)


#: The rooms of hw/, bottom to top: the hall's shared modules, graph reading, the estimators, FINN as an external
#: tool, the hall's entry points (estimate a file, render it), validation on published figures. Runtime estimators
#: never import validation code.
HW_ROOMS: list[set[str]] = [
    {"errors"},
    {"targets"},
    {"graph"},
    {"estimators"},
    {"finn"},
    {"estimation", "render"},
    {"validation"},
]
HW_LEVEL = {name: i for i, layer in enumerate(HW_ROOMS) for name in layer}


def hw_room_edges(root: Path = SRC / "hw") -> list[tuple[str, str, str]]:
    """(room, imported room, file) for every import between two different rooms of hw/."""
    edges = []
    for path in sorted(root.rglob("*.py")):
        room = path.relative_to(root).parts[0].removesuffix(".py")
        if room == "__init__":  # the lazy re-export table
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                parts = node.module.split(".")
                if parts[:2] == ["edgecnn", "hw"] and len(parts) > 2 and parts[2] != room:
                    edges.append((room, parts[2], str(path.relative_to(root))))
    return edges


def test_every_hw_module_is_in_a_room():
    rooms = {p.relative_to(SRC / "hw").parts[0].removesuffix(".py") for p in (SRC / "hw").rglob("*.py")}
    assert rooms - {"__init__"} <= set(HW_LEVEL), f"hw modules without a room: {sorted(rooms - set(HW_LEVEL))}"


def test_hw_rooms_import_only_downward():
    upward = [f"hw/{file}: {src} imports hw.{dst}" for src, dst, file in hw_room_edges()
              if HW_LEVEL.get(dst, 99) >= HW_LEVEL[src]]
    assert not upward, "\n".join(upward)
    assert not [e for e in hw_room_edges() if e[0] == "estimators" and e[1] == "validation"]


def test_the_checker_sees_an_upward_import(tmp_path):
    """The check itself can fail: a data module importing the pipeline is reported."""
    fake = tmp_path / "edgecnn"
    (fake / "data").mkdir(parents=True)
    (fake / "data" / "bad.py").write_text("def f():\n    from edgecnn.pipeline import run\n")
    edges = import_edges(fake)
    assert [(s, d) for s, d, _ in edges] == [("data", "pipeline")]
    assert LEVEL["pipeline"] > LEVEL["data"]


if __name__ == "__main__":
    for s, d in sorted({(s, d) for s, d, _ in import_edges()}, key=lambda e: (LEVEL[e[0]], e[1])):
        print(f"{s} (L{LEVEL[s]}) -> {d} (L{LEVEL.get(d)})")
