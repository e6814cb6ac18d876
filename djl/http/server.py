"""djl's own HTTP/1.1 server (``http_server=djl``, the default of ``djl-serving``):
listeners, TLS, the app's lifespan and a graceful stop around ``djl.http.h1``.

One ``Site`` per listener: ``both`` when the inference and management addresses are the
same, else ``management`` and ``inference`` (spec §1.1), each enforced as the ASGI front
does (``front.serves_inline`` asks the role; Quart sees it under ``ROLE_KEY``). ``http``
and ``https`` addresses are TCP listeners (``https``: ``certificate_file`` and
``private_key_file`` through ``trio.SSLStream``), ``unix:`` ones Unix sockets.

Stop (``serve``'s ``stop`` event): the listeners close at once; idle connections close;
a connection answering a request finishes that answer and closes; after
``SERVER_GRACEFUL_TIMEOUT_S`` what is left is cancelled. Meanwhile the caller stops the
models (``ModelManager.aclose``: queued requests get their 503 at once, in-flight ones
``SHUTDOWN_GRACE_S``), so every accepted request is answered. The app's lifespan shuts
down last.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import stat
from functools import partial
from typing import Any

import trio

from djl.config import (
    HYPERCORN_SHUTDOWN_TIMEOUT_S,
    SERVER_GRACEFUL_TIMEOUT_S,
    TLS_HANDSHAKE_TIMEOUT_S,
    Address,
    ConfigError,
    ServerConfig,
)
from djl.http.asgi import Lifespan
from djl.http.h1 import Connection
from djl.http.wire import Site
from djl.registry import ModelManager

log = logging.getLogger("djl.http")


class _Connections:
    """The live connections, so a stop can reach each."""

    def __init__(self) -> None:
        self.live: set[Connection] = set()
        self.stopping = False
        self.empty = trio.Event()


async def serve(app: Any, manager: ModelManager, config: ServerConfig,
                listeners: list[tuple[Address, str]], stop: trio.Event, *,
                task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``app`` (a ``create_app`` app) on ``listeners`` ((address, role) pairs) until
    ``stop``; ``task_status.started`` gets the bound URLs, as hypercorn reports them.
    A port that cannot be bound raises ``ConfigError`` from ``nursery.start``."""
    quart_asgi = app.asgi_app.quart_asgi  # the ASGI front's Quart side
    lifespan = Lifespan(app)
    connections = _Connections()
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.run)
        try:
            sites = []
            for address, role in listeners:
                site = Site(config, manager, role, quart_asgi,
                            "https" if address.scheme == "https" else "http",
                            lifespan.state, _tls_context(config, address))
                sites.append((site, await _listen(address)))
            async with trio.open_nursery() as handlers:
                accepting = trio.CancelScope()
                handlers.start_soon(_accept, accepting, sites, handlers, connections)
                task_status.started([url for _, (bound, _) in sites for url in bound])
                await stop.wait()
                accepting.cancel()
                connections.stopping = True
                for connection in list(connections.live):
                    connection.shut_down()
                with trio.move_on_after(SERVER_GRACEFUL_TIMEOUT_S):
                    if connections.live:
                        await connections.empty.wait()
                handlers.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(HYPERCORN_SHUTDOWN_TIMEOUT_S):
                    await lifespan.shutdown()


async def _listen(address: Address) -> tuple[list[str], list[trio.SocketListener]]:
    """The bound URLs (hypercorn's way of writing them) and the listeners."""
    try:
        if address.scheme == "unix":
            return [f"http://unix:{address.path}"], [await _unix_listener(address.path)]
        listeners = await trio.open_tcp_listeners(address.port, host=address.host or None)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(f"cannot listen on {address.bind}: {reason}") from None
    scheme = "https" if address.scheme == "https" else "http"
    binds = []
    for listener in listeners:
        host, port = listener.socket.getsockname()[:2]
        host = f"[{host}]" if ":" in host else host
        binds.append(f"{scheme}://{host}:{port}")
    return binds, listeners


async def _unix_listener(path: str) -> trio.SocketListener:
    try:  # a socket left by an earlier run (hypercorn removes it the same way)
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.remove(path)
    except FileNotFoundError:
        pass
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.bind(path)
        sock.listen(socket.SOMAXCONN)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock)


def _tls_context(config: ServerConfig, address: Address) -> ssl.SSLContext | None:
    if address.scheme != "https":
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.certificate_file, config.private_key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot use certificate_file/private_key_file for {address}: "
                          f"{exc}") from None
    context.set_alpn_protocols(["http/1.1"])
    return context


async def _accept(accepting: trio.CancelScope,
                  sites: list[tuple[Site, tuple[list[str], list[trio.SocketListener]]]],
                  handlers: trio.Nursery, connections: _Connections) -> None:
    """Accept on every listener until ``accepting`` is cancelled; connections run in
    ``handlers``, so they outlive the listeners (a stop lets them finish)."""
    try:
        with accepting:
            async with trio.open_nursery() as nursery:
                for site, (_, listeners) in sites:
                    nursery.start_soon(partial(
                        trio.serve_listeners, partial(_connection, site=site,
                                                      connections=connections),
                        listeners, handler_nursery=handlers))
    finally:
        for _, (_, listeners) in sites:
            for listener in listeners:
                await trio.aclose_forcefully(listener)


async def _connection(stream: trio.SocketStream, *, site: Site,
                      connections: _Connections) -> None:
    if connections.stopping:
        await trio.aclose_forcefully(stream)
        return
    sock = stream.socket
    client = server = None
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        client = tuple(sock.getpeername()[:2])
        server = tuple(sock.getsockname()[:2])
    http: trio.abc.Stream = stream
    if site.ssl_context is not None:
        tls = trio.SSLStream(stream, site.ssl_context, server_side=True)
        handshaken = False
        with trio.move_on_after(TLS_HANDSHAKE_TIMEOUT_S):
            try:
                await tls.do_handshake()
                handshaken = True
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # not TLS, a bad certificate on the client's side, a reset
        if not handshaken:
            await trio.aclose_forcefully(tls)
            return
        http = tls
    connection = Connection(http, site, client, server)
    connections.live.add(connection)
    try:
        await connection.run()
    except Exception:  # noqa: BLE001 — one connection's failure never stops the server
        log.exception("connection from %s failed", client)
    finally:
        connections.live.discard(connection)
        if connections.stopping and not connections.live:
            connections.empty.set()


__all__ = ["serve"]
