"""The baseline server: a bare QuartTrio route on hypercorn's trio worker, in one process.

Served the way ``djl-serving`` serves (``hypercorn.trio.serve`` in this process, no access
log, the same keep-alive), so the ratio djl/bare isolates what djl adds on top of the HTTP
stack. ``POST /predictions/<name>`` reads the body and answers a fixed body;
``GET /ping`` answers ``{}``. Stops on SIGTERM/SIGINT.

    python bench/bare_server.py --port 8081 [--body-file FILE]
"""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from quart import Response, request
from quart_trio import QuartTrio


def create_app(body: bytes) -> QuartTrio:
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


async def main(port: int, body: bytes) -> None:
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.keep_alive_timeout = 60
    stop = trio.Event()

    async def watch() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                stop.set()
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        await serve(create_app(body), config, shutdown_trigger=stop.wait)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--body-file", type=Path, help="the fixed response body")
    args = parser.parse_args()
    trio.run(main, args.port, args.body_file.read_bytes() if args.body_file else b"hello\n")
