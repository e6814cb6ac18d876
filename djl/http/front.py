"""The ASGI front: inference routes served as plain ASGI, everything else handed to Quart.

Quart's routing, Request and Response objects cost more per request than the whole
inference route needs, so ``/ping``, ``/predictions/…``, ``/invocations`` and
``/models/{m}/invoke`` are answered here from the ASGI scope, with the same route code
(``djl.http.inference``) and the same rendering (``codec.Reply``) Quart uses. Quart keeps
the lifespan, the management routes and form bodies.

Each non-streamed answer is one ``http.response.start`` and one ``http.response.body``:
every ASGI send is a trip through hypercorn's stream, h11 and a shielded socket write.

Also here, for every request: the 413 of an over-long ``Content-Length`` (spec §1.5),
and the two ways a refused request used to end badly under hypercorn:
a client that leaves while its answer is written is one debug line, not a traceback;
and the connection is closed after an error even when Quart cancels its handler.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from typing import Any

import trio

from djl.config import ServerConfig
from djl.errors import PayloadTooLarge, RequestTimeout, StreamCut
from djl.http import codec, inference
from djl.http.access_log import MODEL_KEY, access_logged
from djl.io import Input
from djl.registry import ModelManager, Watch, watching

log = logging.getLogger("djl.http")

#: ASGI scope key naming the listener a request came in on: "both", "inference", "management".
ROLE_KEY = "djl.role"

_INFERENCE = re.compile(
    r"^/(ping|invocations|predictions|v1/chat/completions|v1/completions|v1/models|v2)"
    r"([/?].*)?$")
INVOKE = re.compile(r"^/models/.+/invoke$")

#: What a send raises when the client is already gone: hypercorn's reader closes the
#: socket (send_eof) while the app still writes, or the peer reset it.
_GONE = (trio.BusyResourceError, trio.BrokenResourceError, trio.ClosedResourceError)


def is_inference(uri: str, query_string: bytes) -> bool:
    """Spec §1.2: whether a request URI names an inference route."""
    return bool(_INFERENCE.match(uri)) or (bool(INVOKE.match(uri)) and not query_string)


def serves_inline(raw_path: bytes, query_string: bytes, media_type: bytes | None,
                  role: str) -> bool:
    """Whether the inference code answers a request itself (``inference_call`` then
    ``inference.handle``) rather than Quart: an inference route, not on the management
    listener, with a body that is not a form (Quart parses forms). Both servers ask this
    one question (this ASGI front and ``djl.http.h1``), so a route added to
    ``is_inference`` and ``inference.handle`` is served by both."""
    if role == "management":
        return False
    if media_type is not None:
        form = _FORMS.get(media_type)
        if form is None:
            form = codec.is_form(media_type.decode("latin-1").partition(";")[0].strip().lower())
            _remember(_FORMS, media_type, len(media_type), form)
        if form:
            return False
    key = (raw_path, query_string)
    inline = _INLINE.get(key)
    if inline is None:
        uri = raw_path.decode("latin-1")
        if query_string:
            uri += "?" + query_string.decode("latin-1")
        inline = is_inference(uri, query_string)
        _remember(_INLINE, key, len(raw_path) + len(query_string), inline)
    return inline


#: Answers of serves_inline's two questions, by what decides them: clients repeat the same
#: few paths and media types, and matching them costs more than a lookup.
_INLINE: dict[tuple[bytes, bytes], bool] = {}
_FORMS: dict[bytes, bool] = {}
_REMEMBERED = 4096
_REMEMBERED_KEY_BYTES = 256


def _remember(memo: dict[Any, bool], key: Any, size: int, value: bool) -> None:
    """Bounded (at most ~1 MiB of keys): a client inventing paths costs a clear."""
    if size > _REMEMBERED_KEY_BYTES:
        return
    if len(memo) >= _REMEMBERED:
        memo.clear()
    memo[key] = value


def inference_call(method: str, raw_path: bytes, query_string: bytes,
                   headers: list[tuple[bytes, bytes]], req_id: str, config: ServerConfig,
                   manager: ModelManager, read_body: Callable[[], Awaitable[bytes]],
                   watch: Watch | None) -> inference.InferenceCall:
    """The ``InferenceCall`` of a request ``serves_inline`` admits; ``headers`` are its
    (lower-case name, value) pairs, ``read_body`` returns its whole body."""
    query = codec.Query(codec.parse_query(query_string)) if query_string else _NO_QUERY

    async def read_input() -> Input:
        properties, _ = codec.request_properties(headers, config)
        return codec.body_input(properties, query, await read_body(), req_id)

    return inference.InferenceCall(method, codec.path_segments(raw_path), query, req_id,
                                   config, manager, _HeaderLookup(headers).get, read_input,
                                   watch)


def too_large(length: bytes, config: ServerConfig) -> PayloadTooLarge:
    """Spec §1.5's refusal of a declared ``Content-Length`` over ``max_request_size``,
    logged; its connection is closed after the answer, the body never read."""
    log.warning("refused a request of %s bytes (max_request_size %d)",
                length.decode("latin-1"), config.max_request_size)
    return PayloadTooLarge.request(config.max_request_size)


class _ClientGone(Exception):
    """The connection went away while an answer was being written."""


class Front:
    """The app's ``asgi_app``: see the module docstring."""

    def __init__(self, quart_asgi: Any, manager: ModelManager, config: ServerConfig) -> None:
        self.quart_asgi = quart_asgi
        self.manager = manager
        self.config = config
        self.id_header = config.request_id_header_key.lower().encode("latin-1")
        self.access_log = config.access_log
        #: Counts each answer's status class (Response_2XX, ...), or None: metrics off.
        self.count_response = (manager.metrics.count_response
                               if manager.metrics is not None else None)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.quart_asgi(scope, receive, send)
            return
        if self.access_log:
            await access_logged(self._serve, scope, receive, send)
            return
        await self._serve(scope, receive, send)

    async def _serve(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await self._http(scope, receive, send)
        except* _ClientGone:
            log.debug("client left before its answer was written: %s", scope["path"])

    async def _http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        config = self.config
        length = req_id = media_type = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"content-type":
                media_type = value
            elif name == self.id_header and req_id is None:
                req_id = value.decode("latin-1")
        if length is not None and int(length) > config.max_request_size:
            # Spec §1.5: every route, also those that never read their body. h11 has
            # checked the header is digits.
            req_id = req_id or codec.random_uuid4()
            reply = codec.error_reply(too_large(length, config), req_id, config)
            if self.count_response is not None:
                self.count_response(reply.status)
            await _send_reply(send, reply)
            return
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        query_string: bytes = scope.get("query_string", b"")
        if not serves_inline(raw_path, query_string, media_type, scope.get(ROLE_KEY, "both")):
            await self.quart_asgi(scope, receive, _closing_send(send, self.count_response))
            return
        await self._inference(scope, receive, send, raw_path, query_string,
                              req_id or codec.random_uuid4())

    async def _inference(self, scope: dict[str, Any], receive: Any, send: Any,
                         raw_path: bytes, query_string: bytes, req_id: str) -> None:
        config = self.config
        body = _Body(receive, config)
        call = inference_call(scope["method"], raw_path, query_string, scope["headers"], req_id,
                              config, self.manager, body.read, body.listen)
        reply = None
        ended = False
        with trio.CancelScope() as body.scope:
            try:
                reply = await inference.handle(call)
            except Exception as exc:  # noqa: BLE001 — routing errors: mapping A
                reply = codec.error_reply(exc, req_id, config)
            scope[MODEL_KEY] = call.model
            if self.count_response is not None:
                self.count_response(reply.status)
            if reply.chunks is not None:
                ended = await watching(body.listen, _send_stream, send, reply)
        if reply is None or body.gone:
            return  # the client left
        if reply.chunks is None:
            await _send_reply(send, reply)
        elif ended:
            await _send(send, _END)
        # else: cut short, the connection closes without the last chunk


class _HeaderLookup:
    """First value of a request header by lower-case name, built on first use."""

    __slots__ = ("headers", "values")

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.headers = headers
        self.values: dict[str, str] | None = None

    def get(self, name: str) -> str | None:
        if self.values is None:
            self.values = {}
            for raw_name, raw_value in self.headers:
                self.values.setdefault(raw_name.decode("latin-1"), raw_value.decode("latin-1"))
        return self.values.get(name)


class _Body:
    """The request body, received when a route first asks for it; then, like quart-trio,
    ``listen`` runs while a model works (in the waiting task itself, or beside a
    workflow or stream) and cancels the request's ``scope`` when the client leaves, so
    a request nobody waits for stops (and frees its job) at once. A client that stops
    sending a declared body for ``request_body_timeout_s`` gets a 408 and loses the
    connection."""

    __slots__ = ("config", "gone", "read_done", "receive", "scope")

    def __init__(self, receive: Any, config: ServerConfig) -> None:
        self.receive = receive
        self.config = config
        self.gone = False
        #: Until the body is read, its messages are read()'s: nothing listens.
        self.read_done = False
        self.scope: trio.CancelScope | None = None

    async def read(self) -> bytes:
        receive = self.receive
        config = self.config
        timeout = config.request_body_timeout_s
        chunks: list[bytes] = []
        size = 0
        error: Exception | None = None
        # hypercorn hands the app its channel's bound ``receive``: a message already
        # queued (a small body usually is, by the time the app runs) is taken without
        # the cost of a timeout scope.
        receive_nowait = getattr(getattr(receive, "__self__", None), "receive_nowait", None)
        while True:
            message = None
            if receive_nowait is not None:
                try:
                    message = receive_nowait()
                except trio.WouldBlock:
                    pass
            if message is None:
                with trio.move_on_after(timeout):
                    message = await receive()
                if message is None:
                    raise RequestTimeout.body(timeout)
            if message["type"] == "http.disconnect":
                self._client_left()
                await trio.lowlevel.checkpoint()  # raises Cancelled: nothing to answer
            chunk = message.get("body", b"")
            if chunk and error is None:
                size += len(chunk)
                if size > config.max_request_size:
                    # A chunked body has no Content-Length to refuse it by up front.
                    error = PayloadTooLarge.request(config.max_request_size)
                    chunks.clear()
                else:
                    chunks.append(chunk)
            if not message.get("more_body", False):
                break
        if error is not None:
            raise error
        self.read_done = True
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def listen(self) -> None:
        """A ``registry.Watch``: returns only by being cancelled."""
        if self.read_done:
            while (await self.receive())["type"] != "http.disconnect":
                pass
            self._client_left()
        await trio.sleep_forever()  # raises Cancelled

    def _client_left(self) -> None:
        self.gone = True
        assert self.scope is not None
        self.scope.cancel()


_NO_QUERY = codec.Query([])
_END = {"type": "http.response.body", "body": b"", "more_body": False}


async def _send(send: Any, message: dict[str, Any]) -> None:
    try:
        await send(message)
    except _GONE as exc:
        raise _ClientGone() from exc


async def _send_reply(send: Any, reply: codec.Reply) -> None:
    await _send(send, {"type": "http.response.start", "status": reply.status,
                       "headers": reply.headers})
    await _send(send, {"type": "http.response.body", "body": reply.body, "more_body": False})


async def _send_stream(send: Any, reply: codec.Reply) -> bool:
    """Everything of a streamed reply but its end; False when the stream was cut."""
    await _send(send, {"type": "http.response.start", "status": reply.status,
                       "headers": reply.headers})
    assert reply.chunks is not None
    try:
        async with aclosing(reply.chunks) as chunks:  # type: ignore[type-var]
            async for chunk in chunks:
                await _send(send, {"type": "http.response.body", "body": chunk,
                                   "more_body": True})
    except StreamCut as exc:
        # Status and part of the body are out: the one honest end left is to close the
        # connection without the final chunk.
        log.warning("streamed response cut short: %s", exc.message)
        return False
    return True


def _closing_send(send: Any, count_response: Callable[[int], None] | None) -> Any:
    """``send`` for Quart: its last message is shielded, its status counted (metrics).

    hypercorn closes a connection an error answer marked ``connection: close`` inside
    that last send; quart-trio cancels its handler as soon as hypercorn reports the
    stream closed, which used to abort the close and leave the socket open.
    """

    async def closing_send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            with trio.CancelScope(shield=True):
                await _send(send, message)
        else:
            if count_response is not None and message["type"] == "http.response.start":
                count_response(message["status"])
            await _send(send, message)

    return closing_send


__all__ = ["ROLE_KEY", "Front", "inference_call", "is_inference", "serves_inline",
           "too_large"]
