"""Reads and writes on a trio stream that pass through trio's scheduler only when they must
wait.

trio's ``SocketStream.send_all`` and ``receive_some`` end every call that succeeds at once
with a checkpoint that yields to the run loop: one more scheduler pass (and epoll poll) per
call. The front makes four such calls per request at batch size 1 (the client's read and
write, the worker pipe's write and read). ``FastStream`` reads and writes a
``SocketStream``'s file descriptor directly (``os.read``/``os.write``: trio made it
non-blocking); only a call the kernel cannot serve at once waits, through trio
(``wait_readable``, the stream's own ``send_all``), so deadlines and cancellation act there
as before. After ``IMMEDIATE_LIMIT`` calls in a row that needed no wait, one checkpoints
anyway: a peer that never stops sending cannot hold the loop from other tasks (or from
a deadline). Any other stream (``trio.SSLStream``) uses its own methods.

The errors are the stream's: ``trio.BrokenResourceError`` for a reset or broken pipe,
``trio.ClosedResourceError`` for a closed stream. (``os.write`` on a socket whose peer
left raises EPIPE rather than killing the process: CPython ignores SIGPIPE.)
"""

from __future__ import annotations

import errno
import os

import trio
from trio.lowlevel import checkpoint, wait_readable

#: Calls served at once in a row before one yields to the scheduler.
IMMEDIATE_LIMIT = 16


def _stream_error(exc: OSError) -> trio.BrokenResourceError | trio.ClosedResourceError:
    if exc.errno == errno.EBADF:
        return trio.ClosedResourceError("the stream is closed")
    return trio.BrokenResourceError(str(exc))


class FastStream:
    """``send_all`` / ``receive_some`` of ``stream`` (see the module docstring); one task
    writes and one reads at a time, as trio requires of the stream itself."""

    __slots__ = ("immediate", "socket", "stream")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        #: The socket, or None: not a plain socket stream (its own methods serve). Its
        #: descriptor is asked for on each call: once the stream is closed (-1), the
        #: number may already name another socket.
        self.socket = stream.socket if isinstance(stream, trio.SocketStream) else None
        self.immediate = 0

    def _fd(self) -> int:
        fd = self.socket.fileno()  # type: ignore[union-attr]
        if fd < 0:
            raise trio.ClosedResourceError("the stream is closed")
        return fd

    async def receive_some(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes``; b"" at the end of the stream."""
        if self.socket is None:
            return await self.stream.receive_some(max_bytes)
        if self.immediate >= IMMEDIATE_LIMIT:
            self.immediate = 0
            await checkpoint()
        while True:
            try:
                data = os.read(self._fd(), max_bytes)
            except BlockingIOError:
                self.immediate = 0
                await wait_readable(self.socket)
                continue
            except OSError as exc:
                raise _stream_error(exc) from exc
            self.immediate += 1
            return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.socket is None:
            await self.stream.send_all(data)
            return
        if self.immediate >= IMMEDIATE_LIMIT:
            self.immediate = 0
            await checkpoint()
        try:
            sent = os.write(self._fd(), data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise _stream_error(exc) from exc
        if sent == len(data):
            self.immediate += 1
            return
        self.immediate = 0
        with memoryview(data) as view:  # the rest waits for room, through trio
            await self.stream.send_all(view[sent:])


__all__ = ["IMMEDIATE_LIMIT", "FastStream"]
