"""The PyTorch engine: TorchScript, ``torch.export`` and AOTInductor models.

Runs inside the worker process; torch is imported here and nowhere on the server side.
The requests, batching and answers are tensor_engine.py's (DJL's default translator);
here is only the model:

* ``.pt``: TorchScript, ``torch.jit.load``. Its forward's schema names the inputs but
  declares no ranks, so requests are stacked on a new batch axis.
* ``.pt2`` written by ``torch.export.save``: ``torch.export.load(...).module()``. The
  program's signature gives the inputs' and outputs' names, dtypes and shapes (a dynamic
  dimension is -1), and batching follows the declared ranks: a request one dimension
  short is stacked, one that carries the batch axis is concatenated along it.
* ``.pt2`` written by ``torch._inductor.aoti_compile_and_package`` (an AOTInductor
  package: compiled code for one platform and device): ``aoti_load_package``. It keeps no
  signature we can read, so requests are stacked as for TorchScript.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from djl.errors import BadInput
from djl.runtime.tensor_engine import BadOutput, TensorEngine, TensorLoadError
from djl.signature import Signature, TensorSpec, datatype_of
from djl.tensor_batch import output_values, to_numpy

log = logging.getLogger("djl.runtime")

#: Where an AOTInductor package keeps its compiled model (inside the archive's folder).
_AOTI_MARKER = "/data/aotinductor/"


class TorchLoadError(TensorLoadError):
    """The model cannot be loaded where it was asked to run."""


class TorchEngine(TensorEngine):
    """One TorchScript, exported or AOTInductor model on one device."""

    def __init__(self, model_dir: Path, model_file: str, device_id: str,
                 num_threads: int = 0) -> None:
        super().__init__(model_dir, model_file, device_id, num_threads)
        self.model: Any = None
        self.device: Any = None
        self._torch: Any = None

    def _load(self, properties: Mapping[str, str]) -> None:
        import torch

        self._torch = torch
        if self.num_threads > 0:
            torch.set_num_threads(self.num_threads)
        if self.device_id < 0:
            self.device = torch.device("cpu")
        elif not torch.cuda.is_available():
            raise TorchLoadError(
                f"Cannot load on gpu{self.device_id}: CUDA is not available to this torch "
                f"({torch.__version__})"
            )
        elif self.device_id >= torch.cuda.device_count():
            raise TorchLoadError(
                f"Cannot load on gpu{self.device_id}: torch sees "
                f"{torch.cuda.device_count()} GPU(s)"
            )
        else:
            self.device = torch.device(f"cuda:{self.device_id}")
        path = self.model_dir / self.model_file
        kind = "TorchScript"
        if path.suffix != ".pt2":
            self.model = torch.jit.load(str(path), map_location=self.device)
            self.model.eval()
            self.signature = script_signature(self.model)
        elif is_aoti_package(path):
            kind = "AOTInductor"
            self.model = self._load_aoti(path)
        else:
            kind = "torch.export"
            program = torch.export.load(str(path))
            self.signature = export_signature(program)
            self.model = exported_forward(program, self.device)
        log.info("PyTorch engine: %s (%s) on %s, %d intra-op thread(s)", self.model_file,
                 kind, self.device, torch.get_num_threads())

    def _load_aoti(self, path: Path) -> Any:
        torch = self._torch
        index = self.device.index if self.device.type == "cuda" else -1
        model = torch._inductor.aoti_load_package(str(path), device_index=index)
        compiled_for = model.get_metadata().get("AOTI_DEVICE_KEY", "cpu")
        if compiled_for.split(":")[0] != self.device.type:
            raise TorchLoadError(
                f"{self.model_file} is an AOTInductor package compiled for {compiled_for}, "
                f"not {self.device.type}"
            )
        return model

    def _forward(self, arrays: Sequence[Any], signature: Sequence[tuple[str, Any]]
                 ) -> tuple[list[Any], list[str] | None, list[str | None] | None]:
        torch = self._torch
        with torch.inference_mode():
            tensors = []
            for a, (dtype, _) in zip(arrays, signature, strict=True):
                if dtype == "object":
                    raise BadInput("The PyTorch engine takes no BYTES (string) tensors")
                tensor = torch.from_numpy(a)
                if dtype == "bfloat16":  # collate carries its bits as int16
                    tensor = tensor.view(torch.bfloat16)
                tensors.append(tensor.to(self.device))
            return _numpy_outputs(self.model(*tensors))


def exported_forward(program: Any, device: Any) -> Any:
    """The forward of an exported program's module, on ``device``, called without the
    module's input guards.

    The guards (a generated ``_guards_fn`` and a pre-hook checking the inputs against the
    export's constraints) cost ~9 µs per request on the example MLP, a third of the whole
    engine's work per request, for checks the engine makes itself before every forward:
    the declared ranks and fixed dimensions (tensor_engine.py). A wrong dtype, or a dynamic
    dimension outside the range it was exported for, is left to the ops, which refuse it
    with their own message. The module is already in the mode it was exported in
    (``.eval()`` is refused on it); the pre-hooks skipped otherwise only serve programs
    that take nn.Modules as inputs, which a request cannot carry.
    """
    module = program.module(check_guards=False)
    module.validate_inputs = False
    if device.type != "cpu":
        module = module.to(device)
    return module.forward


def is_aoti_package(path: Path) -> bool:
    """An AOTInductor package rather than a saved ``torch.export`` program (both are
    ``.pt2`` zip archives)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(_AOTI_MARKER in name for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False  # torch.export.load gives the reason


def script_signature(model: Any) -> Signature | None:
    """What a TorchScript forward's schema says: its inputs' names (a script declares no
    dtype or shape) and how many tensors it returns (unknown for a list or dict)."""
    try:
        schema = model.forward.schema
    except (AttributeError, RuntimeError):
        return None
    inputs = tuple(TensorSpec(name=a.name) for a in schema.arguments[1:])  # [0] is self
    outputs: tuple[TensorSpec, ...] | None = None
    if len(schema.returns) == 1:
        returned = schema.returns[0].type
        if returned.kind() == "TensorType":
            outputs = (TensorSpec(),)
        elif returned.kind() == "TupleType" and all(
                e.kind() == "TensorType" for e in returned.elements()):
            outputs = tuple(TensorSpec() for _ in returned.elements())
    return Signature(inputs=inputs, outputs=outputs)


def export_signature(program: Any) -> Signature:
    """An exported program's user inputs and outputs: names from its graph signature,
    dtypes and shapes from the example values it was traced with (a symbolic dimension,
    such as a ``Dim("batch")``, is -1)."""
    nodes = {node.name: node for node in program.graph.nodes}
    graph_signature = program.graph_signature

    def spec(name: str) -> TensorSpec:
        node = nodes.get(name)
        value = node.meta.get("val") if node is not None else None
        if value is None or not hasattr(value, "shape"):
            return TensorSpec(name=name)
        return TensorSpec(
            name=name, datatype=datatype_of(str(value.dtype)),
            shape=tuple(d if isinstance(d, int) else -1 for d in value.shape))

    return Signature(inputs=tuple(spec(str(n)) for n in graph_signature.user_inputs),
                     outputs=tuple(spec(str(n)) for n in graph_signature.user_outputs))


def _numpy_outputs(result: Any
                   ) -> tuple[list[Any], list[str] | None, list[str | None] | None]:
    """The model's result as numpy arrays on the CPU, their names (a dict's keys), and
    the datatypes numpy cannot hold (``BF16``: sent as float32, which holds it exactly; a v2
    answer sends it as BF16 again), None where there is none. A TorchScript model must
    answer with tensors only."""
    values, names = output_values(result)
    datatypes: list[str | None] | None = None
    for k, value in enumerate(values):
        if not hasattr(value, "detach"):
            raise BadOutput(
                f"The model returned a {type(value).__name__}, not a tensor or a tuple, "
                "list or dict of tensors"
            )
        if str(value.dtype) == "torch.bfloat16":
            datatypes = datatypes or [None] * len(values)
            datatypes[k] = "BF16"
    return [to_numpy(value) for value in values], names, datatypes
