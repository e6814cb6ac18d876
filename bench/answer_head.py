"""A/B of the answer head, djl/http/answer.py's Python ``answer_head_py`` against the C
``answer_head_c`` (djl/_answer.pxi), in one process, interleaved.

The headers are an echo answer's as the server writes them (codec.output_reply: request
id, the no-cache trio, content-type, content-length) and a Quart answer's; each round
times ``--calls`` heads per implementation (CPU time, process_time), alternating which
goes first. Prints µs per head, the median of same-round differences, and writes
bench/results/answer_head.json. The saving is to be read against a request's CPU in the
server (bench/echo.py, ``djl-b1``, server µs/req).

    .venv/bin/python bench/answer_head.py            # ~10 s
    .venv/bin/python bench/answer_head.py --quick
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_info, write_results  # noqa: E402

from djl import io  # noqa: E402
from djl.config import ServerConfig  # noqa: E402
from djl.http import codec  # noqa: E402
from djl.http.answer import answer_head_c, answer_head_py  # noqa: E402


async def _echo_headers() -> list[tuple[bytes, bytes]]:
    output = io.Output()
    output.add_property("content-type", "text/plain")
    output.add(b"hello world")
    reply = await codec.output_reply(output, codec.random_uuid4(), ServerConfig())
    return reply.headers


def _time(fn, headers, calls: int) -> float:
    start = time.process_time()
    for _ in range(calls):
        fn(200, headers, False)
    return (time.process_time() - start) / calls * 1e6


def main(argv: list[str] | None = None) -> int:
    import trio

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.rounds = 5_000, 1
    cases = {
        "echo answer": trio.run(_echo_headers),
        "quart answer": [(b"content-type", b"application/json"), (b"content-length", b"149"),
                         (b"x-request-id", b"4f0e1c9a-2b7d-4c1e-9a3f-0d2e5b6c7a81"),
                         (b"connection", b"close")],
    }
    results = {}
    for name, headers in cases.items():
        assert answer_head_c(200, list(headers), False)[0][:12] == b"HTTP/1.1 200"
        py, c = [], []
        for round_no in range(args.rounds):
            order = [(answer_head_py, py), (answer_head_c, c)]
            for fn, into in order if round_no % 2 == 0 else reversed(order):
                into.append(_time(fn, headers, args.calls))
        saved = statistics.median(p - q for p, q in zip(py, c, strict=True))
        results[name] = {"headers": len(headers), "python_us": statistics.median(py),
                         "c_us": statistics.median(c), "saved_us_per_head": saved,
                         "python_rounds": py, "c_rounds": c}
        print(f"{name:<13} {len(headers)} headers: python {statistics.median(py):.2f} µs, "
              f"C {statistics.median(c):.2f} µs, saved {saved:.2f} µs per head")
    path = write_results("answer_head.json", {"bench": "answer_head", "settings": vars(args),
                                              "machine": machine_info(), "results": results})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
