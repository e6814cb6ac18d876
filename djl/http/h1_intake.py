"""The reading half of an HTTP/1.1 connection (``djl.http.h1``): bytes from the socket fed
to httptools (llhttp), whose callbacks fill one ``Request`` per message and queue it as
soon as its head is in (the body follows into the record).

What llhttp refuses (both ``Content-Length`` and ``Transfer-Encoding``, duplicate or
malformed lengths, bad chunks, obs-folds, whitespace before a colon, bare CR, NUL and other
control bytes, unknown versions) and what it lets through that we do not serve (a
transfer-coding other than ``chunked``, HTTP/0.9 and 2.0 request lines) is queued as a
400 refusal; a head over ``MAX_REQUEST_HEAD_BYTES`` as 431; a ``Content-Length`` over
``max_request_size`` as 413 before any of the body is read; a chunked body that grows past
it marks its request 413. Reading stops at the first refusal: no second request is ever
read out of a body it did not parse.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import httptools
import trio
from trio.lowlevel import ParkingLot

from djl import _batch
from djl.config import MAX_REQUEST_HEAD_BYTES, ServerConfig
from djl.errors import BadRequest, DjlError, HeadTooLarge, PayloadTooLarge
from djl.http import front
from djl.http.wire import Request, Site
from djl.sockio import FastStream

#: Bytes asked of the socket per receive (uvicorn and hypercorn read 64 KiB too).
RECV_SIZE = 64 * 1024
#: The reader pauses while requests queued behind the one in progress hold more body than
#: this, or number this many (flow control for pipelining clients).
PIPELINE_BYTES = 256 * 1024
PIPELINE_DEPTH = 16

_GONE = (trio.BrokenResourceError, trio.ClosedResourceError)


HeadScan = tuple[int, bytes | None, bytes | None, bytes | None, bool, str | None]


def scan_head_py(headers: list[tuple[bytes, bytes]], id_header: bytes) -> HeadScan:
    """(head bytes, content-length, content-type, a transfer-coding other than chunked,
    expect 100-continue, request id) of a head's (lower-case name, value) pairs: the last
    length (llhttp has refused differing ones) and media type, the first coding that is
    not ``chunked`` (None: all are, or none is named), the first request id."""
    size = 0
    length = media = coding = req_id = None
    expect = False
    for name, value in headers:
        size += len(name) + len(value) + 4
        if name == b"content-length":
            length = value
        elif name == b"content-type":
            media = value
        elif name == b"transfer-encoding":
            if coding is None and value.strip().lower() != b"chunked":
                coding = value
        elif name == b"expect":
            if value.strip().lower() == b"100-continue":
                expect = True
        elif name == id_header and req_id is None:
            req_id = value.decode("latin-1")
    return size, length, media, coding, expect, req_id


#: ``scan_head_py`` in C (djl/_head.pxi): the same results; bench/head_json.py is the A/B.
scan_head_c: Callable[[list[tuple[bytes, bytes]], bytes], HeadScan] = _batch.scan_head_c
scan_head = scan_head_c


class _StopReading(Exception):
    """Raised in a parser callback: stop feeding (httptools re-raises it from feed_data)."""


class Intake:
    """The parser, its callbacks and the queue they fill; ``Connection`` builds on it."""

    def __init__(self, stream: trio.abc.Stream, site: Site) -> None:
        self.stream = stream
        #: The stream's reads and writes, past trio's scheduler when they need no wait.
        self.io = FastStream(stream)
        self.site = site
        self.config: ServerConfig = site.config
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
        #: The peer is gone (EOF or a reset).
        self.eof = False
        #: Bytes may still be in flight from the client when it closes (linger first).
        self.unread = False

    async def _read(self) -> None:
        receive_some = self.io.receive_some
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
        size, length, media, coding, expect, req_id = scan_head(request.headers,
                                                                self.site.id_header)
        size += len(request.url)
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
        if length is not None and int(length) > self.config.max_request_size:
            self._refuse(front.too_large(length.strip(), self.config))
            raise _StopReading()
        if coding is not None:
            self._refuse(BadRequest.malformed("only the chunked transfer-coding is accepted"))
            raise _StopReading()
        request.content_type = media
        request.expect_continue = expect
        request.req_id = req_id
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


__all__ = ["PIPELINE_BYTES", "PIPELINE_DEPTH", "RECV_SIZE", "Intake"]
