"""Server-side CPU per request of djl's hot path, without HTTP, plus a cProfile top-20.

Inside this one trio process it creates the real ``djl.registry.ModelManager``, registers
the bundled echo model (real worker subprocesses), and drives N requests at concurrency
32 through ``manager.invocation.infer`` with Inputs shaped like the ones ``djl.http.codec.to_input``
builds (headers as properties, a fresh request id, the body as content ``data``). Then:

* ``time.process_time()`` of this process / requests = µs of server CPU per request (the
  driver's own share, building the Inputs, is small and included); the workers' CPU is
  read from /proc and reported apart;
* a second pass under cProfile: the top 20 functions by tottime, per request.

Runs the echo model twice: with its serving.properties (batch_size 8, max_batch_delay
10 ms) and with ``batch_size=1`` (every request its own round trip to the worker).
Compare with the ~450 µs/request the HTTP layer alone costs (STACK_NOTES.md).

Then (skip with ``--no-http``) the same yardstick measured here and now: the bare
quart-trio route of bench/bare_server.py and the full djl server (``djl.__main__.
run_server``, echo with batch_size=1), each served in this process by hypercorn's trio
worker and driven by wrk at concurrency 32: server CPU per request, and the cProfile time
per request split by layer (djl, quart, hypercorn, h11, trio, werkzeug, stdlib, ...).
The difference djl − bare is what djl adds per request over HTTP. Writes
bench/results/hotpath.json.

    .venv/bin/python bench/profile_hotpath.py            # 20,000 requests per config
    .venv/bin/python bench/profile_hotpath.py --quick    # 3,000
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    LUA,
    REPO,
    cpu_seconds,
    descendants,
    ensure_wrk,
    free_port,
    machine_info,
    run_main,
    save_results,
    table,
)

from djl.config import Address, RegisterParams, ServerConfig  # noqa: E402
from djl.io import Input, PairList  # noqa: E402
from djl.registry import ModelManager, Workflow  # noqa: E402

ECHO_DIR = REPO / "examples" / "echo"
HTTP_LAYER_US = 450  # STACK_NOTES.md: quart-trio on hypercorn's trio worker, per request
#: label → (register parameters, server settings). The pipelining pair isolates that one
#: setting in the same run.
CONFIGS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "echo (serving.properties: batch 8, delay 10 ms)": ({}, {}),
    "echo batch_size=1": ({"batch_size": 1}, {}),
    "echo batch_size=1, pipelining off": ({"batch_size": 1}, {"pipeline_depth": 1}),
}


def make_input(body: bytes) -> Input:
    """What codec.to_input builds for ``curl -H 'content-type: text/plain' -d BODY``."""
    properties = {
        "host": "127.0.0.1:8080",
        "user-agent": "bench",
        "accept": "*/*",
        "content-type": "text/plain",
        "content-length": str(len(body)),
        "requestId": str(uuid.uuid4()),
    }
    return Input(properties, PairList([("data", body)]))


async def drive(manager: ModelManager, workflow: Workflow, total: int, concurrency: int,
                body: bytes) -> int:
    """``total`` requests from ``concurrency`` tasks; returns the number answered 200."""
    remaining = total
    ok = 0

    async def client() -> None:
        nonlocal remaining, ok
        while remaining > 0:
            remaining -= 1
            output = await manager.invocation.infer(workflow, make_input(body))
            if output.code == 200 and output.get_data_item() == body:
                ok += 1

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(client)
    return ok


def workers_cpu() -> float:
    return sum(cpu_seconds(pid) for pid in descendants(os.getpid()))


async def run_config(label: str, setup: tuple[dict[str, Any], dict[str, Any]],
                     args: argparse.Namespace, body: bytes) -> dict[str, Any]:
    overrides, settings = setup
    config = ServerConfig(model_server_home=Path(os.getcwd()), **settings)
    manager = ModelManager(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        try:
            name = "echo_b1" if overrides.get("batch_size") == 1 else "echo"
            params = RegisterParams(url=f"file:{ECHO_DIR}/", model_name=name, **overrides)
            await manager.register_model(params)
            workflow = manager.find_workflow(name, None)
            await drive(manager, workflow, max(args.requests // 10, 100), args.concurrency,
                        body)

            # Pass 1: CPU per request, no profiler.
            workers0 = workers_cpu()
            cpu0, wall0 = time.process_time(), time.perf_counter()
            ok = await drive(manager, workflow, args.requests, args.concurrency, body)
            cpu1, wall1 = time.process_time(), time.perf_counter()
            workers1 = workers_cpu()
            n = args.requests
            result: dict[str, Any] = {
                "config": label,
                "overrides": overrides,
                "settings": settings,
                "requests": n,
                "ok": ok,
                "concurrency": args.concurrency,
                "wall_s": wall1 - wall0,
                "req_per_s": n / (wall1 - wall0),
                "server_cpu_us_per_req": (cpu1 - cpu0) / n * 1e6,
                "workers_cpu_us_per_req": max(workers1 - workers0, 0.0) / n * 1e6,
                "server_cpu_util": (cpu1 - cpu0) / (wall1 - wall0),
                "worker_processes": len(descendants(os.getpid())),
            }
            result["vs_http_layer"] = result["server_cpu_us_per_req"] / HTTP_LAYER_US

            # Pass 2: the same under cProfile.
            profiler = cProfile.Profile()
            n2 = args.profile_requests
            cpu0 = time.process_time()
            profiler.enable()
            await drive(manager, workflow, n2, args.concurrency, body)
            profiler.disable()
            result["profiled_cpu_us_per_req"] = (time.process_time() - cpu0) / n2 * 1e6
            result["profile_top"] = top_entries(profiler, n2, args.top)
            result["profile_layers_us_per_req"] = layers(profiler, n2)
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(args.top)
            result["profile_text"] = text.getvalue()
        finally:
            with trio.CancelScope(shield=True):
                await manager.aclose(1.0)
            nursery.cancel_scope.cancel()
    return result


LAYERS = (
    ("/djl/", "djl"), ("/djl_python/", "djl"), ("/bench/", "bench driver"),
    ("/quart_trio/", "quart-trio"), ("/quart/", "quart"), ("/hypercorn/", "hypercorn"),
    ("/h11/", "h11"), ("/werkzeug/", "werkzeug"), ("/trio/", "trio"), ("/outcome/", "trio"),
    ("/httpx/", "httpx"), ("/anyio/", "httpx"), ("/httpcore/", "httpx"),
)


def layer_of(filename: str) -> str:
    for marker, name in LAYERS:
        if marker in filename:
            return name
    if filename.startswith("~") or filename.startswith("<"):
        return "builtins (C)"
    return "stdlib"


def layers(profiler: cProfile.Profile, requests: int) -> dict[str, float]:
    """Profiled tottime per request (µs), summed by layer, largest first."""
    totals: dict[str, float] = {}
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    for (filename, _line, _func), (_cc, _nc, tt, _ct, _callers) in stats.items():
        key = layer_of(filename)
        totals[key] = totals.get(key, 0.0) + tt / requests * 1e6
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


async def http_pass(kind: str, args: argparse.Namespace, body: bytes, wrk: str
                    ) -> dict[str, Any]:
    """Serve ``kind`` (bare or djl) in this process; wrk drives it from a subprocess."""
    import httpx
    from hypercorn.trio import serve

    from djl.__main__ import run_server

    port = free_port()
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        if kind == "bare":
            import bare_server

            config = bare_server.config(port)
            await nursery.start(lambda task_status: serve(
                bare_server.quart_app(body), config, shutdown_trigger=stop.wait,
                task_status=task_status))
            path = "/predictions/bare"
        else:
            address = Address("http", "127.0.0.1", port)
            server_config = ServerConfig(inference_address=address, management_address=address,
                                         model_server_home=Path(os.getcwd()))
            await nursery.start(lambda task_status: run_server(
                server_config, task_status=task_status, shutdown=stop))
            async with httpx.AsyncClient() as http:
                response = await http.post(
                    f"http://127.0.0.1:{port}/models",
                    params={"url": f"file:{ECHO_DIR}/", "model_name": "echo", "batch_size": 1},
                    timeout=120)
                response.raise_for_status()
            path = "/predictions/echo"
        url = f"http://127.0.0.1:{port}{path}"
        try:
            await run_wrk(wrk, url, body, args.concurrency, args.http_warmup)
            cpu0 = time.process_time()
            stats = await run_wrk(wrk, url, body, args.concurrency, args.http_duration)
            cpu_us = (time.process_time() - cpu0) / stats["requests"] * 1e6
            profiler = cProfile.Profile()
            profiler.enable()
            pstats_run = await run_wrk(wrk, url, body, args.concurrency, args.http_duration)
            profiler.disable()
            n2 = pstats_run["requests"]
        finally:
            stop.set()
    return {
        "server": kind,
        "concurrency": args.concurrency,
        "requests": stats["requests"],
        "req_per_s": stats["requests"] / stats["seconds"],
        "non_2xx_or_errors": stats["bad"] + pstats_run["bad"],
        "server_cpu_us_per_req": cpu_us,
        "profiled_requests": n2,
        "profiled_req_per_s": n2 / pstats_run["seconds"],
        "profile_layers_us_per_req": layers(profiler, n2),
        "profile_top": top_entries(profiler, n2, args.top),
        "profile_top_djl": top_entries(profiler, n2, args.top, only="djl"),
    }


async def run_wrk(wrk: str, url: str, body: bytes, concurrency: int, seconds: float
                  ) -> dict[str, Any]:
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    script = tmp / f"djl-hotpath-{os.getpid()}.lua"
    body_file = tmp / f"djl-hotpath-{os.getpid()}.body"
    script.write_text(LUA)
    body_file.write_bytes(body)
    try:
        result = await trio.run_process(
            [wrk, "-t", "1", "-c", str(concurrency), "-d", f"{max(1, round(seconds))}s",
             "--timeout", "30s", "-s", str(script), url],
            capture_stdout=True, capture_stderr=True,
            env={**os.environ, "BENCH_BODY_FILE": str(body_file),
                 "BENCH_CONTENT_TYPE": "text/plain"})
    finally:
        script.unlink(missing_ok=True)
        body_file.unlink(missing_ok=True)
    line = next(x for x in result.stdout.decode().splitlines() if x.startswith("BENCHJSON "))
    raw = json.loads(line[len("BENCHJSON "):])
    bad = raw["status"] + raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    return {"requests": max(raw["requests"], 1), "seconds": raw["duration_us"] / 1e6,
            "bad": bad}


def top_entries(profiler: cProfile.Profile, requests: int, limit: int,
                only: str | None = None) -> list[dict[str, Any]]:
    """The ``limit`` largest functions by tottime (of one layer when ``only`` is given)."""
    stats = pstats.Stats(profiler)
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    rows = []
    for (filename, line, func), (cc, nc, tt, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        if only is not None and layer_of(filename) != only:
            continue
        rows.append({
            "function": f"{_short(filename)}:{line}({func})",
            "ncalls": nc,
            "primitive_calls": cc,
            "tottime_s": tt,
            "cumtime_s": ct,
            "tottime_us_per_req": tt / requests * 1e6,
            "calls_per_req": nc / requests,
            "share_of_total": tt / total if total else 0.0,
        })
    rows.sort(key=lambda r: r["tottime_s"], reverse=True)
    return rows[:limit]


def _short(filename: str) -> str:
    for marker in ("site-packages/", str(REPO) + "/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="measured requests")
    parser.add_argument("--profile-requests", type=int, default=5_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--body", default="hello world")
    parser.add_argument("--no-http", dest="http", action="store_false",
                        help="skip the in-process HTTP comparison (needs wrk)")
    parser.add_argument("--http-duration", type=float, default=8.0, help="s per HTTP pass")
    parser.add_argument("--http-warmup", type=float, default=2.0)
    parser.add_argument("--quick", action="store_true", help="3,000 requests per config")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.profile_requests = 3_000, 2_000
        args.http_duration, args.http_warmup = 3.0, 1.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info = machine_info()
    body = args.body.encode()
    results = []
    for label, setup in CONFIGS.items():
        result = trio.run(run_config, label, setup, args, body)
        results.append(result)
        print(f"\n== {label}: top {args.top} by tottime (cProfile, {args.profile_requests} "
              f"requests; µs/req = tottime / requests)")
        print(table(
            ["function", "calls/req", "tottime µs/req", "cumtime s", "share"],
            [[r["function"][-70:], f"{r['calls_per_req']:.2f}", r["tottime_us_per_req"],
              f"{r['cumtime_s']:.3f}", f"{r['share_of_total']:.1%}"]
             for r in result["profile_top"]],
        ))
    http_results = []
    wrk = ensure_wrk(allow_install=True) if args.http else None
    if args.http and wrk is None:
        print("\nNOTE: wrk unavailable: skipping the in-process HTTP comparison")
    if wrk:
        for kind in ("bare", "djl"):
            result = trio.run(http_pass, kind, args, body, wrk)
            http_results.append(result)
        print(f"\n== HTTP, in process, wrk -c{args.concurrency}: top {args.top} by tottime "
              "of the djl server (echo batch_size=1)")
        djl_http = http_results[-1]
        print(table(
            ["function", "calls/req", "tottime µs/req", "share"],
            [[r["function"][-70:], f"{r['calls_per_req']:.2f}", r["tottime_us_per_req"],
              f"{r['share_of_total']:.1%}"] for r in djl_http["profile_top"]],
        ))
        print("\n== the same profile, djl's own functions only")
        print(table(
            ["function", "calls/req", "tottime µs/req", "cumtime µs/req", "share"],
            [[r["function"][-70:], f"{r['calls_per_req']:.2f}", r["tottime_us_per_req"],
              r["cumtime_s"] / djl_http["profiled_requests"] * 1e6,
              f"{r['share_of_total']:.1%}"] for r in djl_http["profile_top_djl"]],
        ))
    print("\n== profiled time per request by layer (µs/req, cProfile tottime; inflated by "
          "the profiler, compare the shares)")
    columns = [(r["config"], r["profile_layers_us_per_req"]) for r in results] + [
        (f"HTTP {r['server']}", r["profile_layers_us_per_req"]) for r in http_results]
    names = sorted({k for _, lay in columns for k in lay},
                   key=lambda k: -max(lay.get(k, 0.0) for _, lay in columns))
    print(table(
        ["layer"] + [label[:24] for label, _ in columns],
        [[name] + [lay.get(name, 0.0) for _, lay in columns] for name in names]
        + [["total"] + [sum(lay.values()) for _, lay in columns]],
    ))
    if http_results:
        bare, djl = http_results
        print(f"\nHTTP in process, c={args.concurrency}: bare "
              f"{bare['server_cpu_us_per_req']:.0f} µs/req ({bare['req_per_s']:,.0f} req/s), "
              f"djl echo b1 {djl['server_cpu_us_per_req']:.0f} µs/req "
              f"({djl['req_per_s']:,.0f} req/s): djl adds "
              f"{djl['server_cpu_us_per_req'] - bare['server_cpu_us_per_req']:.0f} µs/req "
              f"(x{djl['server_cpu_us_per_req'] / bare['server_cpu_us_per_req']:.2f})")
    print(f"\nhot path without HTTP: {args.requests} requests per config at concurrency "
          f"{args.concurrency}, nproc {info['nproc']}")
    print(table(
        ["config", "req/s", "server µs/req", "x HTTP layer (450 µs)", "workers µs/req",
         "profiled µs/req", "ok"],
        [[r["config"], r["req_per_s"], r["server_cpu_us_per_req"], f"{r['vs_http_layer']:.2f}",
          r["workers_cpu_us_per_req"], r["profiled_cpu_us_per_req"], r["ok"]]
         for r in results],
    ))
    # The cProfile text is long: keep it in the JSON only.
    save_results("hotpath.json", {
        "bench": "hotpath",
        "settings": vars(args),
        "http_layer_us_reference": HTTP_LAYER_US,
        "machine": info,
        "results": results,
        "http": http_results,
    })
    return 0


if __name__ == "__main__":
    run_main(main)
