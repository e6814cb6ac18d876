"""Inference API: /ping, /predictions, /invocations, /models/{m}/invoke (spec §3)."""

from __future__ import annotations

from quart import Response

from djl.errors import BadRequest, NotFound
from djl.http import codec
from djl.http.management import Call
from djl.io import Input


async def ping(call: Call) -> Response:
    """Spec §3.2: per-model health; 500 on any FAILED, 207 while pending if allowed."""
    statuses, failed, pending = call.manager.health()
    status = 200
    if failed:
        status = 500
    elif pending and call.config.allow_multi_status:
        status = 207
    return codec.json_response(codec.health_body(statuses), status, call.req_id, call.config)


def _target(call: Call) -> tuple[str | None, str | None]:
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
    headers = call.request.headers
    name = name or call.query.get("model_name") or headers.get("model_name")
    return name, call.query.get("model_version") or headers.get("model_version") or None


async def _resolve(call: Call) -> tuple[str, str | None, Input | None]:
    """Target plus, for /invocations, the Input when the name came from a form field."""
    name, version = _target(call)
    if name:
        return name, version, None
    inputs = await codec.to_input(call.request, call.query, call.req_id, call.config)
    field = inputs.content.get("model_name")
    if field:
        return bytes(field).decode("utf-8"), version, inputs
    if len(call.manager.startup_names) == 1:
        return call.manager.startup_names[0], version, inputs
    raise BadRequest("Parameter model_name is required.")


async def predict(call: Call) -> Response:
    name, version, inputs = await _resolve(call)
    if call.method == "OPTIONS":
        # Spec §3.4: an unknown name or version is a 404 here too; without a version the
        # round-robin is left alone.
        if version:
            call.manager.find_workflow(name, version)
        else:
            call.manager.endpoint(name)
        return call.json({})
    workflow = call.manager.find_workflow(name, version)
    if inputs is None:
        inputs = await codec.to_input(call.request, call.query, call.req_id, call.config)
    try:
        output = await call.manager.infer(workflow, inputs)
        return await codec.output_response(output, call.req_id, call.config)
    except Exception as exc:  # noqa: BLE001 — every failure gets mapping B's answer
        return codec.error_response(exc, call.req_id, call.config, inference=True)
