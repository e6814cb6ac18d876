"""The Python engine: load a model's ``model.py`` and call its handler (spec §6.2, §6.6).

Runs inside the worker process. The handler's result is normalised here into an
``Output`` with the spec's codes: None → 204, a non-Output → 424, MemoryError (or a
CUDA/cache out-of-memory text) → 507, any other exception → 424 with a JSON error body.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import traceback
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

from djl.io import Input, Output

log = logging.getLogger("djl.runtime")

_OOM_MARKERS = ("No available memory for the cache blocks", "CUDA error: out of memory")


class EntryPointError(Exception):
    """The entry point cannot be found or imported: the model fails to load."""


def _load_file(path: Path) -> ModuleType:
    name = f"djl_model_{path.stem}_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise EntryPointError(f"entry-point file cannot be loaded: {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_entry_point(model_dir: Path, entry_point: str) -> ModuleType:
    """Spec §6.2, Python side: absolute path, ``<model_dir>/<x>.py``, or a module name.

    An ImportError inside the user's module is that model's load failure, reported as
    is; it is never retried as some other module.
    """
    if str(model_dir) not in sys.path:
        sys.path.insert(0, str(model_dir))
    path = Path(entry_point)
    if path.is_absolute():
        if not path.is_file():
            raise EntryPointError(f"entry-point file not found: {path}")
        return _load_file(path)
    if entry_point.endswith(".py"):
        file = model_dir / entry_point
        if not file.is_file():
            raise EntryPointError(f"entry-point file not found: {file}")
        return _load_file(file)
    return importlib.import_module(entry_point)


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc)
    return any(marker in text for marker in _OOM_MARKERS)


class PythonEngine:
    """One loaded model: the user's module, and the properties every request gets."""

    def __init__(self, model_dir: Path, entry_point: str, device_id: str) -> None:
        self.model_dir = model_dir
        self.entry_point = entry_point
        self.device_id = device_id
        self.module: ModuleType | None = None

    def load(self) -> None:
        self.module = load_entry_point(self.model_dir, self.entry_point)

    def initialise(self, inputs: Input) -> Output:
        """The init call (spec §6.3): the handler itself, with the model's properties."""
        return self.invoke(inputs)

    def invoke(self, inputs: Input) -> Output:
        """Call the handler named by the ``handler`` property; never raises."""
        handler_name = inputs.properties.get("handler") or "handle"
        inputs.function_name = handler_name
        inputs.properties["model_dir"] = str(self.model_dir)
        inputs.properties["device_id"] = self.device_id
        inputs.properties.setdefault("cluster_size", 1)  # spec §6.4: an int
        try:
            if self.module is None:
                self.load()
            handler = getattr(self.module, handler_name, None)
            if handler is None:
                return Output().error(
                    f"{handler_name} is not defined in {self.entry_point}", code=404
                )
            result = handler(inputs)
        except Exception as exc:  # noqa: BLE001 — the handler's failure is the response
            if is_out_of_memory(exc):
                log.error("model ran out of memory: %s", exc)
                return Output(507, str(exc))
            log.warning("handler %s raised:\n%s", handler_name, traceback.format_exc())
            return Output().error(str(exc))
        return normalise(result)


def normalise(result: Any) -> Output:
    if result is None:
        return Output(204, "No content")
    if not isinstance(result, Output):
        return Output().error(f"Invalid output type: {type(result)}")
    return result
