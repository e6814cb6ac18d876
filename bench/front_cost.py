"""The server process's cost per request in counts that do not move with the machine's
load: system calls and context switches (``perf stat`` software events), and with
``--callgrind`` user-space instructions (valgrind callgrind, the server run under it).

On a shared 2-core box the CPU time per request of bench/echo.py swings with the other
users' load; these counts do not, so an A/B of the front's code reads here (and the
req/s-level claims still come from bench/echo.py). Targets:

* ``httptools-floor``: bench/bare_server.py's trio + httptools echo (the floor);
* ``djl-b1``: ``python -m djl`` with the echo model at batch size 1, one worker;
* ``djl-main-b1`` (``--main DIR``): the same from another checkout (the baseline).

Each drives ``POST /predictions/<model>`` with wrk at ``--concurrency`` for
``--duration`` seconds after a warm-up, counting what the server process (all its
threads; not the model's worker processes) did meanwhile. Under callgrind the server
runs ~50x slower, so it is saturated whatever the client does: instructions per request
are those of a busy front. Writes bench/results/front_cost.json.

    .venv/bin/python bench/front_cost.py                       # perf counts, ~1 min
    .venv/bin/python bench/front_cost.py --callgrind           # + instructions, ~4 min
    .venv/bin/python bench/front_cost.py --main /work/main --callgrind
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    BENCH_DIR,
    PYTHON,
    REPO,
    Client,
    LoadSpec,
    Processes,
    Server,
    ensure_wrk,
    free_port,
    machine_info,
    register,
    table,
    write_results,
)

ECHO_DIR = REPO / "examples" / "echo"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--callgrind", action="store_true",
                        help="also count user-space instructions (valgrind callgrind)")
    parser.add_argument("--no-perf", action="store_true", help="callgrind only")
    parser.add_argument("--main", type=Path, help="another checkout: the djl-main-b1 row")
    parser.add_argument("--targets", nargs="+",
                        default=["httptools-floor", "djl-b1", "djl-main-b1"])
    parser.add_argument("--out", default="front_cost.json")
    args = parser.parse_args(argv)
    if args.main is None:
        args.targets = [t for t in args.targets if t != "djl-main-b1"]
    return args


def _valgrind(callgrind_dir: Path, name: str) -> list[str]:
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--trace-children=no",
            f"--callgrind-out-file={callgrind_dir / name}.%p"]


def start(procs: Processes, target: str, args: argparse.Namespace,
          callgrind_dir: Path | None) -> tuple[Server, str]:
    """The server of ``target`` and its URL to load."""
    prefix = _valgrind(callgrind_dir, target) if callgrind_dir is not None else []
    timeout = 600.0 if prefix else 60.0
    port = free_port()
    if target == "httptools-floor":
        body_file = procs.tmp / "floor_body"
        body_file.write_bytes(b"hello world")
        server = procs.start(target, [*prefix, PYTHON, str(BENCH_DIR / "bare_server.py"),
                                      "--port", str(port), "--body-file", str(body_file),
                                      "--app", "httptools"], port=port, timeout_s=timeout)
        return server, f"{server.base_url}/predictions/floor"
    source = args.main if target == "djl-main-b1" else REPO
    address = f"http://127.0.0.1:{port}"
    env = {"SERVING_INFERENCE_ADDRESS": address, "SERVING_MANAGEMENT_ADDRESS": address,
           "SERVING_LOAD_MODELS": "NONE", "MODEL_SERVER_HOME": str(procs.tmp),
           "DJL_CACHE_DIR": str(procs.tmp / "cache"), "PYTHONPATH": str(source)}
    server = procs.start(target, [*prefix, PYTHON, "-m", "djl"], env, port=port,
                         timeout_s=timeout, cwd=source)
    register(server, ECHO_DIR, "echo_b1", batch_size=1, min_worker=1, max_worker=1)
    return server, f"{server.base_url}/predictions/echo_b1"


def perf_counts(pid: int, run: Any) -> tuple[dict[str, float], Any]:
    """(event → count over ``run()``, run's result) for the process ``pid``."""
    out = Path(f"/tmp/front_cost_perf.{os.getpid()}.txt")
    events = ["raw_syscalls:sys_enter", "context-switches", "task-clock"]
    perf = subprocess.Popen(["perf", "stat", "-x", ",", "-o", str(out), "-e",
                             ",".join(events), "-p", str(pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    try:
        result = run()
    finally:
        perf.send_signal(2)
        perf.wait(30)
    counts: dict[str, float] = {}
    for line in out.read_text().splitlines():
        parts = line.split(",")
        if len(parts) > 2 and parts[2] in events:
            try:
                counts[parts[2]] = float(parts[0])
            except ValueError:
                pass
    out.unlink(missing_ok=True)
    return counts, result


def callgrind_ir(server: Server, callgrind_dir: Path, run: Any) -> tuple[float, Any]:
    """(instructions the server ran during ``run()``, its result)."""
    control = ["callgrind_control"]
    pid = str(server.pid)
    subprocess.run([*control, "-z", pid], check=True, capture_output=True)
    subprocess.run([*control, "-i", "on", pid], check=True, capture_output=True)
    try:
        result = run()
    finally:
        subprocess.run([*control, "-i", "off", pid], check=True, capture_output=True)
    before = set(callgrind_dir.iterdir())
    subprocess.run([*control, "-d", pid], check=True, capture_output=True)
    deadline = time.monotonic() + 60
    while True:
        new = set(callgrind_dir.iterdir()) - before
        dumps = [p for p in new if p.name.startswith(server.name)]
        text = dumps[0].read_text(errors="replace") if dumps else ""
        match = re.search(r"^totals: (\d+)", text, re.M)
        if match:
            return float(match.group(1)), result
        if time.monotonic() > deadline:
            raise RuntimeError("callgrind wrote no dump")
        time.sleep(0.5)


def measure(client: Client, server: Server, url: str, args: argparse.Namespace,
            callgrind_dir: Path | None) -> dict[str, Any]:
    spec = LoadSpec(url, b"hello world", "text/plain", args.concurrency, args.duration)
    client.run(LoadSpec(url, spec.body, spec.content_type, spec.concurrency, args.warmup))
    if callgrind_dir is not None:
        ir, result = callgrind_ir(server, callgrind_dir, lambda: client.run(spec))
        n = max(result["requests"], 1)
        return {"requests": result["requests"], "rps": result["rps"],
                "instructions_per_req": ir / n, "errors": result["errors"] + result["non_2xx"]}
    counts, result = perf_counts(server.pid, lambda: client.run(spec))
    n = max(result["requests"], 1)
    return {"requests": result["requests"], "rps": result["rps"],
            "syscalls_per_req": counts.get("raw_syscalls:sys_enter", 0.0) / n,
            "context_switches_per_req": counts.get("context-switches", 0.0) / n,
            "cpu_us_per_req": counts.get("task-clock", 0.0) * 1e3 / n,  # perf: msec
            "errors": result["errors"] + result["non_2xx"]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = ensure_wrk(allow_install=True)
    if wrk is None or shutil.which("perf") is None:
        raise SystemExit("front_cost needs wrk and perf")
    if args.callgrind and shutil.which("valgrind") is None:
        raise SystemExit("--callgrind needs valgrind")
    info = machine_info()
    rows: list[dict[str, Any]] = []
    with Processes() as procs:
        client = Client(wrk, threads=1, tmp=procs.tmp)
        modes = [] if args.no_perf else ["perf"]
        for mode in [*modes, *(["callgrind"] if args.callgrind else [])]:
            grind = procs.tmp / "callgrind" if mode == "callgrind" else None
            if grind is not None:
                grind.mkdir(exist_ok=True)
            servers = {t: start(procs, t, args, grind) for t in args.targets}
            for round_no in range(args.rounds):
                for target, (server, url) in servers.items():
                    row = measure(client, server, url, args, grind)
                    row.update(target=target, mode=mode, round=round_no,
                               load=os.getloadavg()[0])
                    rows.append(row)
                    print(row, flush=True)
            for server, _ in servers.values():
                procs.stop(server)
    keys = ["syscalls_per_req", "context_switches_per_req", "cpu_us_per_req",
            "instructions_per_req"]
    print(table(["target", "mode", "round", "req/s", *keys],
                [[r["target"], r["mode"], r["round"], r["rps"],
                  *[r.get(k, "-") for k in keys]] for r in rows]))
    path = write_results(args.out, {"bench": "front_cost", "settings": {
        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": info, "rows": rows})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
