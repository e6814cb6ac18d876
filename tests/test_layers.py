"""DESIGN.md's rules of the house that imports can break: dependencies point down."""

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
        ("runtime", ("djl.http", "djl.wlm", "djl.registry", "djl.workflow", "djl.prepare")),
        ("wlm", ("djl.http", "djl.registry", "djl.prepare")),
    ],
)
def test_no_import_points_up(package: str, forbidden: tuple[str, ...]) -> None:
    for path in sorted((DJL / package).glob("*.py")):
        bad = sorted(name for name in imported(path)
                     if any(name == f or name.startswith(f + ".") for f in forbidden))
        assert not bad, f"{path.relative_to(DJL.parent)} imports {bad}"


def test_torch_is_imported_only_on_the_worker_side() -> None:
    """The engines (PyTorch, text generation), and the collation helper that model.py
    handlers call (lazily there)."""
    users = sorted(str(p.relative_to(DJL.parent)) for p in DJL.rglob("*.py")
                   if any(n == "torch" or n.startswith("torch.") for n in imported(p)))
    assert users == ["djl/runtime/generation/loader.py", "djl/runtime/generation/scheduler.py",
                     "djl/runtime/torch_engine.py", "djl/tensor_batch.py"]
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
    assert importers == ["djl/registry.py"]
    top_level = {node.module for node in ast.parse((DJL / "registry.py").read_text()).body
                 if isinstance(node, ast.ImportFrom)}
    assert "djl.wlm.ray_launcher" not in top_level
