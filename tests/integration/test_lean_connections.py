"""Connections through the real server, over raw sockets, on both HTTP servers (djl's own
and hypercorn's with djl.http.connection.LeanTCPServer): each sized answer arrives in one
write, the keep-alive timer closes idle connections and only those, shutdown closes idle
ones at once; LeanTCPServer is installed only by djl-serving, only while it serves; and
hypercorn still has the shape the class was written against (these tests fail loudly when
an upgrade changes it)."""

from __future__ import annotations

import inspect
import time
from email.utils import parsedate_to_datetime
from wsgiref.handlers import format_date_time

import h11
import pytest
import trio
from hypercorn.config import Config
from hypercorn.events import RawData, Updated
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio import run as hypercorn_run
from hypercorn.trio.tcp_server import TCPServer
from serving import register, running_server

from djl.app import create_app
from djl.config import (
    HYPERCORN_GRACEFUL_TIMEOUT_S,
    SERVER_GRACEFUL_TIMEOUT_S,
    load_server_config,
)
from djl.http import connection


def _port(server) -> int:
    return int(server.url.rsplit(":", 1)[1].rstrip("/"))


async def _connect(server) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", _port(server))


def _request(method: bytes, path: bytes, body: bytes = b"", extra: bytes = b"") -> bytes:
    return (method + b" " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
            + b"Content-Length: " + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body)


def _complete(data: bytes) -> tuple[h11.Response, bytes] | None:
    """The response in ``data`` when it is complete (head and whole body), else None."""
    if not data:
        return None  # (h11 reads b"" as the end of the connection)
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    response, body = None, b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            return None
        if isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert response is not None
            return response, body


def test_hypercorn_has_the_shape_lean_connections_were_written_against():
    """What LeanTCPServer relies on. A failure here means hypercorn changed: re-measure
    (bench/echo.py djl vs djl-stock) and adapt djl/http/connection.py, or drop it."""
    assert connection._hypercorn_version() == connection.MEASURED_ON
    # worker_serve looks the connection class up by this module-level name.
    assert "TCPServer" in hypercorn_run.worker_serve.__code__.co_names
    # run() arms the idle timer, then reads; the timer object is an attribute.
    run_source = inspect.getsource(TCPServer.run)
    assert "self.idle_task.restart(" in run_source
    assert "await self._read_data()" in run_source
    assert "await self._close()" in run_source
    stock = TCPServer(None, None, None, None, None)  # type: ignore[arg-type]
    assert hasattr(stock, "idle_task") and isinstance(stock.send_lock, trio.Lock)
    for name in ("protocol_send", "_read_data", "_close", "_initiate_server_close"):
        assert inspect.iscoroutinefunction(getattr(TCPServer, name)), name
    # The protocol says "busy" when a request's head is in, "idle" after its answer, and
    # writes a response's head, body and end as separate RawData.
    assert "Updated" in H11Protocol._handle_events.__code__.co_names
    assert "Updated" in H11Protocol._maybe_recycle.__code__.co_names
    assert "RawData" in H11Protocol._send_h11_event.__code__.co_names
    assert RawData(data=b"x").data == b"x" and Updated(idle=True).idle is True
    # LeanConfig overrides this method; hypercorn calls it per answer and copies its list.
    assert list(inspect.signature(Config.response_headers).parameters) == ["self", "protocol"]
    assert "response_headers" in inspect.getsource(H11Protocol.stream_send)


async def test_only_djl_serving_installs_the_lean_connection_while_it_serves(tmp_path):
    """``create_app`` changes nothing process-wide; ``djl-serving`` under
    ``http_server=hypercorn`` installs LeanTCPServer (or, with ``lean_connections=false``,
    hypercorn's own) for as long as it serves, and puts hypercorn's back on return."""
    env = {"DJL_CACHE_DIR": str(tmp_path), "MODEL_SERVER_HOME": str(tmp_path)}
    create_app(load_server_config(env=env))
    assert hypercorn_run.TCPServer is TCPServer
    for lean, serving_with in (("true", connection.LeanTCPServer), ("false", TCPServer)):
        async with running_server(tmp_path, http_server="hypercorn", lean_connections=lean):
            assert hypercorn_run.TCPServer is serving_with
        assert hypercorn_run.TCPServer is TCPServer
    async with running_server(tmp_path, http_server="djl"):
        assert hypercorn_run.TCPServer is TCPServer


@pytest.mark.both_servers
async def test_every_sized_answer_of_a_keep_alive_connection_is_one_write(tmp_path):
    """One receive gets the whole answer, head and body (hypercorn writes them apart; the
    client, in this very trio loop, would wake between the two)."""
    async with running_server(tmp_path) as server:
        await register(server, "echo")
        stream = await _connect(server)
        for i in range(40):
            body = f"hello {i}".encode() * (i + 1)
            request = (_request(b"GET", b"/ping") if i % 4 == 0
                       else _request(b"POST", b"/predictions/echo", body))
            await stream.send_all(request)
            first = await stream.receive_some(65536)
            answer = _complete(first)
            assert answer is not None, (i, first)
            response, got = answer
            assert response.status_code == 200
            if i % 4:
                assert got == body
        # Quart's routes (management) too, and an error answer.
        await stream.send_all(_request(b"GET", b"/models"))
        answer = _complete(await stream.receive_some(65536))
        assert answer is not None and answer[0].status_code == 200
        await stream.send_all(_request(b"POST", b"/predictions/nope", b"x"))
        answer = _complete(await stream.receive_some(65536))
        assert answer is not None and answer[0].status_code == 404
        await stream.aclose()


@pytest.mark.both_servers
async def test_a_large_answer_arrives_whole(tmp_path):
    """Past the join limit the head and body are two writes, in order, under one lock."""
    async with running_server(tmp_path) as server:
        await register(server, "echo")
        stream = await _connect(server)
        body = bytes(range(256)) * 1024  # 256 KiB
        await stream.send_all(_request(b"POST", b"/predictions/echo", body))
        data = b""
        with trio.fail_after(10):
            while (answer := _complete(data)) is None:
                data += await stream.receive_some(65536)
        assert answer[0].status_code == 200 and answer[1] == body
        await stream.aclose()


@pytest.mark.both_servers
async def test_expect_100_continue_is_answered_before_the_body_is_sent(tmp_path):
    async with running_server(tmp_path) as server:
        await register(server, "echo")
        stream = await _connect(server)
        head = _request(b"POST", b"/predictions/echo", b"", b"Expect: 100-continue\r\n")
        head = head.replace(b"Content-Length: 0", b"Content-Length: 5")
        await stream.send_all(head)
        with trio.fail_after(5):
            interim = await stream.receive_some(65536)
        assert interim.startswith(b"HTTP/1.1 100 "), interim
        await stream.send_all(b"hello")
        data = b""
        with trio.fail_after(10):
            while (answer := _complete(data)) is None:
                data += await stream.receive_some(65536)
        assert answer[0].status_code == 200 and answer[1] == b"hello"
        await stream.aclose()


async def _closed_after(stream: trio.SocketStream, limit_s: float) -> float | None:
    """Seconds until the server closes ``stream`` (None: still open after ``limit_s``)."""
    start = time.monotonic()
    with trio.move_on_after(limit_s):
        try:
            while await stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass
        return time.monotonic() - start
    return None


@pytest.mark.both_servers
async def test_the_keep_alive_timer_closes_idle_connections_only(tmp_path):
    """request_head_timeout T: a connection used every T/4 for 1.25 T stays open (the
    timer re-arms after each answer), a request busy for 1.25 T is not cut, and an idle
    connection closes T after its last answer (not before; the upper margin is for a
    loaded machine)."""
    timeout_s = 2.0
    async with running_server(tmp_path, request_head_timeout=f"{timeout_s:g}") as server:
        await register(server, "echo")
        await register(server, "behave")
        stream = await _connect(server)
        for _ in range(5):
            await stream.send_all(_request(b"GET", b"/ping"))
            assert _complete(await stream.receive_some(65536)) is not None
            await trio.sleep(timeout_s / 4)
        busy = f"/predictions/behave?action=sleep&seconds={1.25 * timeout_s:g}".encode()
        await stream.send_all(_request(b"POST", busy, b"x"))
        data = b""
        with trio.fail_after(10 * timeout_s):
            while (answer := _complete(data)) is None:
                chunk = await stream.receive_some(65536)
                assert chunk, "closed while a request was in progress"
                data += chunk
        assert answer[0].status_code == 200
        closed = await _closed_after(stream, 4 * timeout_s)
        assert closed is not None and timeout_s - 0.1 < closed < 1.5 * timeout_s + 0.5, closed
        await stream.aclose()


@pytest.mark.both_servers
async def test_shutdown_closes_an_idle_keep_alive_connection_at_once(tmp_path):
    """A stop waits up to the graceful timeout for busy connections, and the keep-alive
    timer is 30 s: an idle connection must be closed when the stop begins, not when
    either runs out. A reader kept on the connection through the stop times its end."""
    graceful_s = max(SERVER_GRACEFUL_TIMEOUT_S, HYPERCORN_GRACEFUL_TIMEOUT_S)
    closed_at: list[float] = []

    async def read_until_closed(stream: trio.SocketStream) -> None:
        with trio.fail_after(2 * graceful_s):
            try:
                while await stream.receive_some(65536):
                    pass
            except trio.BrokenResourceError:
                pass
        closed_at.append(time.monotonic())

    async with trio.open_nursery() as nursery:
        async with running_server(tmp_path, request_head_timeout="30") as server:
            await register(server, "echo")
            stream = await _connect(server)
            await stream.send_all(_request(b"GET", b"/ping"))
            assert _complete(await stream.receive_some(65536)) is not None
            nursery.start_soon(read_until_closed, stream)
            await trio.sleep(0)
            start = time.monotonic()
        stopped_s = time.monotonic() - start
    assert closed_at, "the connection was never closed"
    closed_s = closed_at[0] - start
    # Waiting out the graceful timeout would close it at graceful_s (13 s).
    assert closed_s < graceful_s / 2, (closed_s, graceful_s)
    assert stopped_s < graceful_s, (stopped_s, graceful_s)
    await stream.aclose()


def test_answer_headers_are_built_once_a_second(monkeypatch):
    """LeanConfig: hypercorn's date and server headers, the same list within a second, a
    fresh date when the second turns."""
    now = [1_800_000_000.25]
    monkeypatch.setattr(connection, "time", lambda: now[0])
    config = connection.LeanConfig()
    first = config.response_headers("h11")
    assert first == [(b"date", format_date_time(now[0]).encode()),
                     (b"server", b"hypercorn-h11")]
    now[0] += 0.7
    assert config.response_headers("h11") is first
    assert dict(config.response_headers("h2"))[b"server"] == b"hypercorn-h2"
    now[0] += 0.1  # 1_800_000_001.05: the next second
    turned = config.response_headers("h11")
    assert dict(turned)[b"date"] == format_date_time(now[0]).encode() != dict(first)[b"date"]


@pytest.mark.both_servers
async def test_answers_carry_the_current_date(tmp_path, http_server):
    async with running_server(tmp_path) as server:
        await register(server, "echo")
        stream = await _connect(server)
        for _ in range(3):
            before = time.time()
            await stream.send_all(_request(b"POST", b"/predictions/echo", b"hi"))
            answer = _complete(await stream.receive_some(65536))
            assert answer is not None and answer[0].status_code == 200
            headers = dict(answer[0].headers)
            sent = parsedate_to_datetime(headers[b"date"].decode()).timestamp()
            assert int(before) <= sent <= time.time(), (before, headers[b"date"])
            if http_server == "hypercorn":
                assert headers[b"server"] == b"hypercorn-h11"
            await trio.sleep(0.6)
        await stream.aclose()
