"""Management API: /models, /workflows, /server/* (spec §2). Thin: parse, call, render."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from quart import Request, Response

from djl.config import RegisterParams, parse_int, parse_java_bool
from djl.errors import BadRequest, IllegalArgument, MethodNotAllowed, NotFound
from djl.http import codec
from djl.http.call import RouteCall
from djl.log_levels import python_level
from djl.metrics import CONTENT_TYPE
from djl.workflow.templates import load_template

log = logging.getLogger("djl.http")


@dataclass(slots=True)
class Call(RouteCall):
    """One management request as the route functions see it (Quart's request too)."""

    request: Request

    def status(self, text: str, code: int = 200) -> Response:
        return codec.status_response(text, code, self.req_id, self.config)

    def json(self, value: Any, code: int = 200) -> Response:
        return codec.json_response(value, code, self.req_id, self.config)


async def handle(call: Call) -> Response:
    """Dispatch by the route table of spec §2.1."""
    segments = call.segments
    kind = segments[1]
    if kind == "server":
        return await _server(call)
    n = len(segments)
    if n < 3:
        if call.method == "GET":
            return _list_models(call) if kind == "models" else _list_workflows(call)
        if call.method == "POST":
            return await (_register_model(call) if kind == "models" else _register_workflow(call))
        raise MethodNotAllowed()
    name = segments[2]
    version = segments[3] if n > 3 and segments[3] else None
    if call.method == "GET":
        workflows = call.manager.describe(name, version)
        return call.json(codec.describe_workflows(workflows, call.manager.startup_names))
    if call.method == "PUT":
        return await _scale(call, name, version)
    if call.method == "DELETE":
        await call.manager.unregister(name, version)
        return call.status(f'Model or workflow "{name}" unregistered')
    raise MethodNotAllowed()


async def _server(call: Call) -> Response:
    what = call.segments[2] if len(call.segments) > 2 else ""
    if what == "logging":
        logging.getLogger("djl").setLevel(python_level(call.query.get("level")))
        return call.status("OK")
    if what == "metrics" and len(call.segments) == 3:
        if call.method != "GET":
            raise MethodNotAllowed()
        metrics = call.manager.metrics
        if metrics is None:
            raise BadRequest.prometheus_disabled()
        # Spec §2.8: repeated name[] parameters pick the families; none means all.
        names = [value for key, value in call.query.pairs if key == "name[]" and value]
        return codec.to_response(codec.bytes_reply(
            metrics.exposition(names), CONTENT_TYPE, call.req_id, call.config))
    raise NotFound.resource()


async def _register_params(call: Call) -> RegisterParams:
    """Query mode, or JSON-body mode when the media type is application/json (§2.2)."""
    if (call.request.mimetype or "").lower() == "application/json":
        raw = await call.request.get_data(cache=True)
        try:
            body = json.loads(raw or b"{}")
        except ValueError as exc:
            raise BadRequest(f"Invalid JSON body: {exc}") from None
        if not isinstance(body, dict):
            raise BadRequest("The JSON body must be an object")

        def get(key: str) -> Any:
            value = body.get(key)
            if isinstance(value, bool):
                return "true" if value else "false"
            return None if value is None else str(value)

        return RegisterParams.from_query(get)
    return RegisterParams.from_query(call.query.first)


async def _register_model(call: Call) -> Response:
    params = await _register_params(call)
    workflow = await call.manager.register(params)
    if not params.synchronous:
        return call.status(f'Model "{workflow.name}" registration scheduled.', 202)
    return call.status(f'Model "{workflow.name}" registered.')


async def _register_workflow(call: Call) -> Response:
    url = call.query.get("url")
    template = call.query.get("template")
    synchronous = parse_java_bool(call.query.first("synchronous"), True)
    replacements = call.query.single_valued()
    if url:
        workflow = await call.manager.register_workflow_file(
            url, replacements, synchronous=synchronous)
    elif template:
        workflow = await call.manager.register_workflow(
            load_template(template, replacements), synchronous=synchronous)
    else:
        raise BadRequest("Either parameter url or template is required.")
    if not synchronous:
        return call.status(f'Workflow "{workflow.name}" registration scheduled.', 202)
    return call.status(f'Workflow "{workflow.name}" registered.')


def _list_models(call: Call) -> Response:
    limit = call.query.get_int("limit", 100)
    token = call.query.get_int("next_page_token", 0)
    endpoints, next_token, total = call.manager.page(limit, token)
    rows = codec.model_rows([w for e in endpoints for w in e.versions])
    body: dict[str, Any] = {}
    if next_token < total:
        body["nextPageToken"] = str(next_token)
    body["models"] = rows
    return call.json(body)


def _list_workflows(call: Call) -> Response:
    limit = call.query.get_int("limit", 100)
    token = call.query.get_int("next_page_token", 0)
    endpoints, next_token, total = call.manager.page(limit, token)
    rows = [{"workflowName": w.name, "version": w.version}
            for e in endpoints for w in e.versions]
    # Spec §2.5: the token is always present; clients stop on an empty page.
    return call.json({"nextPageToken": str(min(next_token, total)), "workflows": rows})


async def _scale(call: Call, name: str, version: str | None) -> Response:
    def number(key: str) -> int:
        try:
            return parse_int(call.query.get(key), -1)  # type: ignore[return-value]
        except IllegalArgument as exc:
            # Spec §2.7: a BadRequestException carrying the NumberFormatException text.
            raise BadRequest(exc.message) from None

    min_workers = number("min_worker")
    max_workers = number("max_worker")
    workflows = await call.manager.scale(
        name, version, min_workers if min_workers >= 0 else None,
        max_workers if max_workers >= 0 else None, call.query.get("device"),
    )
    lines = [
        f'Workflow "{w.name}" worker scaled. New Worker configuration min workers:'
        f"{min_workers} max workers:{max_workers}"
        for w in workflows
        for _ in w.models
    ]
    return call.status("\n".join(lines))
