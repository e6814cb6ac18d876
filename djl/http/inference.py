"""Inference API: /ping, /predictions, /invocations, /models/{m}/invoke (spec §3), the
OpenAI-compatible /v1 routes (djl.http.openai) and the Open Inference Protocol's /v2
routes (djl.http.v2).

Transport-free: a route reads an ``InferenceCall`` and returns a ``codec.Reply``, so the
same code serves the ASGI front (``djl.http.front``) and, for form bodies, Quart.
"""

from __future__ import annotations

from functools import partial

from djl.async_results import AsyncResults
from djl.config import parse_java_bool, parse_java_int
from djl.errors import BadRequest, NotFound
from djl.health import ping_status
from djl.http import codec, openai, v2
from djl.http.call import InferenceCall, invocation_target
from djl.io import Input
from djl.registry import watching


def ping(call: InferenceCall) -> codec.Reply:
    """Spec §3.2: per-model health; the code is ``health.ping_status``'s."""
    statuses, failed, pending = call.manager.health()
    status = ping_status(failed=failed, pending=pending, tripped=call.manager.breaker.tripped,
                         allow_multi_status=call.config.allow_multi_status)
    return codec.json_reply(codec.health_body(statuses), status, call.req_id, call.config)


def _path_target(call: InferenceCall) -> tuple[str | None, str | None]:
    """The (model name, version) the path, query or headers name (spec §3.1)."""
    segments = call.segments
    route = segments[1]
    if route == "predictions":
        if len(segments) < 3 or not segments[2]:
            raise NotFound.resource()
        version = segments[3] if len(segments) > 3 and segments[3] else None
        return segments[2], version
    if route == "models":  # /models/{name}/invoke
        name: str | None = segments[2]
    else:  # /invocations
        name = None
    name = name or call.query.get("model_name") or call.header("model_name")
    return name, call.query.get("model_version") or call.header("model_version") or None


def _form_name(inputs: Input) -> str | None:
    field = inputs.content.get("model_name")
    return bytes(field).decode("utf-8") if field else None


async def predict(call: InferenceCall) -> codec.Reply:
    manager = call.manager
    name, version = _path_target(call)
    if call.method == "OPTIONS":
        if not name:
            name = invocation_target(manager.startup_names,
                                     _form_name(await call.read_input()))
        # Spec §3.4: an unknown name or version is a 404 here too; without a version the
        # round-robin is left alone.
        if version:
            manager.find_workflow(name, version)
        else:
            manager.endpoint(name)
        return codec.json_reply({}, 200, call.req_id, call.config)
    inputs = await call.read_input()
    properties = inputs.properties
    token = properties.get("x-starting-token")
    if token:  # spec §3.4: a poll, whatever model the request names
        page = _results(call).poll(token, _max_items(properties.get("x-max-items")))
        return codec.page_reply(page, call.req_id, call.config)
    if not name:
        name = invocation_target(manager.startup_names, _form_name(inputs))
    call.model = name
    workflow = await manager.find_or_load(name, version, inputs)
    if not parse_java_bool(properties.get("x-synchronous"), True):
        token = _results(call).submit(partial(manager.predict, workflow, inputs))
        return codec.submitted_reply(token, call.req_id, call.config)
    try:
        output = await manager.predict(workflow, inputs, call.watch)
        if output.stream is None:
            return await codec.output_reply(output, call.req_id, call.config)
        # A stream's first chunk may be long in coming: its client is watched meanwhile.
        return await watching(call.watch, codec.output_reply, output, call.req_id,
                              call.config)
    except Exception as exc:  # noqa: BLE001 — every failure gets mapping B's answer
        return codec.error_reply(exc, call.req_id, call.config, inference=True)


def _results(call: InferenceCall) -> AsyncResults:
    """The app's async results; a manager built without the app has none, which fails as
    a store that is not running does."""
    results = call.manager.results
    if results is None:
        raise RuntimeError("AsyncResults: this server was built without them")
    return results


def _max_items(value: str | None) -> int:
    """Spec §3.8 ``x-max-items``: absent or negative means every item."""
    if not value:
        return -1
    try:
        return parse_java_int(value)
    except ValueError:
        raise BadRequest(f"Invalid x-max-items: {value}") from None


async def handle(call: InferenceCall) -> codec.Reply:
    route = call.segments[1]
    if route == "ping":
        return ping(call)
    if route == "v2":
        return await v2.handle(call)
    if route == "v1":
        return await openai.handle(call)
    return await predict(call)
