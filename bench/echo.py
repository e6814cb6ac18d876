"""End-to-end throughput of the bundled echo model beside the HTTP stack's own ceilings.

Starts real servers on free ports of 127.0.0.1, each in its own process:

* ``bare``: ``bench/bare_server.py``, a QuartTrio route returning a fixed body on
  hypercorn's trio worker, served as djl serves (what Quart costs);
* ``raw-trio`` / ``raw-asyncio``: a plain ASGI app doing the same on hypercorn's trio /
  asyncio worker (hypercorn's own ceiling);
* ``h11-floor`` / ``httptools-floor``: plain trio answering the fixed body, parsing with
  h11 / httptools, no hypercorn and no ASGI (the floors under any trio server);
* ``djl``: ``python -m djl`` on its own front (``http_server=djl``, the default) with no
  start-up models; the script registers ``examples/echo`` over HTTP twice: ``echo`` with
  its own serving.properties (batch_size 8, max_batch_delay 10 ms) and ``echo_b1`` with
  ``batch_size=1`` (no batching delay: the pure per-request overhead), both pinned to one
  worker, as TorchServe's are;
* ``djl-hypercorn`` / ``djl-hypercorn-b1``: the same under ``http_server=hypercorn``, at its
  best setting (``lean_connections``: LeanTCPServer and LeanConfig);
* ``djl-main`` / ``djl-main-b1`` (with ``--main DIR``): the same, from another checkout
  (e.g. main's), the baseline of a change measured in the same run;
* ``djl-cli-b1`` / ``djl-main-cli-b1``: ``echo_b1`` on the app as hypercorn's own CLI
  serves it (``hypercorn -k trio -w 0 'djl.app:create_app()'``), this checkout's and
  --main's;
* ``djl-stock`` / ``djl-stock-b1``: ``djl-hypercorn`` with ``SERVING_LEAN_CONNECTIONS=false``,
  hypercorn's own connection class (what ``djl.http.connection`` saves);
* ``djl-metrics`` / ``djl-metrics-b1``: ``djl`` / ``djl-b1`` with ``SERVING_PROMETHEUS=true``
  (what the metrics cost: ``--targets bare djl djl-metrics djl-b1 djl-metrics-b1``);
* ``torchserve`` / ``torchserve-b1`` (when ``bench/.venv-ts`` exists, ``sh
  bench/setup.sh``): TorchServe 0.12 with ``bench/torchserve_echo.py`` as handler, one
  worker, batch 8 / 10 ms like ``echo`` and batch 1 like ``echo_b1``.

Then, round by round and interleaved (every target at each concurrency, so drift hits
all alike), it warms up and drives ``POST /predictions/<model>`` with wrk for
``--duration`` seconds per point, recording req/s, latency percentiles and the CPU time
per request of the server process (TorchServe: its Java front), its workers and the
client. Prints a table and writes bench/results/echo.json. Every process it started is
stopped on exit, Ctrl-C included.

    .venv/bin/python bench/echo.py            # ~10 min: 3 rounds, 10 s per point
    .venv/bin/python bench/echo.py --quick    # ~1 min
    .venv/bin/python bench/echo.py --main /work/main --targets djl djl-main raw-trio
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    BENCH_DIR,
    REPO,
    LoadSpec,
    Processes,
    Server,
    interleaved,
    load_client,
    load_parser,
    machine_info,
    measure,
    parse_load_args,
    point_line,
    register,
    run_main,
    save_results,
    start_bare,
    start_djl,
    start_torchserve,
    table,
    timer,
    torchserve_archive,
    torchserve_available,
    torchserve_register,
)

ECHO_DIR = REPO / "examples" / "echo"
#: One worker for every echo model: TorchServe's row has one (like with like).
_ONE = {"min_worker": 1, "max_worker": 1}
_B1 = {"batch_size": 1, **_ONE}
#: target → (server, model name, registration overrides); None overrides = the bare route.
TARGETS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "bare": ("bare", "bare", {}),
    "raw-trio": ("raw-trio", "raw", {}),
    "raw-asyncio": ("raw-asyncio", "raw", {}),
    "h11-floor": ("h11-floor", "floor", {}),
    "httptools-floor": ("httptools-floor", "floor", {}),
    "djl": ("djl", "echo", _ONE),
    "djl-b1": ("djl", "echo_b1", _B1),
    "djl-hypercorn": ("djl-hypercorn", "echo", _ONE),
    "djl-hypercorn-b1": ("djl-hypercorn", "echo_b1", _B1),
    "djl-main": ("djl-main", "echo", _ONE),
    "djl-main-b1": ("djl-main", "echo_b1", _B1),
    # The app under hypercorn's own CLI (hypercorn -k trio 'djl.app:create_app()'): this
    # checkout's and --main's.
    "djl-cli-b1": ("djl-cli", "echo_b1", _B1),
    "djl-main-cli-b1": ("djl-main-cli", "echo_b1", _B1),
    "torchserve": ("torchserve", "echo", {"batch_size": 8}),
    "torchserve-b1": ("torchserve", "echo_b1", {"batch_size": 1}),
    # Connection A/B (issue 10.4): hypercorn's own TCPServer instead of LeanTCPServer.
    "djl-stock": ("djl-stock", "echo", _ONE),
    "djl-stock-b1": ("djl-stock", "echo_b1", _B1),
    # GC settings A/B against the defaults (gc_freeze on, gc_thresholds 20000,50,100).
    "djl-nofreeze": ("djl-nofreeze", "echo", _ONE),
    "djl-gcpy": ("djl-gcpy", "echo", _ONE),
    # Metrics A/B (issue 11): the same echo model with SERVING_PROMETHEUS=true.
    "djl-metrics": ("djl-metrics", "echo", _ONE),
    "djl-metrics-b1": ("djl-metrics", "echo_b1", _B1),
}
_HYPERCORN = {"SERVING_HTTP_SERVER": "hypercorn"}
#: djl servers: name → SERVING_* settings.
DJL_SERVERS: dict[str, dict[str, str]] = {
    "djl": {}, "djl-main": {}, "djl-cli": {}, "djl-main-cli": {},
    "djl-hypercorn": _HYPERCORN,
    "djl-stock": {**_HYPERCORN, "SERVING_LEAN_CONNECTIONS": "false"},
    "djl-nofreeze": {"SERVING_GC_FREEZE": "false"},
    "djl-gcpy": {"SERVING_GC_THRESHOLDS": "700,10,10"},
    "djl-metrics": {"SERVING_PROMETHEUS": "true"},
}
DEFAULT_TARGETS = ["bare", "h11-floor", "httptools-floor", "djl", "djl-b1", "djl-hypercorn",
                   "djl-hypercorn-b1", "torchserve", "torchserve-b1"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = load_parser(__doc__, duration=10.0, warmup=2.0, concurrency=[1, 64], rounds=3,
                         quick="~30 s: 1 round of 3 s points", client=True)
    parser.add_argument("--targets", nargs="+", default=DEFAULT_TARGETS, choices=list(TARGETS))
    parser.add_argument("--main", type=Path, help="another checkout for the djl-main rows "
                        "(its djl package runs; default: those rows are skipped)")
    parser.add_argument("--body", default="hello world", help="request body (text/plain)")
    parser.add_argument("--prewarm", type=float, default=20.0,
                        help="seconds of c64 load on each TorchServe target before the "
                        "first round (its JVM compiles its hot path under load)")
    args = parse_load_args(parser, argv, duration=3.0, warmup=1.0, rounds=1, prewarm=0.0)
    if args.main is not None and not any(t.startswith("djl-main") for t in args.targets):
        args.targets += ["djl-main", "djl-main-b1"]
    if args.main is None:
        args.targets = [t for t in args.targets if not t.startswith("djl-main")]
    return args


def rss_mib(pid: int) -> float:
    """Resident memory of a process now (what gc_freeze may cost over a long run)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start_servers(args: argparse.Namespace, procs: Processes,
                  body: bytes) -> dict[str, Server]:
    wanted = {TARGETS[t][0] for t in args.targets}
    servers: dict[str, Server] = {}
    if "bare" in wanted:
        servers["bare"] = start_bare(procs, body)
    for worker in ("trio", "asyncio"):
        if f"raw-{worker}" in wanted:
            servers[f"raw-{worker}"] = start_bare(procs, body, app="raw", worker=worker,
                                                  name=f"raw-{worker}")
    for parser in ("h11", "httptools"):
        if f"{parser}-floor" in wanted:
            servers[f"{parser}-floor"] = start_bare(procs, body, app=parser,
                                                    name=f"{parser}-floor")
    for name, settings in DJL_SERVERS.items():
        if name in wanted:
            servers[name] = start_djl(procs, name=name, extra_env=settings,
                                      source=args.main if name.startswith("djl-main")
                                      else REPO, hypercorn_cli=name.endswith("-cli"))
            for target in args.targets:
                kind, model, overrides = TARGETS[target]
                if kind == name:
                    register(servers[name], ECHO_DIR, model, **overrides)
    if "torchserve" in wanted:
        if torchserve_available(allow_install=False) is None:
            print("TorchServe not installed (sh bench/setup.sh): its row is skipped")
        else:
            store = procs.tmp / "ts-store"
            models = [(TARGETS[t][1], TARGETS[t][2]["batch_size"]) for t in args.targets
                      if TARGETS[t][0] == "torchserve"]
            mars = [torchserve_archive(store, model, BENCH_DIR / "torchserve_echo.py")
                    for model, _ in models]
            servers["torchserve"] = start_torchserve(procs, store)
            for mar, (_, batch_size) in zip(mars, models, strict=True):
                torchserve_register(servers["torchserve"], mar.name, workers=1,
                                    batch_size=batch_size, max_batch_delay_ms=10)
    return servers


def summarise(points: list[dict[str, Any]], targets: list[str],
              concurrencies: list[int]) -> list[dict[str, Any]]:
    """Median per (target, concurrency) across rounds; ratio = median of same-round ratios."""
    rows = []
    for c in concurrencies:
        for target in targets:
            mine = [p for p in points if p["target"] == target and p["concurrency"] == c]
            if not mine:
                continue
            ratios, cpu_ratios = [], []
            for p in mine:
                bare = next((b for b in points if b["target"] == "bare"
                             and b["concurrency"] == c and b["round"] == p["round"]), None)
                if bare and bare["rps"]:
                    ratios.append(p["rps"] / bare["rps"])
                if bare and bare["server_cpu_us_per_req"]:
                    cpu_ratios.append(p["server_cpu_us_per_req"] / bare["server_cpu_us_per_req"])

            def med(key: str, values: list[dict[str, Any]] = mine) -> float:
                return statistics.median(v[key] for v in values)

            rows.append({
                "target": target,
                "concurrency": c,
                "rounds": len(mine),
                "rps": med("rps"),
                "p50_ms": med("p50_ms"),
                "p99_ms": med("p99_ms"),
                "ratio_vs_bare": statistics.median(ratios) if ratios else None,
                "ratios_per_round": ratios,
                "server_cpu_us_per_req": med("server_cpu_us_per_req"),
                "workers_cpu_us_per_req": med("workers_cpu_us_per_req"),
                "client_cpu_us_per_req": med("client_cpu_us_per_req"),
                "server_cpu_vs_bare": statistics.median(cpu_ratios) if cpu_ratios else None,
                "server_cpu_util": med("server_cpu_util"),
                "other_busy_cores": med("other_busy_cores"),
                "server_rss_mib": max(v["server_rss_mib"] for v in mine),
                "errors": sum(v["errors"] + v["non_2xx"] for v in mine),
            })
    return rows


def front_targets(points: list[dict[str, Any]]) -> dict[str, float]:
    """The front issue's echo targets as same-round ratios (median over rounds)."""
    pairs = {
        "djl-b1 server CPU / httptools-floor server CPU (target <= 4)":
            ("djl-b1", "httptools-floor", "server_cpu_us_per_req"),
        "djl server CPU / httptools-floor server CPU":
            ("djl", "httptools-floor", "server_cpu_us_per_req"),
        "djl req/s / torchserve req/s (target >= 3)": ("djl", "torchserve", "rps"),
        "djl-b1 req/s / torchserve-b1 req/s": ("djl-b1", "torchserve-b1", "rps"),
        "djl-b1 req/s / djl-hypercorn-b1 req/s": ("djl-b1", "djl-hypercorn-b1", "rps"),
        "djl-hypercorn-b1 req/s / djl-main-b1 req/s": ("djl-hypercorn-b1", "djl-main-b1",
                                                       "rps"),
        "djl-cli-b1 req/s / djl-main-cli-b1 req/s": ("djl-cli-b1", "djl-main-cli-b1", "rps"),
        "djl-cli-b1 server CPU / djl-main-cli-b1 server CPU":
            ("djl-cli-b1", "djl-main-cli-b1", "server_cpu_us_per_req"),
        "djl-hypercorn-b1 server CPU / httptools-floor server CPU":
            ("djl-hypercorn-b1", "httptools-floor", "server_cpu_us_per_req"),
        # What SERVING_PROMETHEUS=true costs, against the same server with it off.
        "djl-metrics req/s / djl req/s": ("djl-metrics", "djl", "rps"),
        "djl-metrics server CPU / djl server CPU":
            ("djl-metrics", "djl", "server_cpu_us_per_req"),
        "djl-metrics-b1 req/s / djl-b1 req/s": ("djl-metrics-b1", "djl-b1", "rps"),
        "djl-metrics-b1 server CPU / djl-b1 server CPU":
            ("djl-metrics-b1", "djl-b1", "server_cpu_us_per_req"),
    }
    out: dict[str, float] = {}
    for c in sorted({p["concurrency"] for p in points}):
        for label, (mine, other, key) in pairs.items():
            ratios = []
            for p in points:
                if p["target"] != mine or p["concurrency"] != c:
                    continue
                peer = next((q for q in points if q["target"] == other
                             and q["concurrency"] == c and q["round"] == p["round"]), None)
                if peer and peer[key]:
                    ratios.append(p[key] / peer[key])
            if ratios:
                out[f"c{c} {label}"] = statistics.median(ratios)
    return out


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    body = args.body.encode()
    info = machine_info()
    points: list[dict[str, Any]] = []
    notes: list[str] = []
    with Processes() as procs:
        client = load_client(args, procs, notes)
        with timer("start servers and register"):
            servers = start_servers(args, procs, body)
        args.targets = [t for t in args.targets if TARGETS[t][0] in servers]
        for target in args.targets:
            kind, model, _ = TARGETS[target]
            if kind == "torchserve" and args.prewarm > 0:
                with timer(f"prewarm {target} {args.prewarm:g} s"):
                    client.run(LoadSpec(f"{servers[kind].base_url}/predictions/{model}",
                                        body, "text/plain", 64, args.prewarm))
        for round_no, c, target in interleaved(args.rounds, args.concurrency, args.targets):
            kind, model, _ = TARGETS[target]
            server = servers[kind]
            spec = LoadSpec(f"{server.base_url}/predictions/{model}", body,
                            "text/plain", c, args.duration)
            point = measure(client, server, spec, args.warmup)
            point.update(target=target, round=round_no,
                         server_rss_mib=rss_mib(server.front_pid()))
            points.append(point)
            print(f"round {round_no} {point_line(target, point, width=16)}", flush=True)
        client_name = client.name
    rows = summarise(points, args.targets, args.concurrency)
    print()
    print(f"echo bench: {args.rounds} round(s) x {args.duration:g} s per point, "
          f"client {client_name}, nproc {info['nproc']}")
    print(table(
        ["target", "c", "req/s", "p50 ms", "p99 ms", "req/s x bare", "server µs/req",
         "CPU x bare", "workers µs/req", "client µs/req", "RSS MiB", "other load", "errors"],
        [[r["target"], r["concurrency"], r["rps"], r["p50_ms"], r["p99_ms"],
          _ratio(r["ratio_vs_bare"]), r["server_cpu_us_per_req"],
          _ratio(r["server_cpu_vs_bare"]), r["workers_cpu_us_per_req"],
          r["client_cpu_us_per_req"], r["server_rss_mib"], f"{r['other_busy_cores']:.2f}",
          r["errors"]]
         for r in rows],
    ))
    print("x bare: same-round ratio to the bare quart-trio route (median over rounds); "
          "server/workers/client µs/req: CPU time per request; RSS: the server's, "
          "largest over rounds; other load: cores busy with "
          "work that is not ours (noise).")
    targets = front_targets(points)
    for key, value in targets.items():
        print(f"{key}: {value:.2f}")
    for note in notes:
        print(f"NOTE: {note}")
    save_results("echo.json", {
        "bench": "echo",
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "client": client_name,
        "targets": {t: {"server": TARGETS[t][0], "model": TARGETS[t][1],
                        "overrides": TARGETS[t][2]} for t in args.targets},
        "machine": info,
        "summary": rows,
        "targets_same_run": targets,
        "notes": notes,
        "points": points,
    })
    return 0


if __name__ == "__main__":
    run_main(main)
