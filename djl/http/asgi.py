"""djl's own server speaking ASGI to the Quart app: one request (``Exchange``) and the
app's lifespan (``Lifespan``).

Every route the connection does not answer itself (management, forms, unknown paths)
is handed to Quart as an ASGI ``http`` scope; the app's lifespan runs once, at start,
so quart-trio opens its nursery and runs its ``before_serving``/``after_serving``.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol
from urllib.parse import unquote

import trio

from djl.errors import DjlError
from djl.http import codec
from djl.http.answer import InvalidHeader, answer_head
from djl.http.front import ROLE_KEY
from djl.http.wire import ClientGone, Request, Site

log = logging.getLogger("djl.http")

_ASGI = {"version": "3.0", "spec_version": "2.3"}


class Connection(Protocol):
    """What an exchange needs of its connection (``djl.http.h1.Connection``)."""

    site: Site
    config: Any
    client: Any
    server: Any
    closing: bool

    async def write(self, data: bytes) -> None: ...
    def count(self, status: int) -> None: ...
    async def next_body(self, request: Request) -> tuple[bytes, bool] | None: ...
    async def wait_gone(self, request: Request) -> None: ...
_DISCONNECT = {"type": "http.disconnect"}


class Exchange:
    """One request handed to the Quart app: its scope, ``receive`` and ``send``.

    ``receive`` gives the body as it arrives (``100 Continue`` first, when asked for),
    then waits for the client to leave. ``send`` writes a sized answer as one write, head
    included: one ``http.response.body``, or Quart's two (the body, then an empty last
    one); a body in more messages goes out chunked, unless the app gave its length.
    """

    __slots__ = ("body_done", "chunked", "conn", "done", "head", "held", "keep", "request",
                 "scope", "started")

    def __init__(self, conn: Connection, request: Request, raw_path: bytes,
                 query_string: bytes) -> None:
        self.conn = conn
        self.request = request
        site = conn.site
        self.scope: dict[str, Any] = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": request.http_version,
            "method": request.method,
            "scheme": site.scheme,
            "path": unquote(raw_path.decode("latin-1")),
            "raw_path": raw_path,
            "query_string": query_string,
            "root_path": "",
            "headers": request.headers,
            "client": conn.client,
            "server": conn.server,
            "state": dict(site.state),
            ROLE_KEY: site.role,
        }
        self.body_done = False
        self.started = False
        self.done = False
        self.chunked = False
        self.head: tuple[int, list[tuple[bytes, bytes]]] | None = None
        #: The first body part of an answer of unknown length, until the next message says
        #: whether more follows.
        self.held: bytes | None = None
        #: Whether the connection may serve another request afterwards.
        self.keep = False

    async def run(self) -> None:
        try:
            await self.conn.site.quart_asgi(self.scope, self.receive, self.send)
        except Exception as exc:  # noqa: BLE001 — the app failed: 500 if nothing is out
            log.exception("the app failed on %s %s", self.request.method, self.scope["path"],
                          exc_info=exc)
            if not self.started:
                reply = codec.error_reply(DjlError("Internal server error"), self.request.req_id
                                          or codec.random_uuid4(), self.conn.config)
                await self._answer_whole(reply.status, reply.headers, reply.body)
            self.keep = False
            return
        if not self.done:
            self.keep = False  # the app returned without finishing its answer

    async def receive(self) -> dict[str, Any]:
        conn = self.conn
        request = self.request
        if not self.body_done:
            got = await conn.next_body(request)
            if got is not None:
                data, more = got
                self.body_done = not more
                return {"type": "http.request", "body": data, "more_body": more}
            self.body_done = True
        await conn.wait_gone(request)
        return _DISCONNECT

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.started or self.head is not None:
                raise RuntimeError("http.response.start sent twice")
            self.head = (int(message["status"]), list(message.get("headers", ())))
            return
        if kind != "http.response.body":
            return  # trailers, push, ...: not served over HTTP/1.1 here
        if self.done:
            return  # the answer is complete (or was replaced by a 500)
        if self.head is None:
            raise RuntimeError("http.response.body before http.response.start")
        body = message.get("body", b"")
        more = message.get("more_body", False)
        if self.request.method == "HEAD":
            body = b""
        if not self.started:
            held = self.held
            if held is not None:  # Quart's way: the body, then an empty last message
                self.held = None
                body = held + body if body else held
            status, headers = self.head
            if not more:
                await self._answer_whole(status, headers, body)
                return
            if held is None and not any(n == b"content-length" for n, _ in headers):
                # Wait for the next message: if it ends the body, this is a sized answer.
                self.held = body
                return
            await self._start_stream(status, headers, body)
            return
        if body:
            self.request.sent += len(body)
            await self._write(b"%x\r\n%b\r\n" % (len(body), body) if self.chunked else body)
        if not more:
            self.done = True
            if self.chunked:
                await self._write(b"0\r\n\r\n")
            self.request.answered = True

    async def _write(self, data: bytes) -> None:
        """A write that, when the client is gone, stops the app as a disconnect does."""
        try:
            await self.conn.write(data)
        except ClientGone:
            request = self.request
            request.gone = True
            self.keep = False
            assert request.scope is not None
            request.scope.cancel()
            await trio.lowlevel.checkpoint()

    async def _answer_whole(self, status: int, headers: list[tuple[bytes, bytes]],
                            body: bytes) -> None:
        """A sized answer in one write, head and body."""
        self.started = self.done = True
        if not any(name == b"content-length" for name, _ in headers):
            headers.append((b"content-length", str(len(body)).encode()))
        try:
            head, close = self._head(status, headers, chunked=False)
        except InvalidHeader:
            await self._invalid_header()
            return
        self.keep = not close
        await self._write(head + body)
        self.request.sent = len(body)
        self.request.answered = True

    async def _start_stream(self, status: int, headers: list[tuple[bytes, bytes]],
                            first: bytes) -> None:
        """The head and the first part of a body in several messages: sized when the app
        gave its length, else chunked (HTTP/1.0: ended by closing)."""
        self.started = True
        sized = any(name == b"content-length" for name, _ in headers)
        http10 = self.request.http_version == "1.0"
        self.chunked = not sized and not http10
        try:
            head, close = self._head(status, headers, chunked=self.chunked,
                                     close=http10 and not sized)
        except InvalidHeader:
            await self._invalid_header()
            return
        self.keep = not close
        if first and self.chunked:
            first = b"%x\r\n%b\r\n" % (len(first), first)
        await self._write(head + first)
        self.request.sent = len(first)

    def _head(self, status: int, headers: list[tuple[bytes, bytes]], *, chunked: bool,
              close: bool = False) -> tuple[bytes, bool]:
        request = self.request
        conn = self.conn
        request.status = status
        conn.count(status)
        close = (close or status >= 400 or not request.keep_alive or conn.closing
                 or not request.complete)
        return answer_head(status, headers, close, request.http_version == "1.0", chunked)

    async def _invalid_header(self) -> None:
        """The app's answer cannot be written as it is (it would split the head): a 500
        instead, and the app's body is dropped."""
        log.error("the app's answer to %s has a header with CR, LF or NUL", self.scope["path"])
        request = self.request
        reply = codec.error_reply(DjlError("Invalid response header"),
                                  request.req_id or codec.random_uuid4(), self.conn.config)
        request.status = reply.status
        head, _ = answer_head(reply.status, reply.headers, True)
        self.started = self.done = True
        self.keep = False
        await self._write(head + reply.body)
        request.answered = True


class Lifespan:
    """The ASGI lifespan of the app: ``startup`` before serving, ``shutdown`` after."""

    def __init__(self, app: Any) -> None:
        self.app = app
        #: The lifespan scope's ``state``, copied into every request's scope.
        self.state: dict[str, Any] = {}
        self._to_app_send, self._to_app = trio.open_memory_channel[dict[str, Any]](1)
        self._from_app_send, self._from_app = trio.open_memory_channel[dict[str, Any]](1)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Start the app (in the caller's nursery, via ``nursery.start``); returns when its
        lifespan ends. A failed start-up raises from ``start``."""
        scope = {"type": "lifespan", "asgi": _ASGI, "state": self.state}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._app_task, scope)
            await self._to_app_send.send({"type": "lifespan.startup"})
            try:
                answer = await self._from_app.receive()
            except trio.EndOfChannel:
                answer = {"type": "lifespan.startup.failed", "message": "it returned"}
            if answer["type"] != "lifespan.startup.complete":
                raise RuntimeError(f"the app's start-up failed: {answer.get('message', '')}")
            task_status.started()

    async def _app_task(self, scope: dict[str, Any]) -> None:
        # Its end closes the channel: a shutdown asked of an app that is gone returns.
        async with self._from_app_send:
            await self.app(scope, self._to_app.receive, self._from_app_send.send)

    async def shutdown(self) -> None:
        try:
            await self._to_app_send.send({"type": "lifespan.shutdown"})
            answer = await self._from_app.receive()
        except (trio.EndOfChannel, trio.BrokenResourceError):
            return  # the app's lifespan has ended already
        if answer["type"] != "lifespan.shutdown.complete":
            log.error("the app's shutdown failed: %s", answer.get("message", ""))


__all__ = ["Exchange", "Lifespan"]
