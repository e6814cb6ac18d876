"""Reading a worker's frames off its stream: the one read loop the init call, the batch
loop and the rolling-batch session share."""

from __future__ import annotations

import trio

from djl import _batch
from djl.errors import WorkerDied
from djl.sockio import FastStream


def ready_frame(decoder: _batch.FrameDecoder) -> tuple[int, bytes] | None:
    """The next whole frame already read (a pipelined batch's answer often came in with
    the one before it), or None."""
    for frame in decoder:
        return frame
    return None


async def next_frame(stream: trio.SocketStream | FastStream, decoder: _batch.FrameDecoder
                     ) -> tuple[int, bytes]:
    """The next whole frame ``(kind, payload)``; WorkerDied when the process hung up."""
    while True:
        for frame in decoder:
            return frame
        data = await stream.receive_some(_batch.RECV_SIZE)
        if not data:
            raise WorkerDied("Python worker disconnected.")
        decoder.feed(data)


__all__ = ["next_frame", "ready_frame"]
