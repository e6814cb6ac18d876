"""The values djl's own server passes between its modules (``server``, ``h1``, ``asgi``):
what a listener's connections share (``Site``), one request as parsed (``Request``), and
what a write raises when the client is gone (``ClientGone``)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any

import trio

from djl.config import ServerConfig
from djl.errors import DjlError
from djl.registry import ModelManager


class ClientGone(Exception):
    """The connection went away while an answer was being written."""


@dataclass
class Site:
    """What every connection of one listener shares."""

    config: ServerConfig
    manager: ModelManager
    #: "both", "inference" or "management".
    role: str
    #: The Quart app's ASGI callable for the routes the connection does not answer.
    quart_asgi: Any
    scheme: str
    #: The lifespan's state (ASGI), copied into each request's scope.
    state: dict[str, Any] = field(default_factory=dict)
    ssl_context: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        self.id_header = self.config.request_id_header_key.lower().encode("latin-1")
        self.access_log = self.config.access_log
        metrics = self.manager.metrics
        #: Counts each answer's status class (Response_2XX, ...), or None: metrics off.
        self.count_response = metrics.count_response if metrics is not None else None


class Request:
    """One request as the parser saw it, and what became of it."""

    __slots__ = ("answered", "body", "complete", "content_type", "continued", "error",
                 "expect_continue", "gone", "headers", "http_version", "keep_alive", "method",
                 "refusal", "req_id", "scope", "sent", "size", "status", "url")

    def __init__(self) -> None:
        self.url = b""
        #: (lower-case name, value), as ASGI has them.
        self.headers: list[tuple[bytes, bytes]] = []
        self.method = ""
        self.http_version = "1.1"
        self.keep_alive = True
        self.expect_continue = False
        self.content_type: bytes | None = None
        self.req_id: str | None = None
        #: Body bytes received and not yet taken by the responder.
        self.body: list[bytes] = []
        self.size = 0
        #: The whole message is parsed (its body is all in ``body``, or was taken).
        self.complete = False
        #: A refusal answered instead of the request (the connection then closes).
        self.refusal: DjlError | None = None
        #: Why the body cannot be read to its end (a malformed chunk, over the size limit).
        self.error: DjlError | None = None
        self.continued = False
        #: The client left: whatever answers this request stops (``scope`` is cancelled).
        self.gone = False
        self.scope: trio.CancelScope | None = None
        #: The answer's status and body bytes written so far (the access log's).
        self.status = 0
        self.sent = 0
        #: The whole answer is written.
        self.answered = False


__all__ = ["ClientGone", "Request", "Site"]
