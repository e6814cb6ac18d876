"""``/console``: the management console, a static page beside the management API.

``GET /console`` and its assets (console.css, console.js, favicon.svg, all in this
folder) hold no data, so a browser loads them as any page, without a token; everything
the page shows comes from ``GET /console/state`` (djl.overview's snapshot) and every
change goes through the management API itself, both under that API's rules: served on
the management listener only, and behind ``management_token`` when one is set (the page
asks for it and sends it as ``Bearer``).

The page runs under a strict Content-Security-Policy: its own script and style files
only, no inline code, no other origin.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from importlib import resources
from typing import Any

import trio
from quart import Response

from djl.errors import MethodNotAllowed, NotFound
from djl.figures import History, LiveFigures
from djl.http import codec
from djl.http.management import Call
from djl.overview import Overview, overview

#: The files served, by the name after ``/console/`` ("" is the page itself).
ASSETS = {
    "": ("index.html", "text/html; charset=utf-8"),
    "console.css": ("console.css", "text/css; charset=utf-8"),
    "console.js": ("console.js", "text/javascript; charset=utf-8"),
    "favicon.svg": ("favicon.svg", "image/svg+xml"),
}
STATE = "state"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
#: File name → its bytes, read once (a few kilobytes in all).
_cache: dict[str, bytes] = {}


async def handle(call: Call, figures: LiveFigures | None,
                 check_token: Callable[[], None]) -> Response:
    """Serve one ``/console…`` request; ``check_token`` raises Unauthorized as the
    management API's own check does."""
    segments = call.segments
    if len(segments) > 3:
        raise NotFound.resource()
    name = segments[2] if len(segments) == 3 else ""
    if name != STATE and name not in ASSETS:
        raise NotFound.resource()
    if call.method != "GET":
        raise MethodNotAllowed()
    if name == STATE:
        check_token()
        snapshot = overview(call.manager, figures, trio.current_time())
        body = json.dumps(render(snapshot), separators=(",", ":")).encode()
        reply = codec.bytes_reply(body, "application/json", call.req_id, call.config)
    else:
        file_name, content_type = ASSETS[name]
        reply = codec.bytes_reply(await _read(file_name), content_type, call.req_id,
                                  call.config)
    reply.headers.extend(_SECURITY_HEADERS)
    return codec.to_response(reply)


async def _read(file_name: str) -> bytes:
    data = _cache.get(file_name)
    if data is None:
        path = resources.files(__name__).joinpath(file_name)
        data = _cache[file_name] = await trio.to_thread.run_sync(path.read_bytes)
    return data


def render(snapshot: Overview) -> dict[str, Any]:
    """The snapshot as the page reads it: snake_case, each history as columns."""
    body = asdict(snapshot)
    for workflow, row in zip(body["workflows"], snapshot.workflows, strict=True):
        workflow["figures"] = _history(row.figures)
        for model, model_row in zip(workflow["models"], row.models, strict=True):
            model["figures"] = _history(model_row.figures)
    return body


def _history(history: History | None) -> dict[str, Any] | None:
    if history is None:
        return None
    columns: dict[str, Any] = {"now": asdict(history.now),
                               "ago_s": [round(t, 1) for t in history.ago_s]}
    for key in ("requests_per_s", "p50_ms", "p99_ms", "batch_size", "tokens_per_s"):
        columns[key] = [_round(getattr(p, key)) for p in history.points]
    return columns


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


__all__ = ["ASSETS", "CSP", "handle", "render"]
