"""Reading a worker's frames off its stream: the one read loop the init call, the batch
loop and the rolling-batch session share."""

from __future__ import annotations

import trio

from djl import _batch
from djl.errors import WorkerDied


async def next_frame(stream: trio.SocketStream, decoder: _batch.FrameDecoder
                     ) -> tuple[int, bytes]:
    """The next whole frame ``(kind, payload)``; WorkerDied when the process hung up."""
    while True:
        for frame in decoder:
            return frame
        data = await stream.receive_some(_batch.RECV_SIZE)
        if not data:
            raise WorkerDied("Python worker disconnected.")
        decoder.feed(data)


__all__ = ["next_frame"]
