"""The writing half of an HTTP/1.1 connection (``djl.http.h1``): a ``codec.Reply`` as
bytes on the wire. A sized answer is one write (head and body together up to
``JOIN_LIMIT``); a streamed one is chunked (HTTP/1.0: the body ends with the connection),
each chunk written before the next is taken, so the socket's back-pressure reaches the
model's stream.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import aclosing

from djl.errors import StreamCut
from djl.http import codec
from djl.http.answer import answer_head
from djl.http.wire import Request

log = logging.getLogger("djl.http")

#: A head and body at most this long go out in one write.
JOIN_LIMIT = 64 * 1024
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"

Write = Callable[[bytes], Awaitable[None]]


async def send_reply(write: Write, request: Request, reply: codec.Reply,
                     closing: bool) -> bool:
    """Write ``reply`` to ``request`` (``request.sent`` counts its body bytes); whether the
    connection may go on. ``closing``: the server is stopping."""
    chunks = reply.chunks
    http10 = request.http_version == "1.0"
    if chunks is None:
        close = (reply.status >= 400 or not request.keep_alive or not request.complete
                 or closing)
        head, close = answer_head(reply.status, reply.headers, close, http10)
        body = reply.body if request.method != "HEAD" else b""
        if len(body) <= JOIN_LIMIT:
            await write(head + body)
        else:  # no copy of a large body for one write less
            await write(head)
            await write(body)
        request.sent = len(body)
        return not close
    # A stream: chunked (HTTP/1.0: the body ends when the connection does).
    head, close = answer_head(reply.status, reply.headers,
                              http10 or not request.keep_alive or closing,
                              chunked=not http10)
    await write(head)
    try:
        async with aclosing(chunks) as stream:  # type: ignore[type-var]
            async for chunk in stream:
                if not chunk:
                    continue
                request.sent += len(chunk)
                if http10:
                    await write(chunk)
                else:
                    await write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
    except StreamCut as exc:
        # Status and part of the body are out: the one honest end left is to close the
        # connection without the final chunk.
        log.warning("streamed response cut short: %s", exc.message)
        return False
    if not http10:
        await write(_LAST_CHUNK)
    return not close


__all__ = ["CONTINUE", "JOIN_LIMIT", "send_reply"]
