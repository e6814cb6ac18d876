"""The layers of docs/architecture.md that imports can break: dependencies point down,
and nothing imports in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

DJL = Path(__file__).resolve().parent.parent / "djl"


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("http", ("djl.wlm",)),
        # The worker side reads no server settings, sources or metrics: what it needs
        # arrives on its command line and in its frames.
        ("runtime", ("djl.http", "djl.wlm", "djl.registry", "djl.workflow", "djl.prepare",
                     "djl.config", "djl.store", "djl.metrics")),
        ("wlm", ("djl.http", "djl.registry", "djl.prepare")),
    ],
)
def test_no_import_points_up(package: str, forbidden: tuple[str, ...]) -> None:
    for path in sorted((DJL / package).rglob("*.py")):
        bad = sorted(name for name in imported(path)
                     if any(name == f or name.startswith(f + ".") for f in forbidden))
        assert not bad, f"{path.relative_to(DJL.parent)} imports {bad}"


def test_torch_is_imported_only_on_the_worker_side() -> None:
    """The engines (PyTorch, text generation), and the collation helper that model.py
    handlers call (lazily there)."""
    users = sorted(str(p.relative_to(DJL.parent)) for p in DJL.rglob("*.py")
                   if any(n == "torch" or n.startswith("torch.") for n in imported(p)))
    assert users == ["djl/runtime/generation/loader.py", "djl/runtime/generation/lora.py",
                     "djl/runtime/generation/scheduler.py", "djl/runtime/torch_engine.py",
                     "djl/tensor_batch.py"]
    # prepare.py checks a causal-LM folder with the loader's check_folder: the server
    # process must not import torch through it.
    top_level = {node.names[0].name for node in ast.parse(
        (DJL / "runtime" / "generation" / "loader.py").read_text()).body
        if isinstance(node, ast.Import)}
    assert "torch" not in top_level


def test_ray_is_imported_only_by_the_ray_launcher() -> None:
    """A server without Ray placements must not pay for (or need) ray: one module owns it,
    and only the registry imports that one, inside the function that places a model."""
    users = sorted(str(p.relative_to(DJL.parent)) for p in DJL.rglob("*.py")
                   if any(n == "ray" or n.startswith("ray.") for n in imported(p)))
    assert users == ["djl/wlm/ray_launcher.py"]
    importers = sorted(str(p.relative_to(DJL.parent)) for p in DJL.rglob("*.py")
                       if "djl.wlm.ray_launcher" in imported(p))
    assert importers == ["djl/registry/pools.py"]
    top_level = {node.module for node in ast.parse((DJL / "registry" / "pools.py").read_text()).body
                 if isinstance(node, ast.ImportFrom)}
    assert "djl.wlm.ray_launcher" not in top_level


def test_onnxruntime_is_imported_only_by_its_engine() -> None:
    users = sorted(str(p.relative_to(DJL.parent)) for p in DJL.rglob("*.py")
                   if any(n == "onnxruntime" or n.startswith("onnxruntime.")
                          for n in imported(p)))
    assert users == ["djl/runtime/onnx_engine.py"]


def module_of(path: Path) -> str:
    parts = list(path.relative_to(DJL.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = DJL) -> dict[str, set[str]]:
    """Module → the djl modules it imports anywhere in its text: at the top, inside a
    function, or under ``TYPE_CHECKING`` (a type-only import is a dependency too). A
    compiled extension (``_batch``) is a leaf."""
    modules = {module_of(p): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in modules)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    if full in modules:
                        deps.add(full)
                    elif node.module in modules and not _extension(node.module, alias.name):
                        deps.add(node.module)
        deps.discard(name)
        graph[name] = deps
    return graph


def _extension(package: str, name: str) -> bool:
    folder = DJL.parent.joinpath(*package.split("."))
    return (folder / f"{name}.pyx").exists()


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for dep in graph.get(node, ()):
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    """Dependencies form layers: no module reaches, even for a type, one that reaches it."""
    graph = import_graph()
    assert "djl.registry.manager" in graph["djl.registry"]  # the graph sees packages
    assert cycles(graph) == []


BENCH = DJL.parent / "bench"


def bench_graph() -> dict[str, set[str]]:
    """bench/'s scripts import each other by bare name (each puts bench/ first on
    sys.path), so a script named like a package a neighbour imports stands in for it."""
    modules = {p.stem for p in BENCH.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for name in modules:
        deps: set[str] = set()
        for node in ast.walk(ast.parse((BENCH / f"{name}.py").read_text())):
            if isinstance(node, ast.Import):
                deps.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps.add(node.module.split(".")[0])
        graph[name] = (deps & modules) - {name}
    return graph


def test_no_import_cycles_in_bench() -> None:
    graph = bench_graph()
    assert "_common" in graph["echo"]  # the graph sees the scripts' shared module
    assert cycles(graph) == []
