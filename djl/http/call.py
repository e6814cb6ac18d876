"""One inference request as the transport-free routes see it (djl/http/inference.py and
the route modules it dispatches to: openai.py, v2.py; both fronts build it), and which
model a request that names none addresses."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from djl.config import ServerConfig
from djl.errors import BadRequest
from djl.http import codec
from djl.io import Input
from djl.registry import ModelManager, Watch


@dataclass(slots=True)
class RouteCall:
    """What every route sees of its request: method, path segments, query and id, with
    the settings and the registry that answer it."""

    method: str
    segments: list[str]
    query: codec.Query
    req_id: str
    config: ServerConfig
    manager: ModelManager


@dataclass(slots=True)
class InferenceCall(RouteCall):
    """One inference request as the routes see it."""
    #: A request header by lower-case name (the first one), or None.
    header: Callable[[str], str | None]
    #: The request as an Input (reads the body; spec §3.3).
    read_input: Callable[[], Awaitable[Input]]
    #: Listens for the client leaving while a model works (``registry.Watch``); None
    #: where the transport does that itself (Quart).
    watch: Watch | None = None
    #: The model it addressed, once known (for the access log).
    model: str | None = None


def invocation_target(startup_names: list[str], *candidates: str | None) -> str:
    """Spec §3.1: the model an /invocations request names — the first non-empty
    candidate (query, header, form field, in that order), else the single start-up
    model, else 400."""
    for candidate in candidates:
        if candidate:
            return candidate
    if len(startup_names) == 1:
        return startup_names[0]
    raise BadRequest("Parameter model_name is required.")


__all__ = ["InferenceCall", "RouteCall", "invocation_target"]
