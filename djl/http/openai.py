"""OpenAI-compatible routes on the inference listener: ``GET /v1/models``,
``POST /v1/completions`` and ``POST /v1/chat/completions``.

Thin, like the rest of http/: ``model`` names the endpoint, or a LoRA adapter of one
(listed by /v1/models with its ``parent``); the request goes to it as
any inference does, marked with the API it came by (``rolling.API``), and the
text-generation worker reads OpenAI's body and writes OpenAI's answer or SSE stream
(djl/runtime/generation/formats.py). What is refused here (no such model, a body that is
not JSON, the queue full) is answered in OpenAI's error shape
``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from djl import adapter_calls, rolling
from djl.errors import BadRequest, DjlError, MethodNotAllowed, NotFound
from djl.http import codec
from djl.http.call import invocation_target
from djl.registry import watching

if TYPE_CHECKING:
    from djl.http.call import InferenceCall

#: Path after /v1/ → the API the worker answers in (djl.runtime.generation.params.APIS).
_APIS = {"completions": "completions", "chat/completions": "chat.completions"}


async def handle(call: InferenceCall) -> codec.Reply:
    path = "/".join(call.segments[2:])
    try:
        if path == "models":
            if call.method != "GET":
                raise MethodNotAllowed("Use GET for /v1/models")
            return codec.json_reply(_models(call), 200, call.req_id, call.config)
        api = _APIS.get(path)
        if api is None:
            raise NotFound.resource()
        if call.method != "POST":
            raise MethodNotAllowed(f"Use POST for /v1/{path}")
        return await _generate(call, api)
    except DjlError as exc:
        return error_reply(exc, call)


def _models(call: InferenceCall) -> dict[str, Any]:
    """Every endpoint, then every LoRA adapter with ``parent`` = its model (vLLM's way)."""
    data = [{"id": name, "object": "model", "created": 0, "owned_by": "djl"}
            for name in sorted(call.manager.endpoints)]
    for parent, adapters in call.manager.adapter_tables():
        data += [{"id": a.name, "object": "model", "created": 0, "owned_by": "djl",
                  "root": a.src, "parent": parent} for a in adapters.table.values()]
    return {"object": "list", "data": data}


def _adapter_owner(call: InferenceCall, name: str | None) -> str | None:
    """The model whose adapter ``name`` is, when ``model`` names no endpoint."""
    if name:
        for parent, adapters in call.manager.adapter_tables():
            if name in adapters.table:
                return parent
    return None


async def _generate(call: InferenceCall, api: str) -> codec.Reply:
    manager = call.manager
    inputs = await call.read_input()
    try:
        body = json.loads(bytes(inputs.get_as_bytes("data") or b"{}"))
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("The request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise BadRequest('"model" must be a string')
    name = invocation_target(manager.startup_names, model)
    adapter = None
    if name not in manager.endpoints:
        parent = _adapter_owner(call, model)
        if parent is None:
            call.model = name
            raise NotFound(f"The model {name} does not exist")
        name, adapter = parent, model
    call.model = name
    workflow = await manager.find_or_load(name, None, inputs)
    inputs.properties[rolling.API] = api
    if adapter is not None:
        inputs.properties[adapter_calls.ADAPTER] = adapter
    output = await manager.predict(workflow, inputs, call.watch)
    if output.stream is None:
        return await codec.output_reply(output, call.req_id, call.config)
    return await watching(call.watch, codec.output_reply, output, call.req_id, call.config)


def error_reply(error: DjlError, call: InferenceCall) -> codec.Reply:
    status = error.status
    if status == 404:
        kind, code = "invalid_request_error", "model_not_found"
    elif status < 500:
        kind, code = "invalid_request_error", None
    else:
        kind, code = "server_error", None
    value = {"error": {"message": error.message, "type": kind, "param": None, "code": code}}
    return codec.json_reply(value, status, call.req_id, call.config)
