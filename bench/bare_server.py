"""Baseline servers: the HTTP stack without djl, in one process, served as djl serves.

``--app quart`` (default): a bare QuartTrio route returning a fixed body, on hypercorn's
trio worker (what Quart costs). ``--app raw``: a plain ASGI app doing the same (the
ceiling of hypercorn itself), on its trio worker or, with ``--worker asyncio``, on its
asyncio worker. ``--app h11`` / ``--app httptools``: no hypercorn and no ASGI, plain trio
reading each keep-alive connection in one task and parsing with h11 / httptools (the
floors under any trio server: what parsing and the socket cost). ``POST
/predictions/<name>`` reads the body and answers the fixed body; ``GET /ping`` answers
``{}``. No access log, the same keep-alive. Stops on SIGTERM/SIGINT.

    python bench/bare_server.py --port 8081 [--app raw|h11|httptools] [--worker asyncio]
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


def _answer(body: bytes, content_type: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\ncontent-type: " + content_type + b"\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


async def _serve_streams(port: int, connection: Any) -> None:
    import trio

    async def guarded(stream: trio.SocketStream) -> None:
        try:
            await connection(stream)
        except Exception:  # noqa: BLE001 — a reset or a parse error ends that connection only
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        async def watch() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

        nursery.start_soon(watch)
        await trio.serve_tcp(guarded, port, host="127.0.0.1")


def h11_floor(body: bytes, port: int) -> None:
    """trio + h11: one task per connection, a request read whole, one write per answer."""
    import h11
    import trio

    answers = {b"/ping": (b"{}\n", b"application/json")}
    default = (body, b"text/plain")

    async def connection(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        target = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                conn.receive_data(data)
                if not data:
                    return
            elif isinstance(event, h11.Request):
                target = event.target
            elif isinstance(event, h11.EndOfMessage):
                # h11 renders the answer (head, body, end); one write.
                payload, content_type = answers.get(target, default)
                out = conn.send(h11.Response(status_code=200, headers=[
                    (b"content-type", content_type),
                    (b"content-length", str(len(payload)).encode())]))
                out += conn.send(h11.Data(data=payload)) + conn.send(h11.EndOfMessage())
                await stream.send_all(out)
                conn.start_next_cycle()
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return

    trio.run(_serve_streams, port, connection)


def httptools_floor(body: bytes, port: int) -> None:
    """trio + httptools: the parser's callbacks collect the target; each complete request
    is answered in the same task, one write per answer (pipelined ones in order)."""
    import httptools
    import trio

    answers = {b"/ping": _answer(b"{}\n", b"application/json")}
    default = _answer(body, b"text/plain")

    class Protocol:
        def __init__(self) -> None:
            self.url = b""
            self.out: list[bytes] = []

        def on_url(self, url: bytes) -> None:
            self.url += url

        def on_message_complete(self) -> None:
            self.out.append(answers.get(self.url, default))
            self.url = b""

    async def connection(stream: trio.SocketStream) -> None:
        protocol = Protocol()
        parser = httptools.HttpRequestParser(protocol)
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            parser.feed_data(data)
            if protocol.out:
                out, protocol.out = protocol.out, []
                await stream.send_all(out[0] if len(out) == 1 else b"".join(out))

    trio.run(_serve_streams, port, connection)


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
    parser.add_argument("--app", choices=["quart", "raw", "h11", "httptools"],
                        default="quart")
    parser.add_argument("--worker", choices=["trio", "asyncio"], default="trio")
    args = parser.parse_args()
    body = args.body_file.read_bytes() if args.body_file else b"hello\n"
    if args.app == "quart" and args.worker == "asyncio":
        parser.error("the Quart baseline is quart-trio: trio worker only")
    if args.app in ("h11", "httptools"):
        (h11_floor if args.app == "h11" else httptools_floor)(body, args.port)
        raise SystemExit(0)
    application = quart_app(body) if args.app == "quart" else raw_app(body)
    (serve_trio if args.worker == "trio" else serve_asyncio)(application, config(args.port))
