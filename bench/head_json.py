"""A/B of the request-head lookups and the JSON bodies, Python against C, in one process,
interleaved (like bench/answer_head.py):

* ``scan_head``: djl/http/h1_intake.py's ``scan_head_py`` against ``scan_head_c``
  (djl/_head.pxi), the server's one pass over a request's headers (length, type,
  coding, expect, request id);
* ``request_properties``: djl/http/codec.py's ``request_properties_py`` against
  ``request_properties`` (C: ``request_properties_c``), a request's headers → its
  Input properties (spec §3.3);
* ``render_json``: ``render_json_py`` (json.dumps, whose indent runs the pure-Python
  encoder) against ``render_json`` (C: ``render_json_c``, djl/_json.pxi) for an error
  body and a /ping health body.

Headers: wrk's (3) and a curl-like client's (7). Each round times ``--calls`` calls per
side (CPU time), alternating which goes first; prints µs per call, the median of
same-round savings, and writes bench/results/head_json.json. Read a saving against a
request's CPU in the server (bench/echo.py ``djl-b1`` server µs/req).

    .venv/bin/python bench/head_json.py          # ~20 s
    .venv/bin/python bench/head_json.py --quick
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_info, write_results  # noqa: E402

from djl.config import ServerConfig  # noqa: E402
from djl.errors import BadRequest  # noqa: E402
from djl.http import codec  # noqa: E402
from djl.http.h1_intake import scan_head_c, scan_head_py  # noqa: E402

WRK = [(b"host", b"127.0.0.1:8080"), (b"content-type", b"text/plain"),
       (b"content-length", b"11")]
CURL = [(b"host", b"127.0.0.1:8080"), (b"user-agent", b"curl/8.5.0"), (b"accept", b"*/*"),
        (b"content-type", b"application/json"), (b"content-length", b"27"),
        (b"accept-encoding", b"gzip, deflate"), (b"connection", b"keep-alive")]


def cases() -> dict[str, tuple[Callable[[], Any], Callable[[], Any]]]:
    config = ServerConfig()
    error = codec.error_body(BadRequest("Parameter model_name is required."), 400)
    health = codec.health_body({"echo": "Healthy"})
    out: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {}
    for label, headers in (("wrk", WRK), ("curl", CURL)):
        out[f"scan_head {label} ({len(headers)} headers)"] = (
            lambda h=headers: scan_head_py(h, b"x-request-id"),
            lambda h=headers: scan_head_c(h, b"x-request-id"))
        out[f"request_properties {label} ({len(headers)} headers)"] = (
            lambda h=headers: codec.request_properties_py(h, config),
            lambda h=headers: codec.request_properties(h, config))
    out["render_json error body"] = (lambda: codec.render_json_py(error),
                                     lambda: codec.render_json(error))
    out["render_json /ping body"] = (lambda: codec.render_json_py(health),
                                     lambda: codec.render_json(health))
    return out


def _time(fn: Callable[[], Any], calls: int) -> float:
    start = time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - start) / calls * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.rounds = 2_000, 1
    results = {}
    for name, (py_fn, c_fn) in cases().items():
        assert py_fn() == c_fn(), name
        py, c = [], []
        for round_no in range(args.rounds):
            order = [(py_fn, py), (c_fn, c)]
            for fn, into in order if round_no % 2 == 0 else reversed(order):
                into.append(_time(fn, args.calls))
        saved = statistics.median(p - q for p, q in zip(py, c, strict=True))
        results[name] = {"python_us": statistics.median(py), "c_us": statistics.median(c),
                         "saved_us_per_call": saved, "python_rounds": py, "c_rounds": c}
        print(f"{name:<38} python {statistics.median(py):6.2f} µs  C {statistics.median(c):6.2f}"
              f" µs  saved {saved:6.2f} µs", flush=True)
    path = write_results("head_json.json", {"bench": "head_json", "settings": vars(args),
                                            "machine": machine_info(), "results": results})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
