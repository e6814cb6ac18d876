"""``djl-serving`` / ``python -m djl``: command line → ServerConfig → the HTTP server:
djl's own (``djl.http.server``, the default) or hypercorn's trio worker
(``http_server=hypercorn``).

Start-up failures (bad configuration, a start-up model that cannot load, a port in use)
print one line to stderr and exit with status 1. SIGTERM and SIGINT shut down cleanly:
the server stops accepting, in-flight requests finish, then every worker is stopped.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from functools import partial
from typing import Any, NoReturn

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from djl.app import Listener, ServerParts, create_app
from djl.config import (
    HYPERCORN_GRACEFUL_TIMEOUT_S,
    HYPERCORN_MIN_STARTUP_TIMEOUT_S,
    HYPERCORN_SHUTDOWN_TIMEOUT_S,
    SHUTDOWN_GRACE_S,
    Address,
    ConfigError,
    ServerConfig,
    load_server_config,
)
from djl.errors import DjlError, exception_leaves
from djl.http import connection, server
from djl.http.connection import LeanConfig
from djl.log_levels import python_level
from djl.registry import ModelManager

log = logging.getLogger("djl")


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # Spec §8.1: an invalid command line prints the help and exits with status 1.
        self.print_help(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = _ArgumentParser(prog="djl-serving", description="djl model server")
    parser.add_argument("-f", "--config-file", help="config.properties to read")
    parser.add_argument("-m", "--models", nargs="+", metavar="URL",
                        help="start-up models: [name[:version[:engine[:devices]]]=]url")
    parser.add_argument("-s", "--model-store", help="folder of models to load at start-up")
    return parser.parse_args(argv)


def hypercorn_config(address: Address, config: ServerConfig) -> HypercornConfig:
    hc = LeanConfig()
    hc.bind = [address.bind]
    # Longer than the models' own grace (_shut_down_on_stop): their last answers go out.
    hc.graceful_timeout = HYPERCORN_GRACEFUL_TIMEOUT_S
    hc.startup_timeout = max(HYPERCORN_MIN_STARTUP_TIMEOUT_S, config.model_loading_timeout_s + 60)
    hc.shutdown_timeout = HYPERCORN_SHUTDOWN_TIMEOUT_S
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.keep_alive_timeout = config.request_head_timeout_s
    if address.scheme == "https":
        hc.certfile, hc.keyfile = config.certificate_file, config.private_key_file
    return hc


async def run_server(config: ServerConfig, *, task_status: Any = trio.TASK_STATUS_IGNORED,
                     shutdown: trio.Event | None = None) -> None:
    """Load the start-up models, serve until SIGTERM/SIGINT (or ``shutdown``), stop.

    ``task_status.started`` receives the bound URLs (written as hypercorn does). With
    ``wait_model_loading`` (the default) the models load before any port is bound and a
    failure raises here; otherwise the ports open at once and a load failure stops the
    server 3 s later.
    Shutdown order: stop accepting and, meanwhile, stop the models (see
    _shut_down_on_stop), so every accepted request is answered before the listeners go.
    """
    stop = shutdown if shutdown is not None else trio.Event()
    parts = ServerParts(config)
    manager = parts.manager
    if not config.management_address.is_loopback:
        log.warning(
            "The management API is bound to %s, reachable from other hosts: anyone who can "
            "reach it can run code on this machine. Set management_token or bind 127.0.0.1.",
            config.management_address,
        )
    async with trio.open_nursery() as nursery:
        if shutdown is None:
            nursery.start_soon(_watch_signals, stop)
        nursery.start_soon(_shut_down_on_stop, stop, manager)
        try:
            app = create_app(config, parts)
            async with trio.open_nursery() as servers:

                async def bind() -> list[str]:
                    if config.http_server == "djl":
                        return await servers.start(server.serve, app, manager, config,
                                                   _listeners(config), stop)
                    return await servers.start(_serve_hypercorn, app, config, stop)

                try:
                    binds = await parts.start_up(nursery, bind, partial(_stop_after, stop))
                except DjlError:
                    if stop.is_set():
                        log.info("stopped during start-up")
                        return
                    raise
                log.info("djl serving on %s", ", ".join(binds))
                task_status.started(binds)
        finally:
            with trio.CancelScope(shield=True):
                await manager.aclose(SHUTDOWN_GRACE_S)
            nursery.cancel_scope.cancel()


def _listeners(config: ServerConfig) -> list[tuple[Address, str]]:
    if config.dual_listeners:
        return [(config.management_address, "management"),
                (config.inference_address, "inference")]
    return [(config.inference_address, "both")]


async def _shut_down_on_stop(stop: trio.Event, manager: ModelManager) -> None:
    """Stop models while the server still serves, so every request gets an answer.

    Loads in progress (start-up, synchronous registrations) are aborted; queued requests
    get 503 "Worker shutting down" at once; in-flight ones get SHUTDOWN_GRACE_S to finish,
    then the same 503. The server's graceful timeout is longer, so those answers are still
    written before it drops the connections that are left.
    """
    await stop.wait()
    await manager.aclose(SHUTDOWN_GRACE_S)


async def _watch_signals(stop: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("received %s: shutting down", signal.Signals(signum).name)
            stop.set()
            return


async def _stop_after(stop: trio.Event, exc: DjlError) -> None:
    """``wait_model_loading=false``: a start-up model failed while the server served."""
    log.error("start-up model failed to load: %s; stopping in 3 s", exc.message)
    await trio.sleep(3)
    stop.set()


async def _serve_hypercorn(app: Any, config: ServerConfig, stop: trio.Event, *,
                           task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """``http_server=hypercorn``: one hypercorn trio server per listener, with
    ``LeanTCPServer`` installed for as long as they serve (``lean_connections``)."""

    async def trigger() -> None:
        await stop.wait()

    with connection.installed(config.lean_connections):
        async with trio.open_nursery() as servers:
            binds: list[str] = []
            for address, role in _listeners(config):
                binds += await servers.start(
                    _serve, Listener(app, role, lifespan=True),
                    hypercorn_config(address, config), trigger,
                )
            task_status.started(binds)


async def _serve(app: Any, hc: HypercornConfig, trigger: Any, *,
                 task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    try:
        await serve(app, hc, shutdown_trigger=trigger, task_status=task_status)
    except* OSError as group:
        exc = exception_leaves(group)[0]
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"cannot listen on {', '.join(hc.bind)}: {reason}") from None



def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_server_config(config_file=args.config_file, models=args.models,
                                    model_store=args.model_store)
    except (ConfigError, ValueError) as exc:
        print(f"djl-serving: {exc}", file=sys.stderr)
        return 1
    logging.getLogger("djl").setLevel(python_level(config.log_level))
    try:
        trio.run(run_server, config)
    except KeyboardInterrupt:
        return 0
    except BaseException as exc:  # noqa: BLE001 — one clear line, then exit 1
        print(f"djl-serving: start-up failed: {_describe(exc)}", file=sys.stderr)
        return 1
    return 0


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exception_leaves(exc))
    text = getattr(exc, "message", None) or str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
