"""Hostile clients against the real server, over raw sockets (issue 8, defects 4 and 5):
a refused request ends quietly and closes its connection; connections that stop sending
a head or a declared body are closed after the configured time."""

from __future__ import annotations

import logging
import time

import pytest
import trio
from serving import register, running_server

pytestmark = pytest.mark.both_servers

HUGE = b"99999999999"


def _port(server) -> int:
    return int(server.url.rsplit(":", 1)[1].rstrip("/"))


async def _connect(server) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", _port(server))


async def _read_until_closed(stream: trio.SocketStream, limit_s: float) -> tuple[bytes, bool]:
    """Everything the server sends within ``limit_s``, and whether it then closed."""
    data = b""
    with trio.move_on_after(limit_s):
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:  # reset by the server: closed too
                return data, True
            if not chunk:
                return data, True
            data += chunk
    return data, False


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("path", [b"/predictions/echo", b"/models"])
async def test_an_over_long_content_length_is_refused_quietly_and_closed(
        tmp_path, caplog, path):
    """Spec §1.5's 413, the connection closed after it (spec §1.3), and no traceback: also
    when the client hangs up as soon as it has read the status line, as curl does."""
    caplog.set_level(logging.INFO)
    head = b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Length: " + HUGE + b"\r\n\r\n"
    async with running_server(tmp_path) as server:
        stream = await _connect(server)
        await stream.send_all(head)
        data, closed = await _read_until_closed(stream, 5)
        await stream.aclose()
        assert data.startswith(b"HTTP/1.1 413"), data
        assert b'"type": "PayloadTooLargeException"' in data
        assert closed, "the server kept the connection of a refused request open"
        for _ in range(30):  # the client that leaves at once: a race, so try it often
            stream = await _connect(server)
            await stream.send_all(head)
            first = await stream.receive_some(65536)
            await stream.aclose()
            assert first.startswith(b"HTTP/1.1 413"), first
        await trio.sleep(0.5)
    assert not _errors(caplog), _errors(caplog)


async def test_a_connection_that_never_completes_its_head_is_closed(tmp_path):
    """A partial head, or one trickled a byte at a time, is closed after
    request_head_timeout; a complete request on another connection is unaffected."""
    async with running_server(tmp_path, request_head_timeout="1") as server:
        partial = await _connect(server)
        await partial.send_all(b"POST /predictions/echo HTTP/1.1\r\nHost: x\r\n")
        trickle = await _connect(server)
        start = time.monotonic()

        async def trickle_bytes() -> None:
            for byte in b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100:
                try:
                    await trickle.send_all(bytes([byte]))
                except trio.BrokenResourceError:
                    return
                await trio.sleep(0.1)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trickle_bytes)
            data, closed = await _read_until_closed(partial, 10)
            partial_s = time.monotonic() - start
            trickled, trickle_closed = await _read_until_closed(trickle, 10)
            trickle_s = time.monotonic() - start
            nursery.cancel_scope.cancel()
        assert closed and data == b"", data
        assert trickle_closed and trickled == b"", trickled
        assert 0.8 < partial_s < 5 and trickle_s < 5, (partial_s, trickle_s)
        r = await server.client.get("/ping")
        assert r.status_code == 200


async def test_a_connection_that_stops_sending_its_body_gets_408_and_is_closed(tmp_path):
    """A declared body that stops midway: 408 in the spec's error form, then the
    connection is closed, whichever layer reads the body."""
    async with running_server(tmp_path, request_body_timeout="1") as server:
        await register(server, "echo")
        # A text body is read by the ASGI front, a form by Quart.
        for media_type in (b"text/plain", b"application/x-www-form-urlencoded"):
            stream = await _connect(server)
            await stream.send_all(b"POST /predictions/echo HTTP/1.1\r\nHost: x\r\n"
                                  b"Content-Type: " + media_type +
                                  b"\r\nContent-Length: 100\r\n\r\na=b")
            start = time.monotonic()
            data, closed = await _read_until_closed(stream, 10)
            waited = time.monotonic() - start
            await stream.aclose()
            assert data.startswith(b"HTTP/1.1 408"), data
            assert b'"type": "RequestTimeoutException"' in data, data
            assert b"request_body_timeout (1s)" in data, data
            assert closed, f"{media_type!r}: the connection stayed open after its 408"
            assert 0.8 < waited < 5, waited
        r = await server.client.post("/predictions/echo", content=b"still here",
                                     headers={"content-type": "text/plain"})
        assert r.status_code == 200 and r.content == b"still here"
