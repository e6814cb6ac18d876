"""The Open Inference Protocol (KServe v2, Triton's REST API): the rules, without HTTP.

Which model a ``/v2/models/{m}[/versions/{v}]`` path names, when a model or the server is
ready, what a model's metadata says, and how an infer body travels: to an engine's
worker (PyTorch, ONNX) it goes untouched, typed ``_batch.V2_MEDIA_TYPE``, and the worker's
Cython reader (djl/_v2.pxi) reads its tensors into the batch; a Python model's handler gets
the body itself (``application/json``) and answers in whatever it likes. The worker's v2
answer lacks only ``model_name`` / ``model_version``, which ``engine_answer`` splices in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import djl
from djl import _batch
from djl.errors import BadInput, DjlError, ModelNotFound, ServiceUnavailable
from djl.io import Input, Output
from djl.registry import Model, ModelManager, Workflow
from djl.status import ModelStatus

#: What ``GET /v2`` names: the binary tensor extension is the one beyond the core.
SERVER_NAME = "djl-serving"
EXTENSIONS = ("binary_tensor_data",)

#: ``platform`` by runtime engine (Triton's names where it has one).
PLATFORMS = {"PyTorch": "pytorch_torchscript", "OnnxRuntime": "onnxruntime_onnx",
             "Python": "python"}
#: Engines whose workers read v2 tensors themselves (``_batch.read_requests``).
TENSOR_ENGINES = frozenset({"PyTorch", "OnnxRuntime"})


def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": djl.__version__, "extensions": list(EXTENSIONS)}


def find(manager: ModelManager, name: str, version: str | None) -> Workflow:
    """The workflow a v2 path names (no version: the first registered); 404 otherwise."""
    endpoint = manager.endpoints.get(name)
    if endpoint is None or not endpoint.versions:
        raise ModelNotFound.v2(name)
    if version is None:
        return endpoint.versions[0]
    workflow = endpoint.find(version)
    if workflow is None:
        raise ModelNotFound.v2(name, version)
    return workflow


def is_ready(workflow: Workflow) -> bool:
    """Every model of it READY with a healthy pool."""
    return all(m.status is ModelStatus.READY and m.pool is not None and m.pool.healthy()
               for m in workflow.models.values())


def check_ready(workflow: Workflow) -> None:
    if not is_ready(workflow):
        raise ServiceUnavailable.not_ready(workflow.name)


def check_server_ready(manager: ModelManager) -> None:
    """Ready: every registered model Healthy (``manager.health``), else 503."""
    statuses, _, _ = manager.health()
    waiting = sorted(name for name, status in statuses.items() if status != "Healthy")
    if waiting:
        raise ServiceUnavailable.models_not_ready(waiting)


def signature(model: Model) -> dict[str, Any] | None:
    """The engine's ``{"inputs": [...], "outputs": [...]}`` of ``{name, datatype, shape}``
    (-1: a dynamic dimension) its worker reported after loading, or None: unknown."""
    known = getattr(model.pool, "signature", None)
    return known.as_json() if known is not None else None


def _engine(model: Model) -> str | None:
    pool = model.pool
    return pool.command.engine if pool is not None else None


def platform(workflow: Workflow) -> str | None:
    model = workflow.single_model
    if model is None:
        return "ensemble"
    engine = _engine(model)
    if engine is None:
        return None
    return PLATFORMS.get(engine, engine.lower())


def model_metadata(manager: ModelManager, workflow: Workflow) -> dict[str, Any]:
    """``GET /v2/models/{m}``: name, versions, platform, and the tensors where known."""
    endpoint = manager.endpoint(workflow.name)
    versions = [w.version for w in endpoint.versions if w.version]
    body: dict[str, Any] = {"name": workflow.name}
    if versions:
        body["versions"] = versions
    kind = platform(workflow)
    if kind is not None:
        body["platform"] = kind
    model = workflow.single_model
    known = signature(model) if model is not None else None
    if known:
        if known.get("inputs") is not None:
            body["inputs"] = [_tensor_metadata(t) for t in known["inputs"]]
        if known.get("outputs") is not None:
            # an unnamed output is answered as output<k>: its metadata says so
            body["outputs"] = [{"name": f"output{k}", **_tensor_metadata(t)}
                               for k, t in enumerate(known["outputs"])]
    return body


def _tensor_metadata(tensor: dict[str, Any]) -> dict[str, Any]:
    """One tensor as v2 lists it: what the engine does not know is left out."""
    return {k: tensor[k] for k in ("name", "datatype", "shape") if tensor.get(k) is not None}


@dataclass(frozen=True, slots=True)
class InferRoute:
    """How one infer request travels: to a tensor engine (typed for its reader) or as is."""

    workflow: Workflow
    #: True for a PyTorch / ONNX model: the worker answers in v2.
    engine: bool


def route(manager: ModelManager, name: str, version: str | None) -> InferRoute:
    """The workflow an infer addresses, ready (503 otherwise), and how to send it."""
    workflow = find(manager, name, version)
    check_ready(workflow)
    model = workflow.single_model
    engine = model is not None and _engine(model) in TENSOR_ENGINES
    return InferRoute(workflow, engine)


def prepare_input(infer: InferRoute, inputs: Input, header_length: str | None) -> None:
    """Type the request for its model: ``V2_MEDIA_TYPE`` (with the JSON's length under the
    binary extension) for an engine; ``application/json`` for a handler when the whole
    body is JSON (a binary one keeps its headers, for the handler to split)."""
    body = inputs.content.get("data")
    size = len(body) if body is not None else 0
    if header_length is not None:
        header_length = header_length.strip()
        if not header_length.isdigit() or int(header_length) > size:
            raise BadInput.header_length(header_length, size)
    properties = inputs.properties
    if not infer.engine:
        if header_length is None:
            properties["content-type"] = "application/json"
        return
    media = _batch.V2_MEDIA_TYPE
    if header_length is not None:
        media = f"{media}; header-length={int(header_length)}"
    properties["content-type"] = media
    properties.pop("accept", None)


@dataclass(frozen=True, slots=True)
class Answer:
    body: bytes
    #: The JSON's length when binary outputs follow it (Inference-Header-Content-Length).
    header_length: int | None


def engine_answer(output: Output, workflow: Workflow) -> Answer:
    """The worker's v2 answer with ``model_name`` (and ``model_version``) in front."""
    if output.code >= 300:
        raise DjlError(output.message or "The model failed", status=output.code)
    data = bytes(output.get_data_item() or b"")
    prefix = '{"model_name":' + json.dumps(workflow.name)
    if workflow.version:
        prefix += ',"model_version":' + json.dumps(workflow.version)
    head = (prefix + ",").encode()
    if output.properties.get("content-type") != _batch.V2_BINARY_MEDIA_TYPE:
        return Answer(head + data[1:], None)
    json_length = int.from_bytes(data[:4], "little")
    return Answer(b"".join((head, memoryview(data)[5:])), json_length - 1 + len(head))
