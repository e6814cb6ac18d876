"""djl.http.h1 (djl's own HTTP/1.1 server), byte for byte: requests it must refuse, over
raw sockets to the real server, and a hypothesis fuzz of request bytes against one
connection (never a 5xx, a hang, a crash or a task left behind; a fresh connection is
served normally afterwards)."""

from __future__ import annotations

import re
import shutil
import ssl
import subprocess

import httpx
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from serving import model_url, register, running_server

from djl.app import ServerParts, create_app
from djl.config import MAX_REQUEST_HEAD_BYTES, load_server_config
from djl.http.h1 import Connection
from djl.http.server import Site

_STATUS = re.compile(rb"HTTP/1\.1 (\d{3}) ")
TEXT = {"content-type": "text/plain"}


def _port(server) -> int:
    return int(server.url.rsplit(":", 1)[1].rstrip("/"))


async def _exchange(port: int, data: bytes, limit_s: float = 10) -> tuple[bytes, bool]:
    """Send ``data``; everything the server sends within ``limit_s``, and whether it then
    closed the connection."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    received = b""
    closed = False
    try:
        await stream.send_all(data)
        with trio.move_on_after(limit_s):
            while True:
                try:
                    chunk = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    closed = True
                    break
                if not chunk:
                    closed = True
                    break
                received += chunk
    finally:
        await stream.aclose()
    return received, closed


#: A request the server would answer 200, sent after each refused one on the same
#: connection: it must never be read (out of the refused one's body, or after it).
_SMUGGLED = b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"
_HEAD = b"POST /predictions/echo HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"

#: name → (request bytes, expected status)
REFUSED: dict[str, tuple[bytes, int]] = {
    "content-length and transfer-encoding": (
        _HEAD + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n" + _SMUGGLED, 400),
    "transfer-encoding then content-length": (
        _HEAD + b"Transfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n"
        + _SMUGGLED, 400),
    "two different content-lengths": (
        _HEAD + b"Content-Length: 2\r\nContent-Length: 40\r\n\r\nhi" + _SMUGGLED, 400),
    "a signed content-length": (_HEAD + b"Content-Length: +2\r\n\r\nhi", 400),
    "a negative content-length": (_HEAD + b"Content-Length: -2\r\n\r\nhi", 400),
    "a non-numeric content-length": (_HEAD + b"Content-Length: 2x\r\n\r\nhi", 400),
    "a content-length list": (_HEAD + b"Content-Length: 2, 2\r\n\r\nhi", 400),
    "an unknown transfer-coding": (
        _HEAD + b"Transfer-Encoding: gzip\r\n\r\n" + _SMUGGLED, 400),
    "chunked not the final coding": (
        _HEAD + b"Transfer-Encoding: chunked, gzip\r\n\r\n2\r\nhi\r\n0\r\n\r\n", 400),
    "a coding before chunked": (
        _HEAD + b"Transfer-Encoding: gzip, chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
        + _SMUGGLED, 400),
    "a chunk size that is not hex": (
        _HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhi\r\n0\r\n\r\n" + _SMUGGLED, 400),
    "a chunk longer than its size": (
        _HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n" + _SMUGGLED,
        400),
    "a chunk size overflowing": (
        _HEAD + b"Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\nhi\r\n0\r\n\r\n",
        400),
    "an obs-folded header": (
        b"GET /ping HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n" + _SMUGGLED, 400),
    "whitespace before the colon": (
        b"GET /ping HTTP/1.1\r\nHost: x\r\nX-A : a\r\n\r\n" + _SMUGGLED, 400),
    "a bare CR": (b"GET /ping HTTP/1.1\r\nHost: x\rX-A: a\r\n\r\n" + _SMUGGLED, 400),
    "a NUL in a header": (b"GET /ping HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400),
    "a NUL in the target": (b"GET /pi\x00ng HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "HTTP/1.2": (b"GET /ping HTTP/1.2\r\nHost: x\r\n\r\n" + _SMUGGLED, 400),
    "HTTP/2.0 in an HTTP/1 request line": (b"GET /ping HTTP/2.0\r\nHost: x\r\n\r\n", 400),
    "HTTP/0.9": (b"GET /ping HTTP/0.9\r\n\r\n", 400),
    "an unknown method": (b"BREW /ping HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "a head over the limit": (
        b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * MAX_REQUEST_HEAD_BYTES
        + b"\r\n\r\n" + _SMUGGLED, 431),
    "a target over the limit": (
        b"GET /" + b"a" * MAX_REQUEST_HEAD_BYTES + b" HTTP/1.1\r\nHost: x\r\n\r\n", 431),
    "a chunked body over max_request_size": (
        _HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + b"400\r\n" + b"a" * 1024 + b"\r\n"
        + b"400\r\n" + b"a" * 1024 + b"\r\n0\r\n\r\n" + _SMUGGLED, 413),
}


async def test_malformed_requests_get_one_4xx_and_the_connection_closes(tmp_path):
    """Each refusal is one JSON answer with the exact status, ``connection: close``, and
    then the server closes; the request after it is never answered."""
    async with running_server(tmp_path, http_server="djl", max_request_size="1500") as server:
        await register(server, "echo")
        port = _port(server)
        wrong = {}
        for name, (data, status) in REFUSED.items():
            received, closed = await _exchange(port, data)
            statuses = [int(s) for s in _STATUS.findall(received)]
            head, _, body = received.partition(b"\r\n\r\n")
            if (statuses != [status] or not closed
                    or b"\r\nconnection: close\r\n" not in head + b"\r\n"
                    or f'"code": {status}'.encode() not in body):
                wrong[name] = (statuses, closed, received[:300])
        assert not wrong, "\n".join(f"{k}: {v}" for k, v in wrong.items())
        # The server is fine afterwards, and a well-formed chunked body is served.
        received, _ = await _exchange(
            port, _HEAD + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            b"2\r\nhi\r\n3;ext=1\r\n yo\r\n0\r\n\r\n")
        assert received.startswith(b"HTTP/1.1 200 ") and received.endswith(b"hi yo"), received


async def test_pipelined_requests_are_answered_in_order_over_one_connection(tmp_path):
    """Pipelined requests (a chunked one among them, an HTTP/1.0 keep-alive one last) get
    their answers in the order sent; ``connection: close`` ends the connection."""
    async with running_server(tmp_path, http_server="djl") as server:
        await register(server, "echo")
        requests = b""
        for i in range(6):
            body = f"body {i}".encode()
            requests += (_HEAD + b"Content-Length: " + str(len(body)).encode()
                         + b"\r\n\r\n" + body)
        requests += (_HEAD + b"Transfer-Encoding: chunked\r\n\r\n7\r\nchunked\r\n0\r\n\r\n")
        requests += b"GET /models HTTP/1.1\r\nHost: x\r\n\r\n"
        requests += (b"POST /predictions/echo HTTP/1.0\r\nConnection: keep-alive\r\n"
                     b"Content-Type: text/plain\r\nContent-Length: 4\r\n\r\nlast")
        requests += b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        received, closed = await _exchange(_port(server), requests)
        assert closed
        bodies = re.findall(rb"\r\n\r\n(body \d|chunked|last)", received)
        assert bodies == [b"body 0", b"body 1", b"body 2", b"body 3", b"body 4", b"body 5",
                          b"chunked", b"last"], received
        assert _STATUS.findall(received) == [b"200"] * 10
        assert received.index(b'"models"') < received.index(b"last")  # in order
        assert b"connection: keep-alive" in received  # to the HTTP/1.0 client


async def test_an_http_1_0_request_without_keep_alive_is_closed_after_its_answer(tmp_path):
    async with running_server(tmp_path, http_server="djl") as server:
        received, closed = await _exchange(
            _port(server), b"GET /ping HTTP/1.0\r\n\r\n" + _SMUGGLED)
        assert closed and _STATUS.findall(received) == [b"200"], received


# -- fuzz --------------------------------------------------------------------------------

_PIECES = [
    b"GET ", b"POST ", b"PUT ", b"OPTIONS ", b"HEAD ", b"/ping", b"/predictions/echo",
    b"/models", b"/invocations", b"/models/echo/invoke", b"?a=b", b"%zz", b" HTTP/1.1\r\n",
    b" HTTP/1.0\r\n", b" HTTP/2.0\r\n", b"Host: x\r\n", b"Content-Length: 5\r\n",
    b"Content-Length: 99999999999999\r\n", b"Transfer-Encoding: chunked\r\n",
    b"Content-Type: application/x-www-form-urlencoded\r\n", b"Content-Type: text/plain\r\n",
    b"Expect: 100-continue\r\n", b"Connection: close\r\n", b"Connection: keep-alive\r\n",
    b"Upgrade: websocket\r\nConnection: Upgrade\r\n", b"\r\n", b"5\r\nhello\r\n",
    b"0\r\n\r\n", b"hello", b"a=b&c", b"\x00", b"\r", b"\n", b" ", b":", b"\t", b"\xff",
]
_FUZZ = st.lists(st.one_of(st.sampled_from(_PIECES), st.binary(max_size=16)), max_size=24)


def _tasks() -> int:
    count = 0
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


async def _one_connection(site: Site, data: bytes) -> bytes:
    """Serve one in-memory connection that receives ``data`` and then EOF once the server
    has gone quiet; what the server sent. Fails on a hang (the mock clock makes the
    server's timeouts instant, so 60 s of it is a hang)."""
    client, server = trio.testing.memory_stream_pair()
    received = b""
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(Connection(server, site, ("127.0.0.1", 1), None).run)
            await client.send_all(data)
            while True:
                try:
                    chunk = await client.receive_some(65536)
                except trio.BrokenResourceError:
                    break
                if not chunk:
                    break
                received += chunk
            await client.aclose()
    return received


def _site(tmp_path) -> Site:
    config = load_server_config(env={"DJL_CACHE_DIR": str(tmp_path / "cache"),
                                     "MODEL_SERVER_HOME": str(tmp_path)},
                                overrides={"request_head_timeout": "2",
                                           "request_body_timeout": "2",
                                           "max_request_size": "4096"})
    parts = ServerParts(config)
    app = create_app(config, parts)
    return Site(config, parts.manager, "both", app.asgi_app.quart_asgi, "http")


@settings(max_examples=150, deadline=None)
@given(pieces=_FUZZ)
def test_fuzzed_request_bytes_never_get_a_5xx_a_hang_or_a_leftover_task(tmp_path_factory,
                                                                         pieces):
    site = _site(tmp_path_factory.mktemp("fuzz"))
    data = b"".join(pieces)

    async def main() -> None:
        before = _tasks()
        received = await _one_connection(site, data)
        statuses = [int(s) for s in _STATUS.findall(received)]
        assert all(s < 500 for s in statuses), (data, received)
        assert _tasks() == before, "a task outlived its connection"
        after = await _one_connection(site, b"GET /ping HTTP/1.1\r\nHost: x\r\n"
                                            b"Connection: close\r\n\r\n")
        assert _STATUS.findall(after) == [b"200"], after

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def _self_signed(folder) -> tuple[str, str]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return str(cert), str(key)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_https_listeners_serve_their_own_api_and_survive_a_plain_client(tmp_path):
    """Two ``https://`` listeners (management, inference) with certificate_file and
    private_key_file: each API answers over TLS on its own listener only; a client
    speaking plain HTTP to a TLS port is dropped without an answer or harm."""
    cert, key = _self_signed(tmp_path)
    async with running_server(tmp_path, http_server="djl",
                              inference_address="https://127.0.0.1:0",
                              management_address="https://127.0.0.2:0",
                              certificate_file=cert, private_key_file=key) as server:
        management_url, inference_url = server.binds
        assert management_url.startswith("https://127.0.0.2:")
        assert inference_url.startswith("https://127.0.0.1:")
        tls = ssl.create_default_context(cafile=cert)
        tls.check_hostname = False  # the certificate names 127.0.0.1 only
        async with httpx.AsyncClient(base_url=management_url, verify=tls) as m, \
                httpx.AsyncClient(base_url=inference_url, verify=tls) as i:
            r = await m.post("/models", params={"url": model_url("echo")})
            assert r.status_code == 200, r.text
            assert (await m.post("/predictions/echo", content=b"x")).status_code == 404
            assert (await i.get("/models")).status_code == 404
            r = await i.post("/predictions/echo", content=b"over tls", headers=TEXT)
            assert r.status_code == 200 and r.text == "over tls"
            port = int(inference_url.rsplit(":", 1)[1])
            received, closed = await _exchange(port, b"GET /ping HTTP/1.1\r\n\r\n", 15)
            assert closed and not received.startswith(b"HTTP/1.1 200"), received
            r = await i.post("/predictions/echo", content=b"still", headers=TEXT)
            assert r.status_code == 200 and r.text == "still"
