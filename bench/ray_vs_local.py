"""The MLP of bench/torch_mlp.py on a local worker and on a Ray-placed worker, one run.

One djl server (a subprocess) serves the TorchScript MLP twice: ``mlp_local`` (a local
worker process) and ``mlp_ray`` (``load_on_devices=ray``: one actor on a 1-node Ray
cluster on this machine, which the script starts with ``ray.cluster_utils.Cluster`` and
stops; nothing else's Ray is touched). Same settings as torch_mlp.py: one worker, batch
32, ``max_batch_delay`` 10 ms, one torch thread, a JSON array of 128 floats. Both answer
the same numbers (checked), then wrk drives each at c1 and c64, interleaved per round.

Reported: req/s, p50/p99, CPU per request of djl's server process and of the worker (the
local worker is the server's child; the Ray worker is the actor process, found by the pid
describe lists), of Ray's own processes (GCS, raylet, agents, idle workers: every process
of the cluster but the actor, charged to the Ray row only, since a local worker needs
none of them), and the ratios Ray / local, total CPU per request included. Rounds
interleave: each point measures local then Ray in even rounds, Ray then local in odd
ones; ratios are of the medians over rounds. Writes bench/results/ray.json.

    .venv/bin/python bench/ray_vs_local.py            # ~3 min: 3 rounds of 10 s points
    .venv/bin/python bench/ray_vs_local.py --quick    # ~1 min: 2 rounds of 3 s points
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    MLP_DESCRIPTION,
    LoadSpec,
    Processes,
    cpu_seconds,
    descendants,
    import_ray,
    interleaved,
    load_client,
    load_parser,
    machine_info,
    measure,
    mlp_folder,
    mlp_request_body,
    parse_load_args,
    point_line,
    predictions,
    register,
    report,
    run_main,
    save_results,
    start_djl,
    table,
    timer,
)

MIB = 1024 * 1024


def build_models(root: Path) -> dict[str, Path]:
    return {name: mlp_folder(root, f"mlp_{name}", extra=extra)
            for name, extra in (("local", ""),
                                ("ray", "load_on_devices=ray\noption.ray_num_cpus=1\n"))}


def actor_pid(base_url: str, name: str) -> int:
    r = httpx.get(f"{base_url}/models/{name}", timeout=30)
    workers = r.json()[0]["models"][0]["workerGroups"][0]["workers"]
    return int(workers[0]["node"]["pid"])


def ray_pids(cluster: Any, actor: int) -> set[int]:
    """Every live process of the local cluster but the actor: the daemons the head node
    started (GCS, raylet, agents, log monitor) and what they started (idle workers)."""
    pids: set[int] = set()
    for infos in cluster.head_node.all_processes.values():
        for info in infos:
            pids.add(info.process.pid)
            pids |= descendants(info.process.pid)
    pids.discard(actor)
    return pids


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = load_parser(__doc__, duration=10.0, warmup=3.0, concurrency=[1, 64], rounds=3,
                         quick="2 rounds of 3 s points")
    return parse_load_args(parser, argv, duration=3.0, warmup=1.0, rounds=2)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    Cluster = import_ray().cluster_utils.Cluster  # noqa: N806 — a class

    info = machine_info()
    body = mlp_request_body()
    points: list[dict[str, Any]] = []
    notes: list[str] = []
    with timer("start a 1-node Ray cluster"):
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 2, "include_dashboard": False, "object_store_memory": 100 * MIB})
    try:
        with Processes() as procs:
            folders = build_models(procs.tmp)
            client = load_client(args, procs, notes)
            with timer("start djl"):
                djl = start_djl(procs, extra_env={"SERVING_RAY_ADDRESS": cluster.address})
            register(djl, folders["local"], "mlp_local")
            register(djl, folders["ray"], "mlp_ray")
            pid = actor_pid(djl.base_url, "mlp_ray")
            targets = {"local worker": f"{djl.base_url}/predictions/mlp_local",
                       "Ray worker": f"{djl.base_url}/predictions/mlp_ray"}
            local, remote = (predictions(url, body) for url in targets.values())
            worst = max(abs(a - b) for a, b in zip(local, remote, strict=True))
            if worst > 1e-5:
                raise SystemExit(f"the Ray worker answers differently (max |diff| {worst})")
            for round_no, c, name in interleaved(args.rounds, args.concurrency,
                                                 list(targets)):
                url = targets[name]
                spec = LoadSpec(url, body, "application/json", c, args.duration)
                client.run(LoadSpec(url, body, "application/json", c, args.warmup))
                daemons = ray_pids(cluster, pid)
                actor0 = cpu_seconds(pid)
                daemons0 = sum(cpu_seconds(p) for p in daemons)
                point = measure(client, djl, spec, 0)
                n = max(point["requests"], 1)
                ray_us = (sum(cpu_seconds(p) for p in daemons) - daemons0) / n * 1e6
                # Measured in both rows (the local row shows what an idle cluster
                # burns meanwhile); only the Ray row is charged with it.
                point["ray_daemons_cpu_us_per_req"] = ray_us
                if name == "Ray worker":  # not the server's child: count it here
                    point["workers_cpu_us_per_req"] = (cpu_seconds(pid) - actor0) / n * 1e6
                    point["other_busy_cores"] = max(
                        point["other_busy_cores"] - ray_us * n / 1e6
                        / max(point["seconds"], 1e-9), 0.0)
                point["total_cpu_us_per_req"] = (
                    point["server_cpu_us_per_req"] + point["workers_cpu_us_per_req"]
                    + (ray_us if name == "Ray worker" else 0.0))
                point.update(server=name, round=round_no)
                points.append(point)
                print(f"{point_line(name, point, width=13)}  Ray daemons {ray_us:,.0f} µs/req",
                      flush=True)
            client_name = client.name
    finally:
        cluster.shutdown()
    print()
    print(f"ray: MLP 128-256-10 TorchScript, 1 worker, batch 32, max_batch_delay 10 ms, "
          f"1 torch thread, {args.duration:g} s per point, client {client_name}, "
          f"nproc {info['nproc']}")
    print(table(
        ["worker", "round", "c", "req/s", "p50 ms", "p99 ms", "front µs/req", "worker µs/req",
         "Ray daemons µs/req", "total µs/req", "other load", "errors"],
        [[p["server"], p["round"], p["concurrency"], p["rps"], p["p50_ms"], p["p99_ms"],
          p["server_cpu_us_per_req"], p["workers_cpu_us_per_req"],
          p["ray_daemons_cpu_us_per_req"], p["total_cpu_us_per_req"],
          f"{p['other_busy_cores']:.2f}", p["errors"] + p["non_2xx"]] for p in points],
    ))
    ratios = compute_ratios(points)
    report(ratios, notes)
    save_results("ray.json", {
        "bench": "ray", "settings": vars(args), "client": client_name,
        "model": MLP_DESCRIPTION,
        "cluster": "ray.cluster_utils.Cluster, 1 node (head) on this machine, 2 logical CPUs",
        "machine": info, "notes": notes, "ratios": ratios, "points": points,
    })
    return 0


def compute_ratios(points: list[dict[str, Any]]) -> dict[str, float]:
    """Ray / local per concurrency, from the medians over rounds."""

    def median(server: str, c: int, key: str) -> float | None:
        values = [p[key] for p in points if p["server"] == server and p["concurrency"] == c]
        return statistics.median(values) if values else None

    out: dict[str, float] = {}
    for c in sorted({p["concurrency"] for p in points}):
        for key, label in (("rps", "throughput"), ("p50_ms", "p50"), ("p99_ms", "p99"),
                           ("server_cpu_us_per_req", "front CPU/req"),
                           ("total_cpu_us_per_req", "total CPU/req")):
            local, remote = median("local worker", c, key), median("Ray worker", c, key)
            if local and remote is not None:
                out[f"c{c} {label} Ray / local"] = remote / local
    return out


if __name__ == "__main__":
    run_main(main)
