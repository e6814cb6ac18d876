"""What the operability switches cost on the hot path: echo (batch 1) with everything off
(the default), with ``access_log=true``, and with all three error-rate rules set (nothing
trips: the echo never fails), in one run, interleaved round by round.

    .venv/bin/python bench/operability.py [--rounds 3 --duration 8 --concurrency 32]

Prints req/s and server CPU per request per target and writes bench/results/operability.json;
compare ratios within a run only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    REPO,
    Client,
    LoadSpec,
    Processes,
    ensure_wrk,
    machine_info,
    measure,
    register,
    start_djl,
    write_results,
)

TARGETS = {
    "default": {},
    "access_log": {"SERVING_ACCESS_LOG": "true"},
    "breaker_rules": {"SERVING_ERROR_RATE_ANY": "1000000/PT1M",
                      "SERVING_ERROR_RATE_WLM": "1000000/PT1M",
                      "SERVING_ERROR_RATE_SERVER": "1000000/PT1M"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    info = machine_info()
    with Processes() as procs:
        client = Client(ensure_wrk(allow_install=True), threads=1, tmp=procs.tmp)
        servers = {}
        for name, env in TARGETS.items():
            # The access log must not measure a terminal: the server's log goes to a file.
            servers[name] = server = start_djl(procs, name=name, extra_env=env)
            register(server, REPO / "examples" / "echo", "echo_b1", batch_size="1",
                     min_worker="1", max_worker="1")
        results: dict[str, list[dict]] = {name: [] for name in TARGETS}
        for _ in range(args.rounds):
            for name, server in servers.items():
                spec = LoadSpec(server.base_url + "/predictions/echo_b1", b"x" * 1024,
                                "application/octet-stream", args.concurrency, args.duration)
                results[name].append(measure(client, server, spec, warmup_s=1.0))
        base = statistics.median(r["rps"] for r in results["default"])
        print(f"{'target':<14} {'req/s':>8} {'vs default':>10} {'server µs/req':>14}")
        for name, runs in results.items():
            rps = statistics.median(r["rps"] for r in runs)
            cpu = statistics.median(r["server_cpu_us_per_req"] for r in runs)
            print(f"{name:<14} {rps:>8.0f} {rps / base:>10.3f} {cpu:>14.0f}")
        client_name = client.name
    path = write_results("operability.json", {
        "bench": "operability", "settings": vars(args), "client": client_name,
        "machine": info, "points": [dict(r, target=name, round=i) for name, runs in
                                    results.items() for i, r in enumerate(runs)],
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
