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

The reading half (parser callbacks, refusals, flow control) is ``djl.http.h1_intake``;
writing an answer is ``djl.http.h1_write``. Each refusal closes the connection after its
JSON answer.
"""

from __future__ import annotations

import logging
from math import inf
from time import perf_counter
from typing import Any
from urllib.parse import unquote

import httptools
import trio

from djl.errors import RequestTimeout
from djl.http import asgi, codec, front, inference
from djl.http.access_log import MODEL_KEY, write_line
from djl.http.answer import answer_head
from djl.http.h1_intake import RECV_SIZE, Intake
from djl.http.h1_write import CONTINUE, send_reply
from djl.http.wire import ClientGone, Request, Site

log = logging.getLogger("djl.http")

_GONE = (trio.BrokenResourceError, trio.ClosedResourceError)


class Connection(Intake):
    """See the module docstring. ``run`` serves the stream until the connection ends."""

    def __init__(self, stream: trio.abc.Stream, site: Site, client: Any, server: Any) -> None:
        super().__init__(stream, site)
        self.client = client
        self.server = server
        #: The reader has stopped: EOF, an error, a refusal or an upgrade.
        self.reader_done = False
        #: The reader's timer: the head deadline while idle, none while a request runs.
        self.read_scope: trio.CancelScope | None = None
        self.idle_deadline = trio.current_time() + self.config.request_head_timeout_s
        #: Shutdown began: idle now means closed, busy means closed after the answer.
        self.closing = False
        #: The responder's scope: each request's ``scope`` while it is answered.
        self.answer_scope = trio.CancelScope()

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

    # -- the responder --------------------------------------------------------------------

    async def _respond(self, connection_scope: trio.CancelScope) -> None:
        try:
            # One scope for every request the connection answers, not one each: a request
            # is cancelled only when its client is gone, and then so is the connection.
            with self.answer_scope:
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
        request.scope = self.answer_scope
        try:
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
        finally:  # also when cancelled: the client left
            if site.access_log:
                write_line(req_id, request.method, unquote(raw_path.decode("latin-1")),
                           model, request.status, request.sent, start)
        if request.gone:
            keep = False
        return keep and request.complete and request.keep_alive and not self.closing

    async def _reply(self, request: Request, reply: codec.Reply) -> bool:
        """Write a Reply, counted; whether the connection may go on."""
        request.status = reply.status
        self.count(reply.status)
        keep = await send_reply(self.write, request, reply, self.closing)
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
            await self.write(CONTINUE)

    async def write(self, data: bytes | bytearray) -> None:
        try:
            await self.io.send_all(data)
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


__all__ = ["Connection"]
