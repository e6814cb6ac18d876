"""The HTTP side's end of a streamed response, fed by a worker's chunk frames."""

from __future__ import annotations

import trio

from djl.errors import StreamCut


class ChunkStream:
    """The HTTP side's end of a streamed response (``Output.stream`` on the server).

    ``receive`` gives the chunks in order, then raises EndOfChannel at the model's last
    chunk, or StreamCut when the worker side stopped before it: a truncated body must
    never look complete to the client.
    """

    def __init__(self, receive: trio.MemoryReceiveChannel[bytes]) -> None:
        self._receive = receive
        self.cut_reason: str | None = None

    async def receive(self) -> bytes:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            if self.cut_reason is not None:
                raise StreamCut(self.cut_reason) from None
            raise

    def close(self) -> None:
        self._receive.close()


__all__ = ["ChunkStream"]
