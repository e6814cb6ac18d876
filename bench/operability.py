"""What the operability switches cost on the hot path: echo (batch 1) with everything off
(the default), with ``access_log=true``, and with all three error-rate rules set (nothing
trips: the echo never fails), in one run, interleaved round by round.

    .venv/bin/python bench/operability.py [--rounds 3 --duration 8 --concurrency 32]

Prints req/s and server CPU per request per target and writes bench/results/operability.json;
compare ratios within a run only.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    REPO,
    LoadSpec,
    Processes,
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
    start_djl,
)

TARGETS = {
    "default": {},
    "access_log": {"SERVING_ACCESS_LOG": "true"},
    "breaker_rules": {"SERVING_ERROR_RATE_ANY": "1000000/PT1M",
                      "SERVING_ERROR_RATE_WLM": "1000000/PT1M",
                      "SERVING_ERROR_RATE_SERVER": "1000000/PT1M"},
}


def main(argv: list[str] | None = None) -> int:
    parser = load_parser(__doc__, duration=8.0, warmup=1.0, concurrency=[32], rounds=3,
                         quick="1 round of 3 s points")
    args = parse_load_args(parser, argv, duration=3.0, rounds=1)
    info = machine_info()
    notes: list[str] = []
    points = []
    with Processes() as procs:
        client = load_client(args, procs, notes)
        servers = {}
        for name, env in TARGETS.items():
            # The access log must not measure a terminal: the server's log goes to a file.
            servers[name] = server = start_djl(procs, name=name, extra_env=env)
            register(server, REPO / "examples" / "echo", "echo_b1", batch_size="1",
                     min_worker="1", max_worker="1")
        for round_no, c, name in interleaved(args.rounds, args.concurrency, list(TARGETS)):
            server = servers[name]
            spec = LoadSpec(server.base_url + "/predictions/echo_b1", b"x" * 1024,
                            "application/octet-stream", c, args.duration)
            point = measure(client, server, spec, warmup_s=args.warmup)
            points.append(dict(point, target=name, round=round_no))
            print(point_line(name, point, width=14), flush=True)
        client_name = client.name
    print(f"{'target':<14} {'c':>4} {'req/s':>8} {'vs default':>10} {'server µs/req':>14}")
    for c in args.concurrency:
        def median(name: str, key: str, c: int = c) -> float:
            return statistics.median(p[key] for p in points
                                     if p["target"] == name and p["concurrency"] == c)

        base = median("default", "rps")
        for name in TARGETS:
            rps = median(name, "rps")
            print(f"{name:<14} {c:>4} {rps:>8.0f} {rps / base:>10.3f} "
                  f"{median(name, 'server_cpu_us_per_req'):>14.0f}")
    save_results("operability.json", {
        "bench": "operability", "settings": vars(args), "client": client_name,
        "machine": info, "notes": notes, "points": points,
    })
    return 0


if __name__ == "__main__":
    run_main(main)
