"""The ONNX Runtime engine: an ``.onnx`` graph served with DJL's default translator.

Runs inside the worker process; onnxruntime is imported here and nowhere else. The
requests, batching and answers are tensor_engine.py's, the same as the PyTorch engine's;
here is only the session: its providers (CPU; CUDA when the device is a GPU and this
onnxruntime has it), its threads and options, and the graph's input and output names,
dtypes and shapes, read at load (they are the signature describe shows and the declared
ranks batching follows).

Session options (``option.*`` in serving.properties, DJL's OnnxRuntime names):
``optLevel`` (``NO_OPT``, ``BASIC_OPT``, ``EXTENDED_OPT``, ``ALL_OPT``, the default),
``interOpNumThreads``, ``executionMode`` (``SEQUENTIAL``, the default, ``PARALLEL``),
``memoryPatternOptimization`` and ``cpuArenaAllocator`` (``true``/``false``); a value
onnxruntime has no setting for fails the load, naming the option. Intra-op threads are
chosen as for torch (djl/prepare.py: ``option.num_threads``, else ``OMP_NUM_THREADS``,
else the cores shared among the workers), and idle ones do not spin.

External data (weights beside the graph) must lie inside the model folder: onnxruntime
refuses a location that is absolute or resolves outside the graph's directory, links
included, and that refusal is the registration's answer.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from djl.errors import BadInput
from djl.runtime.tensor_engine import TensorEngine, TensorLoadError
from djl.signature import Signature, TensorSpec, datatype_of

log = logging.getLogger("djl.runtime")

#: ONNX's element type names (``tensor(float)``) → numpy's.
_ONNX_NUMPY = {
    "float": "float32", "double": "float64", "float16": "float16", "bfloat16": "bfloat16",
    "int8": "int8", "uint8": "uint8", "int16": "int16", "uint16": "uint16",
    "int32": "int32", "uint32": "uint32", "int64": "int64", "uint64": "uint64",
    "bool": "bool", "string": "str",
}


class OnnxEngine(TensorEngine):
    """One ONNX graph in one onnxruntime session on one device."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.session: Any = None
        self._input_names: list[str] = []
        self._output_names: list[str] = []

    def _load(self, properties: Mapping[str, str]) -> None:
        import onnxruntime as ort

        options = session_options(ort, properties, self.num_threads)
        available = ort.get_available_providers()
        if self.device_id < 0:
            providers: list[Any] = ["CPUExecutionProvider"]
        elif "CUDAExecutionProvider" in available:
            providers = [("CUDAExecutionProvider", {"device_id": self.device_id}),
                         "CPUExecutionProvider"]
        else:
            raise TensorLoadError(
                f"Cannot load on gpu{self.device_id}: this onnxruntime ({ort.__version__}) "
                f"has no CUDA provider, only {', '.join(available)}"
            )
        path = self.model_dir / self.model_file
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # noqa: BLE001 — onnxruntime's reason is the answer
            on = f"Cannot load on gpu{self.device_id}: " if self.device_id >= 0 else ""
            raise TensorLoadError(f"{on}{self.model_file}: {reason(exc)}") from None
        started = self.session.get_providers()
        if self.device_id >= 0 and started[0] != "CUDAExecutionProvider":
            # onnxruntime falls back to the CPU, with a warning only, when its CUDA provider
            # cannot start (no device visible, a driver or cuDNN missing).
            raise TensorLoadError(
                f"Cannot load on gpu{self.device_id}: onnxruntime's CUDA provider did not "
                f"start (the session runs on {', '.join(started)})"
            )
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        self._input_names = [i.name for i in inputs]
        self._output_names = [o.name for o in outputs]
        self.signature = Signature(inputs=tuple(_spec(i) for i in inputs),
                                   outputs=tuple(_spec(o) for o in outputs))
        log.info("OnnxRuntime engine: %s on %s, %d intra-op thread(s), inputs %s",
                 self.model_file, self.session.get_providers()[0],
                 options.intra_op_num_threads, self.signature.as_json()["inputs"])

    def _forward(self, arrays: Sequence[np.ndarray], signature: Sequence[tuple[str, Any]]
                 ) -> tuple[list[Any], list[str] | None, None]:
        if len(arrays) != len(self._input_names):
            raise BadInput.input_count(len(self._input_names), self._input_names, len(arrays))
        outputs = self.session.run(self._output_names, dict(zip(self._input_names, arrays,
                                                                strict=True)))
        return [np.ascontiguousarray(o) for o in outputs], self._output_names, None

    def _reason(self, exc: BaseException) -> str:
        return reason(exc)


def _spec(node: Any) -> TensorSpec:
    """A graph input or output: a named dimension (``batch``) or none is dynamic (-1)."""
    element = str(node.type).removeprefix("tensor(").removesuffix(")")
    shape = node.shape
    return TensorSpec(
        name=node.name,
        datatype=datatype_of(_ONNX_NUMPY.get(element, element)),
        shape=tuple(d if isinstance(d, int) and d >= 0 else -1 for d in shape)
        if shape is not None else None,
    )


def reason(exc: BaseException) -> str:
    """onnxruntime's message without its ``[ONNXRuntimeError] : 2 : INVALID_ARGUMENT :``
    prefix, on one line (its messages span several)."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    if text.startswith("[ONNXRuntimeError]"):
        text = text.split(" : ", 3)[-1]
    return text or type(exc).__name__


#: DJL's names for the session options (``option.optLevel``, ``option.executionMode``)
#: → onnxruntime's enum members.
OPT_LEVELS = {"NO_OPT": "ORT_DISABLE_ALL", "BASIC_OPT": "ORT_ENABLE_BASIC",
              "EXTENDED_OPT": "ORT_ENABLE_EXTENDED", "ALL_OPT": "ORT_ENABLE_ALL"}
EXECUTION_MODES = {"SEQUENTIAL": "ORT_SEQUENTIAL", "PARALLEL": "ORT_PARALLEL"}


def session_options(ort: Any, properties: Mapping[str, str], num_threads: int) -> Any:
    """The SessionOptions that ``properties`` (``option.*`` without the prefix) ask for;
    TensorLoadError naming the option for a value onnxruntime has no setting for."""
    options = ort.SessionOptions()
    if num_threads > 0:
        options.intra_op_num_threads = num_threads
    # Idle pool threads spinning for work burn cores the other workers need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    level = _choice(properties, "optLevel", "ALL_OPT", OPT_LEVELS)
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    mode = _choice(properties, "executionMode", "SEQUENTIAL", EXECUTION_MODES)
    options.execution_mode = getattr(ort.ExecutionMode, mode)
    inter = properties.get("interOpNumThreads")
    if inter:
        if not inter.isdigit():
            raise TensorLoadError(f"option.interOpNumThreads {inter}: use a whole number")
        options.inter_op_num_threads = int(inter)
    for key, attribute in (("memoryPatternOptimization", "enable_mem_pattern"),
                           ("cpuArenaAllocator", "enable_cpu_mem_arena")):
        value = str(properties.get(key) or "").lower()
        if value:
            if value not in ("true", "false"):
                raise TensorLoadError(f"option.{key} {properties[key]}: use true or false")
            setattr(options, attribute, value == "true")
    return options


def _choice(properties: Mapping[str, str], key: str, default: str,
            names: Mapping[str, str]) -> str:
    value = str(properties.get(key) or default)
    if value.upper() not in names:
        raise TensorLoadError(f"option.{key} {value}: use {', '.join(names)}")
    return names[value.upper()]
