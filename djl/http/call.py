"""One inference request as the transport-free routes see it (djl/http/inference.py and
the route modules it dispatches to: openai.py, v2.py); both fronts build it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from djl.config import ServerConfig
from djl.http import codec
from djl.io import Input
from djl.registry import ModelManager, Watch


@dataclass(slots=True)
class InferenceCall:
    """One inference request as the routes see it."""

    method: str
    segments: list[str]
    query: codec.Query
    req_id: str
    config: ServerConfig
    manager: ModelManager
    #: A request header by lower-case name (the first one), or None.
    header: Callable[[str], str | None]
    #: The request as an Input (reads the body; spec §3.3).
    read_input: Callable[[], Awaitable[Input]]
    #: Listens for the client leaving while a model works (``registry.Watch``); None
    #: where the transport does that itself (Quart).
    watch: Watch | None = None
    #: The model it addressed, once known (for the access log).
    model: str | None = None


__all__ = ["InferenceCall"]
