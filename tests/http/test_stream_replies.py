"""http/: a streamed answer's header frame keeps the connection, whatever its code (§1.3)."""

from __future__ import annotations

import trio

from djl.config import ServerConfig
from djl.http import codec
from djl.io import Output


class Stream:
    def __init__(self, *chunks: bytes) -> None:
        self.send, self.recv = trio.open_memory_channel[bytes](10)
        for chunk in chunks:
            self.send.send_nowait(chunk)
        self.send.close()

    async def receive(self) -> bytes:
        return await self.recv.receive()

    def close(self) -> None:
        self.recv.close()


async def _reply(code: int, *chunks: bytes) -> codec.Reply:
    output = Output(code)
    output.stream = Stream(*chunks)  # type: ignore[assignment]
    return await codec.output_reply(output, "req", ServerConfig())


async def test_streamed_error_keeps_the_connection():
    reply = await _reply(500, b"a", b"b")
    assert reply.status == 500 and reply.chunks is not None
    assert (b"connection", b"close") not in reply.headers
    await reply.chunks.aclose()  # type: ignore[attr-defined]


async def test_a_full_error_answer_closes():
    full = await codec.output_reply(Output(500).add(b"x"), "req", ServerConfig())
    assert (b"connection", b"close") in full.headers
