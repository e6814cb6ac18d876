"""``python -m djl.runtime``: one worker process serving one model over a socket.

The server creates a socketpair and hands this process its end as ``--fd``; or, for a
worker on another node (a Ray actor, djl/wlm/ray_launcher.py), ``--connect host:port``
dials the server, sends ``--secret`` and a newline first, then speaks the same frames
(``run`` is that entry point for a caller that is already a Python process). stdout and
stderr stay free for logs, which the server forwards line by line. ``--engine`` picks
what serves the model: ``Python`` (a ``model.py`` handler, python_engine.py),
``PyTorch`` (a TorchScript or ``.pt2`` file, torch_engine.py, imported only then),
``OnnxRuntime`` (an ``.onnx`` graph, onnx_engine.py) or ``Generation`` (a Hugging Face
causal LM with continuous batching, djl/runtime/generation/engine.py, which runs a loop of
its own: many requests in flight, answered step by step). Otherwise the loop is strictly
request → response: the server sends one (possibly batched) request frame and waits for
its answer, so this side needs no concurrency. The first request is the init call (empty
content, the model's properties); the entry point is imported (the model loaded) before
it is answered, so a broken model fails its registration rather than
its first request.

Never imports the HTTP or workload-manager side of djl.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from djl import _batch
from djl.errors import (
    ERROR_LOAD,
    ERROR_OOM,
    ERROR_OUTPUT,
    FrameError,
    FrameTooLarge,
    OutputTooLarge,
)
from djl.io import Input, Output, PairList
from djl.runtime.python_engine import EntryPointError, PythonEngine, is_out_of_memory

if TYPE_CHECKING:
    from djl.runtime.tensor_engine import TensorEngine

log = logging.getLogger("djl.runtime")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m djl.runtime")
    channel = p.add_mutually_exclusive_group(required=True)
    channel.add_argument("--fd", type=int, help="inherited socket file descriptor")
    channel.add_argument("--connect", metavar="HOST:PORT",
                         help="dial the server there instead (a worker on another node)")
    p.add_argument("--secret", default="", help="with --connect: the worker's secret, sent first")
    p.add_argument("--connect-timeout", type=float, default=30.0,
                   help="with --connect: seconds to reach the server")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--entry-point", required=True)
    p.add_argument("--device-id", default="-1")
    p.add_argument("--log-level", default="info")
    # No defaults: the server always says (its ServerConfig is the one source).
    p.add_argument("--max-item-bytes", type=int, required=True)
    p.add_argument("--max-frame-bytes", type=int, required=True,
                   help="largest frame the server reads")
    p.add_argument("--engine", default="Python",
                   choices=("Python", "PyTorch", "OnnxRuntime", "Generation"))
    p.add_argument("--num-threads", type=int, default=0,
                   help="intra-op threads (PyTorch, OnnxRuntime; 0: the runtime's default)")
    return p.parse_args(argv)


def _send_output(sock: socket.socket, output: Output, max_item_bytes: int,
                 max_frame: int) -> None:
    """One answer frame (or a stream of chunk frames) for one request frame.

    An item over ``max_item_bytes``, or an answer whose frame would pass ``max_frame``
    (many items, each within the limit), is refused here, before it reaches the pipe: the
    server would have to treat a frame that large as a broken worker. Stream chunks are
    split.
    """
    props = {str(k): str(v) for k, v in output.properties.items()}
    if output.stream is None:
        largest = max((len(v) for v in output.content.values), default=0)
        try:
            if largest > max_item_bytes:
                raise OutputTooLarge.item(largest, max_item_bytes)
            frame = _batch.encode_response(
                output.code, output.message, props, output.content.keys,
                output.content.values, max_frame,
            )
        except FrameTooLarge as exc:
            refused = OutputTooLarge.frame(exc.size, exc.limit)
        except OutputTooLarge as exc:
            refused = exc
        else:
            sock.sendall(frame)
            return
        log.error("%s", refused.message)
        sock.sendall(_batch.encode_error(ERROR_OUTPUT, refused.message))
        return
    sock.sendall(_batch.encode_response(output.code, output.message, props, None, None))
    formatter = output.stream_formatter
    try:
        for item in output.stream:
            if formatter is not None:
                data = formatter(item)
            elif isinstance(item, bytes | bytearray):
                data = item
            elif isinstance(item, str):
                data = item.encode("utf-8")
            else:
                from djl.io import encode_json

                data = encode_json(item)
            if isinstance(data, str):
                data = data.encode("utf-8")
            for start in range(0, len(data), max_item_bytes):
                piece = data[start:start + max_item_bytes]
                sock.sendall(_batch.encode_chunk(more=True, data=piece))
    except Exception as exc:  # noqa: BLE001 — the error text becomes the final chunk
        log.warning("stream generator raised:\n%s", traceback.format_exc())
        sock.sendall(_batch.encode_chunk(more=False, data=str(exc).encode("utf-8")))
        return
    sock.sendall(_batch.encode_chunk(more=False, data=b""))


def _run_finalizers(output: Output) -> None:
    for function, args in output.finalizers:
        try:
            function(*args)
        except Exception:  # noqa: BLE001 — a finalizer must not take the worker down
            log.warning("finalizer raised:\n%s", traceback.format_exc())


def serve(sock: socket.socket, engine: PythonEngine | TensorEngine, max_item_bytes: int,
          max_frame: int = _batch.MAX_FRAME) -> None:
    decoder = _batch.FrameDecoder()
    initialised = False
    # The tensor engines answer a whole batch frame by frame (no Input, no Output).
    answer_frame = getattr(engine, "answer_frame", None)
    while True:
        data = sock.recv(_batch.RECV_SIZE)
        if not data:
            return  # the server closed the channel: shut down quietly
        decoder.feed(data)
        for kind, payload in decoder:
            if kind != _batch.REQUEST:
                raise FrameError(f"unexpected frame kind {kind}")
            if initialised and answer_frame is not None:
                sock.sendall(answer_frame(payload, max_item_bytes, max_frame))
                continue
            props, keys, values = _batch.decode_request(payload)
            inputs = Input(props, PairList(zip(keys, values, strict=True)))
            if not initialised:
                initialised = True
                try:
                    if isinstance(engine, PythonEngine):
                        engine.load()
                    else:  # the session options and batchifier are init properties
                        engine.load(props)
                except EntryPointError as exc:
                    sock.sendall(_batch.encode_error(ERROR_LOAD, str(exc)))
                    return
                except Exception as exc:  # noqa: BLE001 — the user's module failed to import
                    log.error("model failed to load:\n%s", traceback.format_exc())
                    kind_name = ERROR_OOM if is_out_of_memory(exc) else ERROR_LOAD
                    sock.sendall(_batch.encode_error(kind_name, f"{type(exc).__name__}: {exc}"))
                    return
                output = engine.initialise(inputs)
            else:
                output = engine.invoke(inputs)
            _send_output(sock, output, max_item_bytes, max_frame)
            _run_finalizers(output)


#: How long after the channel hangs up a worker looks for its server to be gone (the
#: kernel closes a dying process's files before it re-parents its children).
ORPHAN_CHECK_S = 5.0


def _exit_with_the_server(sock: socket.socket, server_pid: int) -> None:
    """End this process as soon as its server is gone, even inside a long ``handle``.

    The loop in ``serve`` sees the channel close only between requests; a server that
    died (SERVING_FAIL_FAST's exit, a SIGKILL) would leave a busy worker running on
    until its handler returns. This thread waits for the peer to hang up without reading
    the channel, then exits the process once it has been re-parented. A server that
    closed the channel on purpose is still our parent and stops us itself.
    """
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLRDHUP)
    poller.poll()
    deadline = time.monotonic() + ORPHAN_CHECK_S
    while time.monotonic() < deadline:
        if os.getppid() != server_pid:
            os._exit(1)
        time.sleep(0.05)


def dial(address: str, secret: str, timeout_s: float) -> socket.socket:
    """The channel of a worker that dials the server: connect, then the secret and a
    newline, which tell the server which waiting worker this is (and that it is one)."""
    host, _, port = address.rpartition(":")
    sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s)
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(secret.encode("ascii") + b"\n")
    return sock


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper(), logging.INFO),
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.connect:
        sock = dial(args.connect, args.secret, args.connect_timeout)
    else:
        sock = socket.socket(fileno=args.fd)
        # The server is our parent (djl/wlm/launch.py starts this process itself).
        threading.Thread(target=_exit_with_the_server, args=(sock, os.getppid()),
                         name="exit-with-the-server", daemon=True).start()
    model_dir = Path(args.model_dir)
    os.chdir(model_dir)
    if args.engine == "Generation":
        # Many requests in flight, answered step by step: a loop of its own.
        from djl.runtime.generation.engine import main_serve

        try:
            main_serve(sock, model_dir, args.device_id, args.num_threads,
                       args.max_frame_bytes)
        except (BrokenPipeError, ConnectionResetError, KeyboardInterrupt):
            pass
        finally:
            sock.close()
        return 0
    engine: PythonEngine | TensorEngine
    if args.engine == "PyTorch":
        from djl.runtime.torch_engine import TorchEngine

        engine = TorchEngine(model_dir, args.entry_point, args.device_id, args.num_threads)
    elif args.engine == "OnnxRuntime":
        from djl.runtime.onnx_engine import OnnxEngine

        engine = OnnxEngine(model_dir, args.entry_point, args.device_id, args.num_threads)
    else:
        engine = PythonEngine(model_dir, args.entry_point, args.device_id)
    try:
        serve(sock, engine, args.max_item_bytes, args.max_frame_bytes)
    except (BrokenPipeError, ConnectionResetError):
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
