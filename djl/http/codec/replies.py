"""Domain → HTTP: an Output, a result page or an error as a reply, and every JSON body
we render. Only this module turns a ``DjlError`` into ``{"code", "type", "message"}``."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import trio
from quart import Response
from werkzeug.datastructures import Headers

from djl import _batch
from djl.async_results import Page, next_chunk
from djl.config import ServerConfig
from djl.errors import DjlError, StreamCut
from djl.io import Output

log = logging.getLogger("djl.http")

NO_CACHE_HEADERS = {
    "Pragma": "no-cache",
    "Cache-Control": "no-cache; no-store, must-revalidate, private",
    "Expires": "Thu, 01 Jan 1970 00:00:00 UTC",
}
_CUSTOM_ATTRIBUTES = b"x-amzn-sagemaker-custom-attributes"


def render_json(value: Any) -> bytes:
    """Gson-style: pretty, 2-space indent, null members omitted, trailing newline. In C
    (``render_json_c``, djl/_json.pxi: bench/head_json.py is the A/B) for what it takes
    (dicts, lists, strings, numbers, booleans, None), else ``render_json_py``."""
    rendered = _batch.render_json_c(value)
    return rendered if rendered is not None else render_json_py(value)


def render_json_py(value: Any) -> bytes:
    """``render_json`` in Python: json.dumps (its pure-Python encoder, for the indent)."""
    return (json.dumps(_drop_nulls(value), indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


#: ASGI header list: (lower-case name, value) in latin-1.
HeaderList = list[tuple[bytes, bytes]]


class Reply:
    """A rendered answer, before any transport: the front sends it as two ASGI messages
    (or a stream of them); ``to_response`` turns it into a Quart Response."""

    __slots__ = ("body", "chunks", "headers", "status")

    def __init__(self, status: int, headers: HeaderList, body: bytes = b"",
                 chunks: AsyncIterator[bytes] | None = None) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        #: A streamed body (chunked transfer); ``body`` is then unused.
        self.chunks = chunks


#: config → its constant common headers, encoded once (id → (config, headers)).
_CONSTANT_HEADERS: dict[int, tuple[ServerConfig, HeaderList]] = {}


def _constant_headers(config: ServerConfig) -> HeaderList:
    cached = _CONSTANT_HEADERS.get(id(config))
    if cached is not None and cached[0] is config:
        return cached[1]
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1"))
               for k, v in NO_CACHE_HEADERS.items()]
    for name, value in (("access-control-allow-origin", config.cors_allowed_origin),
                        ("access-control-allow-methods", config.cors_allowed_methods),
                        ("access-control-allow-headers", config.cors_allowed_headers)):
        if value:
            headers.append((name.encode(), value.encode("latin-1")))
    _CONSTANT_HEADERS[id(config)] = (config, headers)
    return headers


def common_headers(req_id: str, status: int, config: ServerConfig) -> HeaderList:
    """Spec §1.3: the headers every response carries."""
    headers = [(b"x-request-id", req_id.encode("latin-1")), *_constant_headers(config)]
    if status >= 400:
        # Spec §1.3: an error closes the connection, whatever the client asked for.
        headers.append((b"connection", b"close"))
    return headers


def json_reply(value: Any, status: int, req_id: str, config: ServerConfig) -> Reply:
    body = render_json(value)
    headers = common_headers(req_id, status, config)
    headers.append((b"content-type", b"application/json"))
    headers.append((b"content-length", str(len(body)).encode()))
    return Reply(status, headers, body)


def bytes_reply(body: bytes, content_type: str, req_id: str, config: ServerConfig) -> Reply:
    """A 200 with a body already rendered (the metrics' text format)."""
    headers = common_headers(req_id, 200, config)
    headers.append((b"content-type", content_type.encode("latin-1")))
    headers.append((b"content-length", str(len(body)).encode()))
    return Reply(200, headers, body)


def v2_reply(value: Any, status: int, req_id: str, config: ServerConfig) -> Reply:
    """An Open Inference Protocol JSON body: compact, as Triton writes it."""
    return sized_reply(json.dumps(value, separators=(",", ":")).encode(), status,
                       "application/json", req_id, config)


def sized_reply(body: bytes, status: int, content_type: str | None, req_id: str,
                config: ServerConfig, extra: HeaderList | None = None) -> Reply:
    headers = common_headers(req_id, status, config)
    if content_type is not None:
        headers.append((b"content-type", content_type.encode("latin-1")))
    if extra:
        headers += extra
    headers.append((b"content-length", str(len(body)).encode()))
    return Reply(status, headers, body)


def v2_error_reply(error: Exception, req_id: str, config: ServerConfig) -> Reply:
    """The Open Inference Protocol's ``{"error": "<message>"}`` with the error's status."""
    if isinstance(error, DjlError):
        return v2_reply({"error": error.message}, error.status, req_id, config)
    log.exception("unexpected error", exc_info=error)
    return v2_reply({"error": str(error) or type(error).__name__}, 500, req_id, config)


def error_body(error: DjlError | Exception, status: int) -> dict[str, Any]:
    if isinstance(error, DjlError):
        return {"code": status, "type": error.type, "message": error.message or None}
    return {"code": status, "type": type(error).__name__, "message": str(error) or None}


def error_reply(error: Exception, req_id: str, config: ServerConfig, *,
                inference: bool = False) -> Reply:
    """Mapping A (management, routing) or B (inference failures) of spec §1.4."""
    if isinstance(error, DjlError):
        status = error.status
        if inference and error.config_key:
            status = config.status_for(error.config_key, status)
    else:
        status = config.server_error_http_code if inference else 500
        log.exception("unexpected error", exc_info=error)
    return json_reply(error_body(error, status), status, req_id, config)


def to_response(reply: Reply) -> Response:
    """A Reply as a Quart Response (the routes Quart still serves)."""
    typed = False
    headers = Headers()
    for name, value in reply.headers:
        headers.add(name.decode("latin-1"), value.decode("latin-1"))
        typed = typed or name == b"content-type"
    response = Response(reply.chunks if reply.chunks is not None else reply.body,
                        status=reply.status, headers=headers)
    if not typed:
        del response.headers["Content-Type"]  # spec §3.5: no default type
    return response


def json_response(value: Any, status: int, req_id: str, config: ServerConfig) -> Response:
    return to_response(json_reply(value, status, req_id, config))


def status_response(text: str, status: int, req_id: str, config: ServerConfig) -> Response:
    return json_response({"status": text}, status, req_id, config)


def error_response(error: Exception, req_id: str, config: ServerConfig, *,
                   inference: bool = False) -> Response:
    return to_response(error_reply(error, req_id, config, inference=inference))


async def output_reply(output: Output, req_id: str, config: ServerConfig) -> Reply:
    """Spec §3.5: properties → headers, body = item ``data`` or the first; streams."""
    stream = output.stream
    if stream is None:
        body = bytes(output.get_data_item() or b"")
        headers = _with_common_headers(output, req_id, config, drop=_SIZED)
        headers.append((b"content-length", str(len(body)).encode()))
        return Reply(output.code, headers, body)
    first = None
    try:
        with trio.move_on_after(config.chunked_read_timeout_s) as waiting:
            first = await next_chunk(stream)
    except BaseException:
        stream.close()  # the client went away: let the worker drain instead of block
        raise
    if waiting.cancelled_caught:
        stream.close()
        # Nothing is sent yet, so the client can still be told plainly (not a 200).
        raise StreamCut(
            "The model sent no stream chunk within chunked_read_timeout "
            f"({config.chunked_read_timeout_s:g}s)"
        )
    if first is None:  # the generator yielded nothing (spec §6.7): a plain empty body
        stream.close()  # type: ignore[attr-defined]
        headers = _with_common_headers(output, req_id, config, drop=_SIZED)
        headers.append((b"content-length", b"0"))
        return Reply(output.code, headers)
    # Spec §1.3: the header frame of a stream never closes the connection, whatever its
    # code: chunked framing ends the body cleanly.
    return Reply(output.code, _with_common_headers(output, req_id, config, drop=(),
                                                   keep_alive=True),
                 chunks=_chunks(first, stream, config.chunked_read_timeout_s))


def _next_token_headers(headers: HeaderList, token: str) -> None:
    raw = token.encode("latin-1")
    headers.append((b"x-next-token", raw))
    headers.append((_CUSTOM_ATTRIBUTES, b"x-next-token=" + raw))


def submitted_reply(token: str, req_id: str, config: ServerConfig) -> Reply:
    """Spec §3.8: an asynchronous request accepted — 200, empty, the token to poll with."""
    headers = common_headers(req_id, 200, config)
    _next_token_headers(headers, token)
    headers.append((b"content-length", b"0"))
    return Reply(200, headers)


def page_reply(page: Page, req_id: str, config: ServerConfig) -> Reply:
    """Spec §3.8: one poll of an asynchronous result."""
    if page.error is not None:
        return error_reply(page.error, req_id, config, inference=True)
    output = Output(page.status)
    output.properties = page.properties
    # The paging headers are the store's to set, whatever the model's said.
    headers = _with_common_headers(output, req_id, config, drop=_PAGED)
    if page.next_token is not None:
        _next_token_headers(headers, page.next_token)
    headers.append((b"content-length", str(len(page.body)).encode()))
    return Reply(page.status, headers, page.body)


#: A full body's length is ours to state, whatever the model set.
_SIZED = ("content-length",)
_PAGED = (*_SIZED, "x-next-token", _CUSTOM_ATTRIBUTES.decode())


def _with_common_headers(output: Output, req_id: str, config: ServerConfig, *,
                         drop: tuple[str, ...], keep_alive: bool = False) -> HeaderList:
    """Spec §3.5: the common headers overwrite the model's, whatever case it used."""
    common = common_headers(req_id, 200 if keep_alive else output.code, config)
    if not output.properties:
        return common
    overridden = _overridden(config, output.code >= 400 and not keep_alive, drop)
    merged = []
    for key, value in output.properties.items():
        name = str(key).lower()
        if name not in overridden:
            merged.append((name.encode("latin-1"), str(value).encode("latin-1")))
    merged += common
    return merged


#: (id of config, error, drop) → (config, the names common_headers writes, and drop's).
_OVERRIDDEN: dict[tuple[int, bool, tuple[str, ...]], tuple[ServerConfig, frozenset[str]]] = {}


def _overridden(config: ServerConfig, error: bool, drop: tuple[str, ...]) -> frozenset[str]:
    """The header names a model's properties may not set: common_headers' and ``drop``'s
    (the same for every answer of a config: built once)."""
    key = (id(config), error, drop)
    cached = _OVERRIDDEN.get(key)
    if cached is not None and cached[0] is config:
        return cached[1]
    names = frozenset(name.decode() for name, _ in common_headers("", 400 if error else 200,
                                                                  config)).union(drop)
    _OVERRIDDEN[key] = (config, names)
    return names


async def _chunks(first: bytes, stream: Any, timeout_s: float) -> AsyncIterator[bytes]:
    try:
        yield first
        while True:
            with trio.fail_after(timeout_s):
                chunk = await next_chunk(stream)
            if chunk is None:
                return
            yield chunk
    finally:
        stream.close()
