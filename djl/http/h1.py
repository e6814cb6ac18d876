"""One HTTP/1.1 connection on trio, parsed by httptools (llhttp), as one reader and one
responder task.

Shaped after uvicorn's ``httptools_impl.py``: the parser's callbacks fill a small record
per request (``Request``); requests wait in a deque and are answered one at a time, in
order (pipelining); the connection ends when ``should_keep_alive()``, ``connection:
close``, an answer ≥ 400 or shutdown say so. On trio the two halves are tasks of one
nursery per connection, not a task per request:

- the **reader** receives, feeds the parser and queues requests as soon as their heads
  are in (the body follows into the record). It notices a client that leaves (EOF or
  reset) and cancels the request being answered, so its job is dropped at once. It pauses
  while too much is queued behind the request in progress (flow control) and stops at
  the first refusal: no second request is ever read out of a body it did not parse.
- the **responder** takes the next request: an inference route (``front.serves_inline``)
  is answered by ``inference.handle`` right here, with no ASGI scope, task or channel;
  any other goes to the Quart app as ASGI (``djl.http.asgi``). A sized answer is one
  write; a streamed one is chunked, each chunk written before the next is taken (the
  socket's back-pressure reaches the model's stream).

Timeouts: a connection must complete a request head within ``request_head_timeout`` of
opening or of its previous answer, or it is closed without an answer; the timer is the
reader's cancel scope, moved lazily (only when it fires, or when it sleeps without a
deadline). A declared body that pauses for ``request_body_timeout`` gets 408.

Refusals (each closes the connection after its JSON answer): what llhttp refuses (both
``Content-Length`` and ``Transfer-Encoding``, duplicate or malformed lengths, bad chunks,
obs-folds, whitespace before a colon, bare CR, NUL and other control bytes, unknown
versions) and what it lets through that we do not serve (a transfer-coding other than
``chunked``, HTTP/0.9 and 2.0 request lines): 400; a head over
``MAX_REQUEST_HEAD_BYTES``: 431; a ``Content-Length`` over ``max_request_size``: 413
before any of the body is read; a chunked body that grows past it: 413.
"""

from __future__ import annotations

import logging
from collections import deque
from contextlib import aclosing
from math import inf
from time import perf_counter
from typing import Any
from urllib.parse import unquote

import httptools
import trio
from trio.lowlevel import ParkingLot

from djl.config import MAX_REQUEST_HEAD_BYTES
from djl.errors import (
    BadRequest,
    DjlError,
    HeadTooLarge,
    PayloadTooLarge,
    RequestTimeout,
    StreamCut,
)
from djl.http import asgi, codec, front, inference
from djl.http.access_log import MODEL_KEY, write_line
from djl.http.answer import answer_head
from djl.http.wire import ClientGone, Request, Site

log = logging.getLogger("djl.http")

#: Bytes asked of the socket per receive (uvicorn and hypercorn read 64 KiB too).
RECV_SIZE = 64 * 1024
#: The reader pauses while requests queued behind the one in progress hold more body than
#: this, or number this many (flow control for pipelining clients).
PIPELINE_BYTES = 256 * 1024
PIPELINE_DEPTH = 16

_GONE = (trio.BrokenResourceError, trio.ClosedResourceError)
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"


class _StopReading(Exception):
    """Raised in a parser callback: stop feeding (httptools re-raises it from feed_data)."""


class Connection:
    """See the module docstring. ``run`` serves the stream until the connection ends."""

    def __init__(self, stream: trio.abc.Stream, site: Site, client: Any, server: Any) -> None:
        self.stream = stream
        self.site = site
        self.config = site.config
        self.client = client
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        #: Requests whose heads are in, oldest (the one being answered) first.
        self.queue: deque[Request] = deque()
        #: The request the parser is filling (head or body), None between messages.
        self.building: Request | None = None
        #: Bytes of ``building``'s head seen so far (for the 431 limit).
        self.head_bytes = 0
        self.head_done = False
        #: The responder waits here for a request, or for body bytes.
        self.responder_lot = ParkingLot()
        #: The reader waits here while paused (flow control).
        self.reader_lot = ParkingLot()
        self.queued_bytes = 0
        #: The reader has stopped: EOF, an error, a refusal or an upgrade.
        self.reader_done = False
        #: The peer is gone (EOF or a reset).
        self.eof = False
        #: The reader's timer: the head deadline while idle, none while a request runs.
        self.read_scope: trio.CancelScope | None = None
        self.idle_deadline = trio.current_time() + self.config.request_head_timeout_s
        #: Shutdown began: idle now means closed, busy means closed after the answer.
        self.closing = False
        #: Bytes may still be in flight from the client when it closes (linger first).
        self.unread = False

    # -- the reader -----------------------------------------------------------------------

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._respond, nursery.cancel_scope)
                await self._read_until_done()
                self.reader_done = True
                if self.responder_lot:
                    self.responder_lot.unpark_all()
        finally:
            with trio.CancelScope(shield=True):
                await self._close()

    async def _read_until_done(self) -> None:
        while True:
            deadline = self.idle_deadline if self._idle() else inf
            if self.closing and self._idle():
                return
            with trio.CancelScope(deadline=deadline) as scope:
                self.read_scope = scope
                await self._read()
                return
            self.read_scope = None
            if self._idle() and (self.closing or trio.current_time() >= self.idle_deadline):
                self.unread = False
                return  # no head within request_head_timeout: closed without an answer
            # Used since the timer was set, or a request is in progress: sleep on.

    def _idle(self) -> bool:
        return not self.queue

    async def _read(self) -> None:
        receive_some = self.stream.receive_some
        feed = self.parser.feed_data
        while True:
            try:
                data = await receive_some(RECV_SIZE)
            except _GONE:
                data = b""
            if not data:
                self._peer_left()
                return
            began = self.building
            try:
                feed(data)
            except httptools.HttpParserUpgrade:
                # Upgrade (websocket, h2c) and CONNECT are not served: the request as
                # parsed is answered, then the connection closes.
                if self.queue:
                    self.queue[-1].keep_alive = False
                return
            except httptools.HttpParserCallbackError as exc:
                if isinstance(exc.__context__, _StopReading):
                    return
                raise
            except httptools.HttpParserError as exc:
                self._malformed(exc)
                return
            building = self.building
            if building is not None and not self.head_done and self._head_too_long(
                    building, began, len(data)):
                self._refuse(HeadTooLarge.head(MAX_REQUEST_HEAD_BYTES))
                return
            while self.queued_bytes > PIPELINE_BYTES or len(self.queue) > PIPELINE_DEPTH:
                await self.reader_lot.park()

    def _head_too_long(self, building: Request, began: Request | None, fed: int) -> bool:
        """Whether an incomplete head is already over the limit. A feed that began the
        message counts what the callbacks reported (the part before it belonged to the
        previous message); every later feed is all head (httptools holds an unfinished
        header itself, so this bounds its memory too)."""
        if building is began:
            self.head_bytes += fed
        else:
            self.head_bytes = len(building.url) + sum(
                len(n) + len(v) + 4 for n, v in building.headers)
        return self.head_bytes > MAX_REQUEST_HEAD_BYTES

    def _peer_left(self) -> None:
        self.eof = True
        self.unread = False
        for request in self.queue:
            if request.answered:
                continue  # all written: what is left (the app's own end) runs out
            request.gone = True
            if request.scope is not None:
                request.scope.cancel()
        if self.responder_lot:
            self.responder_lot.unpark_all()

    def _malformed(self, exc: Exception) -> None:
        reason = str(exc) or type(exc).__name__
        building = self.building
        if building is not None and self.head_done:
            # The head was fine and is being answered; its body is not.
            building.error = BadRequest.malformed(reason)
            building.keep_alive = False
            self._wake()
        else:
            self._refuse(BadRequest.malformed(reason))

    def _refuse(self, error: DjlError) -> None:
        """Queue an answer that ends the connection (after those queued before it);
        nothing after it is read. Called before the head in progress, if any, is queued."""
        request = self.building or Request()
        request.refusal = error
        request.keep_alive = False
        self.queue.append(request)
        self.unread = True
        self._wake()

    def _wake(self) -> None:
        if self.responder_lot:
            self.responder_lot.unpark_all()

    # -- parser callbacks (httptools looks them up once) -----------------------------------

    def on_message_begin(self) -> None:
        self.building = Request()
        self.head_done = False
        self.head_bytes = 0

    def on_url(self, url: bytes) -> None:
        request = self.building
        assert request is not None
        request.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self.building
        assert request is not None
        request.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        request = self.building
        assert request is not None
        parser = self.parser
        size = len(request.url)
        for name, value in request.headers:
            size += len(name) + len(value) + 4
        if size > MAX_REQUEST_HEAD_BYTES:
            self._refuse(HeadTooLarge.head(MAX_REQUEST_HEAD_BYTES))
            raise _StopReading()
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            self._refuse(BadRequest.malformed(f"unsupported HTTP version {version}"))
            raise _StopReading()
        request.http_version = version
        request.method = parser.get_method().decode("ascii")
        request.keep_alive = parser.should_keep_alive()
        config = self.config
        id_header = self.site.id_header
        for name, value in request.headers:
            if name == b"content-length":
                if int(value) > config.max_request_size:
                    self._refuse(front.too_large(value.strip(), config))
                    raise _StopReading()
            elif name == b"content-type":
                request.content_type = value
            elif name == b"transfer-encoding":
                if value.strip().lower() != b"chunked":
                    self._refuse(BadRequest.malformed(
                        "only the chunked transfer-coding is accepted"))
                    raise _StopReading()
            elif name == b"expect":
                if value.strip().lower() == b"100-continue":
                    request.expect_continue = True
            elif name == id_header and request.req_id is None:
                request.req_id = value.decode("latin-1")
        self.head_done = True
        if self.queue:
            self.queued_bytes += size
        self.queue.append(request)
        self._wake()

    def on_body(self, body: bytes) -> None:
        request = self.building
        assert request is not None
        if request.error is not None:
            return
        request.size += len(body)
        request.body.append(body)
        queue = self.queue
        if queue and request is not queue[0]:
            self.queued_bytes += len(body)
        if request.size > self.config.max_request_size:
            # A chunked body has no length to refuse it by up front. The chunk that
            # crosses the limit is kept: Quart sees the excess and refuses it itself.
            request.error = PayloadTooLarge.request(self.config.max_request_size)
            request.keep_alive = False
            self.unread = True
            self._wake()
            raise _StopReading()
        self._wake()

    def on_message_complete(self) -> None:
        request = self.building
        assert request is not None
        request.complete = True
        self.building = None
        self._wake()

    # -- the responder --------------------------------------------------------------------

    async def _respond(self, connection_scope: trio.CancelScope) -> None:
        try:
            await self._answer_in_order()
        except ClientGone:
            log.debug("client left before its answer was written")
        finally:
            connection_scope.cancel()

    async def _answer_in_order(self) -> None:
        queue = self.queue
        lot = self.responder_lot
        head_timeout = self.config.request_head_timeout_s
        while True:
            while not queue:
                if self.reader_done or self.eof:
                    return
                await lot.park()
            request = queue[0]
            if request.refusal is not None:
                reply = codec.error_reply(request.refusal, request.req_id
                                          or codec.random_uuid4(), self.config)
                self.count(reply.status)
                head, _ = answer_head(reply.status, reply.headers, True)
                await self.write(head + reply.body)
                return
            if request.gone:
                return
            keep = await self._answer(request)
            queue.popleft()
            if not request.complete:
                self.unread = True  # the client may still be sending the rest
            if not keep or self.eof:
                return
            # What waits behind the next one (flow control).
            self.queued_bytes = sum(len(r.url) + r.size for r in list(queue)[1:])
            if self.reader_lot:
                self.reader_lot.unpark_all()
            if not queue:
                if self.closing:
                    return
                self.idle_deadline = trio.current_time() + head_timeout
                scope = self.read_scope
                if scope is not None and scope.deadline == inf:
                    scope.deadline = self.idle_deadline

    async def _answer(self, request: Request) -> bool:
        """Answer one request; whether the connection may serve another."""
        site = self.site
        start = perf_counter() if site.access_log else 0.0
        url = request.url
        if url[:1] == b"/":
            raw_path, _, query_string = url.partition(b"?")
            query_string = query_string.partition(b"#")[0]
        else:  # absolute-form or asterisk-form
            try:
                parsed = httptools.parse_url(url)
                raw_path, query_string = parsed.path or b"/", parsed.query or b""
            except httptools.HttpParserInvalidURLError:
                raw_path, query_string = url, b""
        req_id = request.req_id or codec.random_uuid4()
        request.req_id = req_id
        keep = False
        model = None
        with trio.CancelScope() as request.scope:
            if request.error is not None:  # the body is malformed or too large
                keep = await self._reply(request, codec.error_reply(request.error, req_id,
                                                                    self.config))
            elif front.serves_inline(raw_path, query_string, request.content_type, site.role):
                call = front.inference_call(
                    request.method, raw_path, query_string, request.headers, req_id,
                    self.config, site.manager, lambda: self._read_body(request), None)
                try:
                    reply = await inference.handle(call)
                except Exception as exc:  # noqa: BLE001 — routing errors: mapping A
                    reply = codec.error_reply(exc, req_id, self.config)
                model = call.model
                if request.error is not None:  # the route answered without the body
                    reply = codec.error_reply(request.error, req_id, self.config)
                keep = await self._reply(request, reply)
            else:
                exchange = asgi.Exchange(self, request, raw_path, query_string)
                await exchange.run()
                keep = exchange.keep
                model = exchange.scope.get(MODEL_KEY)
                if not exchange.started and request.error is not None and not request.gone:
                    # The app stopped at the malformed body (it saw the client leave).
                    keep = await self._reply(request, codec.error_reply(
                        request.error, req_id, self.config))
        if request.scope.cancelled_caught or request.gone:
            keep = False
        if site.access_log:
            write_line(req_id, request.method, unquote(raw_path.decode("latin-1")), model,
                       request.status, request.sent, start)
        return keep and request.complete and request.keep_alive and not self.closing

    async def _reply(self, request: Request, reply: codec.Reply) -> bool:
        """Write a Reply, counted; whether the connection may go on."""
        request.status = reply.status
        self.count(reply.status)
        keep = await self._send_reply(request, reply)
        request.answered = True
        return keep

    def count(self, status: int) -> None:
        count = self.site.count_response
        if count is not None:
            count(status)

    async def _read_body(self, request: Request) -> bytes:
        """The whole body of the request being answered (the inference routes)."""
        if not request.complete or request.error is not None:
            await self._await_body(request, self.config.request_body_timeout_s)
        body = request.body
        request.body = []
        return body[0] if len(body) == 1 else b"".join(body)

    async def _await_body(self, request: Request, timeout: float) -> None:
        await self.continue_if_expected(request)
        lot = self.responder_lot
        while not request.complete:
            if request.error is not None:
                raise request.error
            if request.gone or self.reader_done:
                # The client left (or the reader stopped): nothing to answer.
                request.gone = True
                assert request.scope is not None
                request.scope.cancel()
                await trio.lowlevel.checkpoint()
            size = request.size
            with trio.move_on_after(timeout) as waiting:
                await lot.park()
            if waiting.cancelled_caught and request.size == size and not request.complete:
                raise RequestTimeout.body(timeout)
        if request.error is not None:
            raise request.error

    async def next_body(self, request: Request) -> tuple[bytes, bool] | None:
        """For ASGI: the body bytes received since the last call, and whether more follow
        (waits for some); None when the client left. The pause limit is Quart's own."""
        while not request.body and not request.complete:
            if request.gone or self.reader_done or request.error is not None:
                return None
            await self.continue_if_expected(request)
            await self.responder_lot.park()
        body = request.body
        request.body = []
        data = body[0] if len(body) == 1 else b"".join(body)
        # A body cut short by an error is never handed on as complete: more follows,
        # then the next call reports the client gone.
        return data, not request.complete

    async def wait_gone(self, request: Request) -> None:
        """For ASGI: returns once the client has left."""
        while not (request.gone or self.eof):
            await self.responder_lot.park()

    async def continue_if_expected(self, request: Request) -> None:
        """``Expect: 100-continue``: the interim answer goes out when the body is first
        asked for, and only then (a refused request never gets it)."""
        if request.expect_continue and not request.continued and not request.size:
            request.continued = True
            await self.write(_CONTINUE)

    async def _send_reply(self, request: Request, reply: codec.Reply) -> bool:
        """Write a Reply (``request.sent`` counts its body bytes); whether the connection
        may go on."""
        chunks = reply.chunks
        http10 = request.http_version == "1.0"
        if chunks is None:
            close = (reply.status >= 400 or not request.keep_alive or not request.complete
                     or self.closing)
            head, close = answer_head(reply.status, reply.headers, close, http10)
            body = reply.body if request.method != "HEAD" else b""
            if len(body) <= _JOIN_LIMIT:
                await self.write(head + body)
            else:  # no copy of a large body for one write less
                await self.write(head)
                await self.write(body)
            request.sent = len(body)
            return not close
        # A stream: chunked (HTTP/1.0: the body ends when the connection does).
        head, close = answer_head(reply.status, reply.headers,
                                  http10 or not request.keep_alive or self.closing,
                                  chunked=not http10)
        await self.write(head)
        try:
            async with aclosing(chunks) as stream:  # type: ignore[type-var]
                async for chunk in stream:
                    if not chunk:
                        continue
                    request.sent += len(chunk)
                    if http10:
                        await self.write(chunk)
                    else:
                        await self.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        except StreamCut as exc:
            # Status and part of the body are out: the one honest end left is to close
            # the connection without the final chunk.
            log.warning("streamed response cut short: %s", exc.message)
            return False
        if not http10:
            await self.write(_LAST_CHUNK)
        return not close

    async def write(self, data: bytes | bytearray) -> None:
        try:
            await self.stream.send_all(data)
        except _GONE as exc:
            raise ClientGone() from exc

    async def _close(self) -> None:
        """Close the stream; after a refusal, linger a little so the client reads the
        answer before a reset (closing with unread data sends RST)."""
        stream = self.stream
        if self.unread and not self.eof and isinstance(stream, trio.SocketStream):
            try:
                await stream.send_eof()
                with trio.move_on_after(_LINGER_S):
                    while await stream.receive_some(RECV_SIZE):
                        pass
            except (*_GONE, OSError):
                pass
        await trio.aclose_forcefully(stream)

    def shut_down(self) -> None:
        """Shutdown: an idle connection closes now, a busy one after its answer."""
        self.closing = True
        if self._idle() and self.read_scope is not None:
            self.read_scope.cancel()


#: After a refusal, how long the body a client still sends is read and dropped.
_LINGER_S = 2.0
#: A head and body at most this long go out in one write.
_JOIN_LIMIT = 64 * 1024


__all__ = ["Connection"]
