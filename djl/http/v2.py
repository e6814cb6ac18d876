"""The Open Inference Protocol (KServe v2, Triton's REST API) on the inference listener.

``/v2``, ``/v2/health/{live,ready}``, ``/v2/models/{m}[/versions/{v}]`` and its ``/ready``
and ``/infer``. Thin: the rules are djl/open_inference.py's, the tensors the worker's
(djl/_v2.pxi); every failure is ``{"error": "<message>"}`` with its status (400 a body
the reader refuses, 404 an unknown model or version, 503 a model not ready).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from djl import open_inference
from djl.errors import MethodNotAllowed, NotFound
from djl.http import codec

if TYPE_CHECKING:
    from djl.http.call import InferenceCall


async def handle(call: InferenceCall) -> codec.Reply:
    try:
        return await _route(call)
    except Exception as exc:  # noqa: BLE001 — every failure is rendered v2's way
        return codec.v2_error_reply(exc, call.req_id, call.config)


async def _route(call: InferenceCall) -> codec.Reply:
    parts = call.segments[2:]
    manager = call.manager
    if not parts:
        _method(call, "GET")
        return _json(call, open_inference.server_metadata())
    if parts[0] == "health" and len(parts) == 2 and parts[1] in ("live", "ready"):
        _method(call, "GET")
        if parts[1] == "ready":
            open_inference.check_server_ready(manager)
        return codec.sized_reply(b"", 200, None, call.req_id, call.config)
    if parts[0] != "models" or len(parts) < 2:
        raise NotFound.resource()
    name, rest = parts[1], parts[2:]
    version = None
    if len(rest) >= 2 and rest[0] == "versions":
        version, rest = rest[1], rest[2:]
    call.model = name
    if not rest:
        _method(call, "GET")
        workflow = open_inference.find(manager, name, version)
        return _json(call, open_inference.model_metadata(manager, workflow))
    if rest == ["ready"]:
        _method(call, "GET")
        open_inference.check_ready(open_inference.find(manager, name, version))
        return codec.sized_reply(b"", 200, None, call.req_id, call.config)
    if rest == ["infer"]:
        _method(call, "POST")
        return await _infer(call, name, version)
    raise NotFound.resource()


async def _infer(call: InferenceCall, name: str, version: str | None) -> codec.Reply:
    infer = open_inference.route(call.manager, name, version)
    inputs = await call.read_input()
    open_inference.prepare_input(infer, inputs, call.header("inference-header-content-length"))
    output = await call.manager.predict(infer.workflow, inputs, call.watch)
    if not infer.engine:  # a handler speaks v2 itself
        return await codec.output_reply(output, call.req_id, call.config)
    answer = open_inference.engine_answer(output, infer.workflow)
    if answer.header_length is None:
        return codec.sized_reply(answer.body, 200, "application/json", call.req_id,
                                 call.config)
    return codec.sized_reply(
        answer.body, 200, "application/octet-stream", call.req_id, call.config,
        [(b"inference-header-content-length", str(answer.header_length).encode())])


def _method(call: InferenceCall, allowed: str) -> None:
    if call.method != allowed:
        raise MethodNotAllowed()


def _json(call: InferenceCall, value: object) -> codec.Reply:
    return codec.v2_reply(value, 200, call.req_id, call.config)
