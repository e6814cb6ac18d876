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

    def __init__(self, receive: trio.MemoryReceiveChannel[bytes], join: bool = False) -> None:
        self._receive = receive
        self.cut_reason: str | None = None
        #: Join the chunks waiting behind one into one (see receive); a model's own chunks
        #: keep their boundaries (async results page by them).
        self._join = join

    async def receive(self) -> bytes:
        """The next chunk; with ``join``, together with every chunk that arrived
        meanwhile: a writer that fell behind (many token streams, one busy process)
        catches up in one write, not one per chunk; one that keeps up still sends each
        chunk as it comes."""
        try:
            chunk = await self._receive.receive()
        except trio.EndOfChannel:
            if self.cut_reason is not None:
                raise StreamCut(self.cut_reason) from None
            raise
        more = self._join and self._receive.statistics().current_buffer_used
        if not more:
            return chunk
        parts = [chunk]
        try:
            for _ in range(more):
                parts.append(self._receive.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            pass  # the end (or the cut) is the next receive's to report
        return b"".join(parts)

    def close(self) -> None:
        self._receive.close()


__all__ = ["ChunkStream"]
