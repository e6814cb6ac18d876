"""The ASGI front in front of Quart: what every HTTP request passes before Quart's routing.

Here: the 413 of an over-long ``Content-Length`` (spec §1.5), and the two ways a refused
request used to end badly under hypercorn (issue 8.4): a client that leaves while its
answer is written is one debug line, not a traceback; and the connection is closed after
an error even when Quart cancels its handler.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import trio

from djl.config import ServerConfig
from djl.errors import PayloadTooLarge
from djl.http import codec
from djl.registry import ModelManager

log = logging.getLogger("djl.http")

#: ASGI scope key naming the listener a request came in on: "both", "inference", "management".
ROLE_KEY = "djl.role"

_INFERENCE = re.compile(r"^/(ping|invocations|predictions|v1/chat/completions)([/?].*)?$")
INVOKE = re.compile(r"^/models/.+/invoke$")

#: What a send raises when the client is already gone: hypercorn's reader closes the
#: socket (send_eof) while the app still writes, or the peer reset it.
_GONE = (trio.BusyResourceError, trio.BrokenResourceError, trio.ClosedResourceError)


def is_inference(uri: str, query_string: bytes) -> bool:
    """Spec §1.2: whether a request URI names an inference route."""
    return bool(_INFERENCE.match(uri)) or (bool(INVOKE.match(uri)) and not query_string)


def too_large(config: ServerConfig) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"Request body exceeds max_request_size ({config.max_request_size} bytes)"
    )


class _ClientGone(Exception):
    """The connection went away while an answer was being written."""


class Front:
    """The app's ``asgi_app``: see the module docstring."""

    def __init__(self, quart_asgi: Any, manager: ModelManager, config: ServerConfig) -> None:
        self.quart_asgi = quart_asgi
        self.manager = manager
        self.config = config
        self.id_header = config.request_id_header_key.lower().encode("latin-1")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.quart_asgi(scope, receive, send)
            return
        try:
            await self._http(scope, receive, send)
        except* _ClientGone:
            log.debug("client left before its answer was written: %s", scope["path"])

    async def _http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        config = self.config
        length = req_id = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == self.id_header and req_id is None:
                req_id = value.decode("latin-1")
        if length is not None and int(length) > config.max_request_size:
            # Spec §1.5: every route, also those that never read their body. h11 has
            # checked the header is digits.
            req_id = req_id or codec.random_uuid4()
            log.warning("refused a request of %s bytes (max_request_size %d)",
                        length.decode(), config.max_request_size)
            await _send_reply(send, codec.error_reply(too_large(config), req_id, config))
            return
        await self.quart_asgi(scope, receive, _closing_send(send))


async def _send(send: Any, message: dict[str, Any]) -> None:
    try:
        await send(message)
    except _GONE as exc:
        raise _ClientGone() from exc


async def _send_reply(send: Any, reply: codec.Reply) -> None:
    await _send(send, {"type": "http.response.start", "status": reply.status,
                       "headers": reply.headers})
    await _send(send, {"type": "http.response.body", "body": reply.body, "more_body": False})


def _closing_send(send: Any) -> Any:
    """``send`` for Quart: its last message is shielded.

    hypercorn closes a connection an error answer marked ``connection: close`` inside
    that last send; quart-trio cancels its handler as soon as hypercorn reports the
    stream closed, which used to abort the close and leave the socket open (issue 8.4).
    """

    async def closing_send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            with trio.CancelScope(shield=True):
                await _send(send, message)
        else:
            await _send(send, message)

    return closing_send


__all__ = ["ROLE_KEY", "Front", "is_inference", "too_large"]
