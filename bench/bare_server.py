"""Baseline servers: the HTTP stack without djl, in one process, served as djl serves.

``--app quart`` (default): a bare QuartTrio route returning a fixed body, on hypercorn's
trio worker (what Quart costs). ``--app raw``: a plain ASGI app doing the same (the
ceiling of hypercorn itself), on its trio worker or, with ``--worker asyncio``, on its
asyncio worker. ``POST /predictions/<name>`` reads the body and answers the fixed body;
``GET /ping`` answers ``{}``. No access log, the same keep-alive. Stops on SIGTERM/SIGINT.

    python bench/bare_server.py --port 8081 [--app raw] [--worker asyncio] [--body-file F]
"""

from __future__ import annotations

import argparse
import signal
from pathlib import Path
from typing import Any

from hypercorn.config import Config


def quart_app(body: bytes) -> Any:
    from quart import Response, request
    from quart_trio import QuartTrio

    app = QuartTrio("bare")
    app.config["BACKGROUND_TASK_SHUTDOWN_TIMEOUT"] = None

    @app.route("/ping")
    async def ping() -> Response:
        return Response(b"{}\n", content_type="application/json")

    @app.route("/predictions/<name>", methods=["POST"])
    async def predict(name: str) -> Response:
        await request.get_data(cache=False)
        return Response(body, content_type="text/plain")

    return app


def raw_app(body: bytes) -> Any:
    """Read the whole body, then one ``http.response.start`` and one body message."""
    answers = {"/ping": (b"{}\n", b"application/json")}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        data, content_type = answers.get(scope["path"], (body, b"text/plain"))
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", content_type), (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})

    return app


def config(port: int) -> Config:
    hc = Config()
    hc.bind = [f"127.0.0.1:{port}"]
    hc.accesslog = None
    hc.keep_alive_timeout = 60
    return hc


def serve_trio(app: Any, hc: Config) -> None:
    import trio
    from hypercorn.trio import serve

    async def main() -> None:
        stop = trio.Event()

        async def watch() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    stop.set()
                    return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            await serve(app, hc, shutdown_trigger=stop.wait)
            nursery.cancel_scope.cancel()

    trio.run(main)


def serve_asyncio(app: Any, hc: Config) -> None:
    import asyncio

    from hypercorn.asyncio import serve

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve(app, hc, shutdown_trigger=stop.wait)

    asyncio.run(main())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--body-file", type=Path, help="the fixed response body")
    parser.add_argument("--app", choices=["quart", "raw"], default="quart")
    parser.add_argument("--worker", choices=["trio", "asyncio"], default="trio")
    args = parser.parse_args()
    body = args.body_file.read_bytes() if args.body_file else b"hello\n"
    if args.app == "quart" and args.worker == "asyncio":
        parser.error("the Quart baseline is quart-trio: trio worker only")
    application = quart_app(body) if args.app == "quart" else raw_app(body)
    (serve_trio if args.worker == "trio" else serve_asyncio)(application, config(args.port))
