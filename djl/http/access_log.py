"""The access log (``access_log=true``): one ``djl.access`` line per request.

    <request id> <method> <path> <model or -> <status> <body bytes> <latency ms>

Off by default: the front then never enters here. The line is written once the answer is
out (or the client left), so the latency is what the client saw, body included.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("djl.access")

#: ASGI scope key where the inference routes leave the model a request addressed.
MODEL_KEY = "djl.model"

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


async def access_logged(app: App, scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Run ``app`` for one request, then log its line."""
    start = time.perf_counter()
    status = 0
    size = 0
    req_id = "-"

    async def counting_send(message: dict[str, Any]) -> None:
        nonlocal status, size, req_id
        if message["type"] == "http.response.start":
            status = message["status"]
            for name, value in message.get("headers", ()):
                if name == b"x-request-id":
                    req_id = value.decode("latin-1")
                    break
        elif message["type"] == "http.response.body":
            size += len(message.get("body", b""))
        await send(message)

    try:
        await app(scope, receive, counting_send)
    finally:
        write_line(req_id, scope["method"], scope["path"], scope.get(MODEL_KEY), status, size,
                   start)


def write_line(req_id: str, method: str, path: str, model: str | None, status: int,
               size: int, start: float) -> None:
    """One request's line; ``start`` is its ``time.perf_counter()`` on arrival."""
    log.info("%s %s %s %s %d %d %.2f", req_id, method, path, model or "-", status, size,
             (time.perf_counter() - start) * 1000)


__all__ = ["MODEL_KEY", "access_logged", "write_line"]
