"""Adapter management API: ``P/adapters[/{adapter}[/update]]`` with ``P`` = ``/models/{m}``
or empty for the single start-up model (spec §2.10). Thin: parse, call djl/adapters.py,
render DJL's answers."""

from __future__ import annotations

from typing import Any

from quart import Response

from djl.adapters import PYTHON_ENGINES, Adapter, ModelAdapters, source_path
from djl.errors import AdapterError, BadRequest, MethodNotAllowed
from djl.http.management import Call
from djl.io import Output

_ALIAS = "X-Amzn-SageMaker-Adapter-Alias"


async def handle(call: Call) -> Response:
    segments = call.segments
    if segments[1] == "models":
        model, rest = segments[2], segments[4:]
    else:
        model, rest = None, segments[2:]
    adapters = call.manager.adapters_of(model)
    method = call.method
    if not rest:
        if method == "GET":
            return _list(call, adapters)
        if method == "POST":
            return await _register(call, adapters)
    elif len(rest) == 1:
        if method == "GET":
            return call.json(adapters.find(rest[0]).describe())
        if method == "DELETE":
            return _status(call, await adapters.unregister(adapters.find(rest[0]).name))
    elif len(rest) == 2 and rest[1].lower() == "update" and method == "POST":
        return await _update(call, adapters, rest[0])
    raise MethodNotAllowed()


def _list(call: Call, adapters: ModelAdapters) -> Response:
    limit = call.query.get_int("limit", 100)
    token = call.query.get_int("next_page_token", 0)
    rows = list(adapters.table.values())
    start = max(0, token)
    end = start + limit if limit > 0 else len(rows)
    body: dict[str, Any] = {}
    if end < len(rows):
        body["nextPageToken"] = str(end)
    body["adapters"] = [a.describe() for a in rows[start:end]]
    return call.json(body)


async def _register(call: Call, adapters: ModelAdapters) -> Response:
    name = call.query.get("name")
    if not name:
        raise AdapterError.parameter_required("name")
    src = call.query.get("src")
    if not src:
        raise AdapterError.parameter_required("src")
    path = source_path(src, call.config)
    if adapters.pool.command.engine not in PYTHON_ENGINES:
        raise AdapterError.not_python()
    options = call.query.single_valued()
    options["src"] = path
    adapter = Adapter(name, path, call.request.headers.get(_ALIAS), options)
    return _status(call, await adapters.register(adapter))


async def _update(call: Call, adapters: ModelAdapters, name: str) -> Response:
    adapter = adapters.find(name)
    options = call.query.single_valued()
    if options.get("src"):
        options["src"] = source_path(options["src"], call.config)
    else:
        options.pop("src", None)
    return _status(call, await adapters.update(adapter.name, options))


def _status(call: Call, output: Output) -> Response:
    """DJL's answer to an adapter job: the handler's message as status, or its refusal
    (code >= 300) as an error body with that code."""
    if output.code >= 300:
        raise BadRequest(output.message, status=output.code)
    return call.status(output.message, output.code)
