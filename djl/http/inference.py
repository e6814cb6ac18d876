"""Inference API: /ping, /predictions, /invocations, /models/{m}/invoke (spec §3).

Transport-free: a route reads an ``InferenceCall`` and returns a ``codec.Reply``, so the
same code serves the ASGI front (``djl.http.front``) and, for form bodies, Quart.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from djl.config import ServerConfig
from djl.errors import BadRequest, NotFound
from djl.http import codec
from djl.io import Input
from djl.registry import ModelManager, Watch, watching


@dataclass(slots=True)
class InferenceCall:
    """One inference request as the routes see it."""

    method: str
    segments: list[str]
    query: codec.Query
    req_id: str
    config: ServerConfig
    manager: ModelManager
    #: A request header by lower-case name (the first one), or None.
    header: Callable[[str], str | None]
    #: The request as an Input (reads the body; spec §3.3).
    read_input: Callable[[], Awaitable[Input]]
    #: Listens for the client leaving while a model works (``registry.Watch``); None
    #: where the transport does that itself (Quart).
    watch: Watch | None = None


def ping(call: InferenceCall) -> codec.Reply:
    """Spec §3.2: per-model health; 500 on any FAILED, 207 while pending if allowed."""
    statuses, failed, pending = call.manager.health()
    status = 200
    if failed:
        status = 500
    elif pending and call.config.allow_multi_status:
        status = 207
    return codec.json_reply(codec.health_body(statuses), status, call.req_id, call.config)


def _target(call: InferenceCall) -> tuple[str | None, str | None]:
    """The (model name, version) a request addresses (spec §3.1)."""
    segments = call.segments
    route = segments[1]
    if route == "predictions":
        if len(segments) < 3 or not segments[2]:
            raise NotFound.resource()
        version = segments[3] if len(segments) > 3 and segments[3] else None
        return segments[2], version
    if route == "models":  # /models/{name}/invoke
        name: str | None = segments[2]
    else:  # /invocations, /v1/chat/completions
        name = None
    name = name or call.query.get("model_name") or call.header("model_name")
    return name, call.query.get("model_version") or call.header("model_version") or None


async def _resolve(call: InferenceCall) -> tuple[str, str | None, Input | None]:
    """Target plus, for /invocations, the Input when the name came from a form field."""
    name, version = _target(call)
    if name:
        return name, version, None
    inputs = await call.read_input()
    field = inputs.content.get("model_name")
    if field:
        return bytes(field).decode("utf-8"), version, inputs
    if len(call.manager.startup_names) == 1:
        return call.manager.startup_names[0], version, inputs
    raise BadRequest("Parameter model_name is required.")


async def predict(call: InferenceCall) -> codec.Reply:
    name, version, inputs = await _resolve(call)
    if call.method == "OPTIONS":
        # Spec §3.4: an unknown name or version is a 404 here too; without a version the
        # round-robin is left alone.
        if version:
            call.manager.find_workflow(name, version)
        else:
            call.manager.endpoint(name)
        return codec.json_reply({}, 200, call.req_id, call.config)
    workflow = call.manager.find_workflow(name, version)
    if inputs is None:
        inputs = await call.read_input()
    try:
        output = await call.manager.infer(workflow, inputs, call.watch)
        if output.stream is None:
            return await codec.output_reply(output, call.req_id, call.config)
        # A stream's first chunk may be long in coming: its client is watched meanwhile.
        return await watching(call.watch, codec.output_reply, output, call.req_id,
                              call.config)
    except Exception as exc:  # noqa: BLE001 — every failure gets mapping B's answer
        return codec.error_reply(exc, call.req_id, call.config, inference=True)


async def handle(call: InferenceCall) -> codec.Reply:
    if call.segments[1] == "ping":
        return ping(call)
    return await predict(call)
