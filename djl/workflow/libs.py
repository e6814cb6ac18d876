"""Custom workflow functions: import ``"package.module:function"`` from a ``libs/`` folder.

Each libs folder is imported as a private package of its own, named after a hash of its
path (nothing is added to ``sys.path``), so two workflows' ``libs/helpers.py`` never
collide. Every load first drops that package's earlier modules, so re-registering a
workflow re-imports its current code (a ``.pyc`` is reused only when the source's mtime
and size are unchanged). Modules in ``libs/`` import each other relatively
(``from . import helpers``); an absolute ``import helpers`` fails with a hint saying so.
A target without ``:`` is read Java-style, ``package.module.function``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import re
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from djl.errors import BadRequest

_MODULE = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")
#: Serialises loading: a libs package is purged and re-imported as a whole.
_LIBS_LOCK = threading.Lock()


def load_functions(raw: Mapping[Any, Any], libs: Path) -> dict[str, Callable[..., Any]]:
    """Import each ``name -> "package.module:function"`` of ``raw`` from the folder ``libs``.

    Runs the modules' top-level code (blocking: call it from a thread). BadRequest
    ``"Could not load function <name>: <why>"`` when ``libs`` is missing, a target is
    malformed, its module fails to import, or the attribute is absent or not callable.
    """
    if not libs.is_dir():
        raise BadRequest(f"Could not load function {next(iter(raw))}: {libs} is not a directory")
    with _LIBS_LOCK:
        package = _fresh_package(libs)
        return {str(n): _load_function(str(n), target, package) for n, target in raw.items()}


def _fresh_package(libs: Path) -> str:
    """Register an empty package whose ``__path__`` is ``libs``; drop earlier imports of it."""
    name = "_djl_workflow_libs_" + hashlib.sha256(str(libs.resolve()).encode()).hexdigest()[:16]
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[key]
    spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
    spec.submodule_search_locations = [str(libs)]
    sys.modules[name] = importlib.util.module_from_spec(spec)
    importlib.invalidate_caches()  # files may have changed since the last registration
    return name


def _load_function(name: str, target: Any, package: str) -> Callable[..., Any]:
    def fail(why: str) -> BadRequest:
        return BadRequest(f"Could not load function {name}: {why}")

    if not isinstance(target, str):
        raise fail('expected "package.module:function"')
    module_name, colon, attribute = target.partition(":")
    if not colon:  # Java style "package.Class": the last dotted part is the attribute
        module_name, _, attribute = target.rpartition(".")
    if not _MODULE.fullmatch(module_name) or not attribute.isidentifier():
        raise fail(f'{target!r} is not of the form "package.module:function"')
    try:
        module = importlib.import_module(f"{package}.{module_name}")
    except ModuleNotFoundError as exc:
        if (exc.name or "").startswith(package + "."):
            missing = exc.name.removeprefix(package + ".")  # type: ignore[union-attr]
            raise fail(f"no module named {missing!r} in libs/") from exc
        raise fail(
            f"ModuleNotFoundError: {exc} (modules in libs/ import each other relatively: "
            "from . import x)"
        ) from exc
    except Exception as exc:
        raise fail(f"{type(exc).__name__}: {exc}") from exc
    function = getattr(module, attribute, None)
    if function is None:
        raise fail(f"module {module_name} has no attribute {attribute}")
    if not callable(function):
        raise fail(f"{target} is not callable")
    return function
