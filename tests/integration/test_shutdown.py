"""Shutdown with streamed answers in flight (spec §8: in-flight requests get a grace).

A stream the model finishes within the grace ends complete, with its whole body; one
still going when the grace runs out ends incomplete: the connection closes without the
last chunk, so no client mistakes it for a shorter complete body.
"""

from __future__ import annotations

import trio
from serving import register, running_server

import djl.__main__

GRACE_S = 1.0
SIZE = 10


def _decoded(body: bytes) -> tuple[bytes, bool]:
    """The chunked body's payload so far, and whether its last chunk (0) arrived."""
    payload = b""
    while True:
        line, sep, rest = body.partition(b"\r\n")
        if not sep:
            return payload, False
        length = int(line.split(b";")[0], 16)
        if length == 0:
            return payload, rest.startswith(b"\r\n")
        if len(rest) < length + 2:
            return payload + rest[:length], False
        payload, body = payload + rest[:length], rest[length + 2:]


async def _open_stream(port: int, n: int, every: float) -> tuple[trio.SocketStream, bytes]:
    """Ask model ``s`` for ``n`` chunks ``every`` s apart; return once the first is in."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(
        f"POST /predictions/s?action=stream&n={n}&size={SIZE}&every={every} HTTP/1.1\r\n"
        "Host: x\r\nContent-Length: 0\r\n\r\n".encode())
    data = b""
    with trio.fail_after(20):
        while not _decoded(data.partition(b"\r\n\r\n")[2])[0]:
            chunk = await stream.receive_some(65536)
            assert chunk, data
            data += chunk
    head = data.partition(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower()
    return stream, data


async def _read_to_the_end(stream: trio.SocketStream, data: bytes, out: list) -> None:
    with trio.fail_after(30):  # the server must end it: EOF or a reset, never a hang
        try:
            while not _decoded(data.partition(b"\r\n\r\n")[2])[1]:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                data += chunk
        except trio.BrokenResourceError:
            pass
    out.append(_decoded(data.partition(b"\r\n\r\n")[2]))
    await stream.aclose()


async def test_shutdown_ends_streams_complete_or_visibly_cut(tmp_path, monkeypatch):
    monkeypatch.setattr(djl.__main__, "SHUTDOWN_GRACE_S", GRACE_S)
    short_n, long_n, every = 5, 2000, 0.05  # 0.2 s and 100 s of chunks
    short: list[tuple[bytes, bool]] = []
    long: list[tuple[bytes, bool]] = []
    async with trio.open_nursery() as readers:
        async with running_server(tmp_path) as server:
            await register(server, "s", "behave", min_worker="3", max_worker="3")
            port = int(server.url.rsplit(":", 1)[1].rstrip("/"))
            for _ in range(2):
                readers.start_soon(_read_to_the_end, *await _open_stream(port, long_n, every),
                                   long)
            readers.start_soon(_read_to_the_end, *await _open_stream(port, short_n, every),
                               short)
        # Leaving the block shut the server down while the streams were running.
    [(body, complete)] = short
    assert complete and body == b"x" * SIZE * short_n, (len(body), complete)
    for body, complete in long:
        assert not complete, f"cut after {len(body)} of {SIZE * long_n} bytes, yet complete"
        assert 0 < len(body) < SIZE * long_n
