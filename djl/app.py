"""create_app(config): the QuartTrio app, its routing, and the lifespan that owns the models.

Routing follows spec §1.2 rather than Quart's URL map, because the spec matches regular
expressions on the raw URI (query included), drops trailing empty segments and answers
405/404 with its own wording. One catch-all route hands every request to ``dispatch``.

``ServerParts`` composes one server: the ModelManager, and the app's own error-rate
breaker and async results; its ``start_up`` is the start-up sequence of both djl-serving
and the lifespan. Lifespan: ``before_serving`` runs it in ``app.nursery`` (a start-up
model that fails aborts start-up); ``after_serving`` unregisters everything, letting
in-flight requests finish for up to ``SHUTDOWN_GRACE_S``.

Also usable directly: ``hypercorn -k trio 'djl.app:create_app()'``.
"""

from __future__ import annotations

import gc
import hmac
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge, RequestTimeout

from djl import __version__
from djl.async_results import AsyncResults
from djl.breaker import ErrorRateBreaker
from djl.config import SHUTDOWN_GRACE_S, ServerConfig, load_server_config
from djl.errors import (
    DjlError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    StreamCut,
    Unauthorized,
    exception_leaves,
)
from djl.errors import RequestTimeout as BodyTimeout
from djl.figures import LiveFigures
from djl.http import adapters, codec, console, inference, management
from djl.http.access_log import MODEL_KEY
from djl.http.front import INVOKE, ROLE_KEY, Front, is_inference
from djl.registry import ModelManager
from djl.startup import load_startup_models

log = logging.getLogger("djl.app")

ALL_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]

_MANAGEMENT = re.compile(r"^/(workflows([/?].*)?|server/.+|models([/?].*)?)$")
_ADAPTERS = re.compile(r"^(/models/[^/?]+)?/adapters([/?].*)?$")
_CONSOLE = re.compile(r"^/console([/?].*)?$")

class ServerParts:
    """One server as the app composes it: the registry (``ModelManager``) and what belongs
    to the app around it, the error-rate breaker behind /ping (spec §3.9) and the results
    of x-synchronous: false requests (spec §3.8). The manager is handed both (its
    predictions count failures into the breaker; the HTTP side reaches the results
    through it) and builds and runs neither. ``start_up`` is the one start-up sequence,
    djl-serving's and the app lifespan's.
    """

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.breaker = ErrorRateBreaker.from_config(
            config.error_rate_wlm, config.error_rate_server, config.error_rate_any)
        self.results = AsyncResults(
            max_entries=config.async_result_max_entries,
            max_bytes=config.async_result_max_bytes, ttl_s=config.async_result_ttl_s,
            cache_batch=config.cache_batch, chunk_timeout_s=config.chunked_read_timeout_s)
        self.manager = ModelManager(config, breaker=self.breaker, results=self.results)

    async def run(self, *, task_status: trio.TaskStatus[ServerParts] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """The parts' nursery: the async results and the manager; cancel it to stop both."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.results.run)
            await nursery.start(self.manager.run)
            task_status.started(self)

    async def start_up(
        self,
        nursery: trio.Nursery,
        bind: Callable[[], Awaitable[list[str]]] | None = None,
        load_failed: Callable[[DjlError], Awaitable[None]] | None = None,
    ) -> list[str]:
        """Start the parts in ``nursery``, load the start-up models (spec §4.5), settle the
        GC, ``bind`` the listeners (when the caller opens them itself), report the
        start-up time; the bound URLs.

        The models load before any port is bound and a failure raises, unless
        ``wait_model_loading`` is off and the caller says what a failure does
        (``load_failed``): then they load in ``nursery`` while the server already serves.
        """
        began = trio.current_time()
        await nursery.start(self.run)
        if load_failed is None or self.config.wait_model_loading:
            await load_startup_models(self.manager, self.config)
        else:
            nursery.start_soon(self._load_in_background, load_failed)
        settle_gc(self.config)
        binds = await bind() if bind is not None else []
        if self.manager.metrics is not None:
            self.manager.metrics.server_started(__version__, trio.current_time() - began)
        return binds

    async def _load_in_background(self, load_failed: Callable[[DjlError], Awaitable[None]]
                                  ) -> None:
        try:
            await load_startup_models(self.manager, self.config)
        except DjlError as exc:
            await load_failed(exc)


def create_app(config: ServerConfig | None = None,
               parts: ServerParts | None = None) -> QuartTrio:
    """The ASGI app. Without ``parts`` it owns them: its lifespan starts them, loads the
    start-up models and stops them (``hypercorn 'djl.app:create_app()'``). The CLI passes
    its own, loaded before any port is bound (spec §1.1 ``wait_model_loading``)."""
    config = config or load_server_config()
    app = QuartTrio("djl")
    app.config["MAX_CONTENT_LENGTH"] = config.max_request_size
    app.config["BACKGROUND_TASK_SHUTDOWN_TIMEOUT"] = SHUTDOWN_GRACE_S
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    # Quart's is a limit on the whole body (the front's, on a pause between its parts).
    app.config["BODY_TIMEOUT"] = config.request_body_timeout_s
    owns_parts = parts is None
    parts = parts or ServerParts(config)
    manager = parts.manager
    app.extensions["djl.manager"] = manager
    app.extensions["djl.config"] = config
    # The console's live figures: a history sampled from the metrics (none when they are off).
    figures = LiveFigures(manager.metrics.families) if manager.metrics is not None else None

    if owns_parts:

        @app.before_serving
        async def _start() -> None:
            await parts.start_up(app.nursery)

        @app.after_serving
        async def _stop() -> None:
            # The same stop as djl-serving's (ModelManager.aclose): loads in progress are
            # aborted, queued requests answered, in-flight ones given the grace.
            await manager.aclose(SHUTDOWN_GRACE_S)

    @app.route("/", defaults={"path": ""}, methods=ALL_METHODS, provide_automatic_options=False)
    @app.route("/<path:path>", methods=ALL_METHODS, provide_automatic_options=False)
    async def _catch_all(path: str) -> Response:
        return await dispatch(manager, config, figures)

    @app.errorhandler(HTTPException)
    async def _http_error(error: HTTPException) -> Response:
        req_id = codec.request_id(request, config)
        return codec.error_response(_as_djl_error(error, config), req_id, config)

    # The inference routes skip Quart (djl.http.front); installed here, so every way of
    # serving create_app() gets it. Nothing process-wide is changed here: djl-serving's
    # entry point owns that (djl.__main__).
    app.asgi_app = Front(  # type: ignore[method-assign]
        _EndCutStreams(app.asgi_app), manager, config)
    return app


def settle_gc(config: ServerConfig) -> None:
    """Once start-up is done: the cyclic GC set for a server.

    A tenth of a request's CPU went to collections triggered by per-request allocations,
    the full ones walking every module, class and route object of the process. Frozen,
    those are never walked again (nor freed: what is alive at start-up stays alive anyway).
    """
    if config.gc_thresholds:
        gc.set_threshold(*(int(v) for v in config.gc_thresholds.split(",")))
    if config.gc_freeze:
        gc.collect()
        gc.freeze()


class _EndCutStreams:
    """ASGI middleware for a streamed response the worker side stopped midway (StreamCut).

    Its status and part of its body are already sent; the one honest end left is to close
    the connection without the final chunk. Quart skips that chunk when the body raises,
    and hypercorn drops the connection when the app returns; this wrapper turns the
    exception into one log line instead of an "Error in ASGI Framework" traceback.
    """

    def __init__(self, asgi_app: Any) -> None:
        self.asgi_app = asgi_app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await self.asgi_app(scope, receive, send)
        except* StreamCut as group:
            log.warning("streamed response cut short: %s",
                        getattr(exception_leaves(group)[0], "message", ""))


def _as_djl_error(error: HTTPException, config: ServerConfig) -> DjlError:
    """Quart's own HTTP errors (body too large, ...) in the spec's error form."""
    if isinstance(error, RequestEntityTooLarge):
        return PayloadTooLarge.request(config.max_request_size)
    if isinstance(error, RequestTimeout):
        return BodyTimeout.body(config.request_body_timeout_s)
    if error.code == 405:
        return MethodNotAllowed()
    if error.code == 404:
        return NotFound.resource()
    return DjlError(error.description or error.name, status=error.code or 500)


async def dispatch(manager: ModelManager, config: ServerConfig,
                   figures: LiveFigures | None = None) -> Response:
    """Route one request (spec §1.2) and render whatever it raises (spec §1.4)."""
    # Resolve Quart's context-local proxy once: every attribute read through it costs a
    # context lookup, and a request reads a dozen.
    req = request._get_current_object()  # type: ignore[attr-defined]
    scope: dict[str, Any] = req.scope
    role = scope.get(ROLE_KEY, "both")
    req_id = codec.request_id(req, config)
    raw_path: bytes = scope.get("raw_path") or req.path.encode()
    query_string: bytes = scope.get("query_string", b"")
    uri = raw_path.decode("latin-1")
    if query_string:
        uri += "?" + query_string.decode("latin-1")
    method = req.method
    try:
        # An over-long Content-Length got its 413 in the front already.
        if method == "OPTIONS" and raw_path == b"/":
            return codec.json_response({}, 200, req_id, config)
        segments = codec.path_segments(raw_path)
        query = codec.Query(codec.parse_query(query_string))
        if is_inference(uri, query_string) and role != "management":
            # Only forms get here (the front serves the rest): Quart parses them.
            routed = inference.InferenceCall(
                method, segments, query, req_id, config, manager, req.headers.get,
                lambda: codec.to_input(req, query, req_id, config))
            try:
                return codec.to_response(await inference.handle(routed))
            finally:
                scope[MODEL_KEY] = routed.model
        call = management.Call(method, segments, query, req_id, config, manager, req)
        if role == "inference":
            raise NotFound.resource()
        if _ADAPTERS.match(uri):
            _check_token(req, config)
            return await adapters.handle(call)
        if _MANAGEMENT.match(uri) and not (method == "POST" and INVOKE.match(uri)):
            _check_token(req, config)
            return await management.handle(call)
        if _CONSOLE.match(uri):
            return await console.handle(call, figures, lambda: _check_token(req, config))
        raise NotFound.resource()
    except HTTPException as exc:
        return codec.error_response(_as_djl_error(exc, config), req_id, config)
    except Exception as exc:  # noqa: BLE001 — rendered as the spec's error body
        return codec.error_response(exc, req_id, config)


def _check_token(req: Any, config: ServerConfig) -> None:
    token = config.management_token
    if not token:
        return
    supplied = req.headers.get("Authorization", "")
    # RFC 7235: the scheme is case-insensitive and followed by one or more spaces.
    scheme, _, credentials = supplied.strip(" ").partition(" ")
    # Constant-time comparison: the token must not leak through response timing.
    valid_token = hmac.compare_digest(credentials.lstrip(" ").encode(), token.encode())
    if scheme.lower() != "bearer" or not valid_token:
        raise Unauthorized("Management API requires a valid bearer token")


class Listener:
    """ASGI wrapper marking which listener a request arrived on (spec §1.1).

    With ``lifespan=False`` it answers lifespan events itself instead of forwarding them,
    for embedders who serve one app that owns its manager behind two hypercorn servers.
    """

    def __init__(self, app: QuartTrio, role: str, lifespan: bool) -> None:
        self.app = app
        self.role = role
        self.lifespan = lifespan

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan" and not self.lifespan:
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        scope = dict(scope)
        scope[ROLE_KEY] = self.role
        await self.app(scope, receive, send)


__all__ = ["ROLE_KEY", "Listener", "ServerParts", "create_app", "dispatch", "settle_gc"]
