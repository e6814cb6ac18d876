"""Dynamic batching: throughput of a small torch MLP at batch_size 1, 8 and 32.

The script writes a real model folder into a temp dir (``model.py`` with
``from djl_python import Input, Output`` and a serving.properties): a 256→512→256 MLP
(``torch.set_num_threads(1)``) that takes a JSON list of 256 floats per request, stacks
the batch with ``torch.stack``, runs one forward per batch and splits the rows back with
``batch_index``. It starts ``python -m djl`` on a free port and, for each batch size,
registers the model (one worker, ``max_batch_delay`` 5 ms), drives it with wrk at
concurrency 1, 8, 32 and 64, and unregisters it. A request whose JSON is an object
``{"stats": true}`` answers the model's own counters (calls and items since the last
such request), which gives the batch size the worker really saw.

Prints a table and writes bench/results/batching.json.

    .venv/bin/python bench/batching.py            # ~2.5 min: 10 s per point
    .venv/bin/python bench/batching.py --quick    # ~1 min
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    LoadSpec,
    Processes,
    Server,
    load_client,
    load_parser,
    machine_info,
    measure,
    mlp_request_body,
    parse_load_args,
    register,
    run_main,
    save_results,
    start_djl,
    table,
    timer,
    unregister,
)

MODEL_PY = '''"""Bench model: a 256-512-256 MLP, one forward per batch (by bench/batching.py)."""

import json

import torch

from djl_python import Input, Output

torch.set_num_threads(1)
torch.manual_seed(0)
MODEL = torch.nn.Sequential(
    torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 256)
).eval()
_calls = 0
_items = 0


def handle(inputs: Input) -> Output | None:
    global _calls, _items
    if inputs.is_empty():
        return None  # the init call
    batch = inputs.get_batches()
    outputs = Output()
    outputs.add_property("content-type", "application/json")
    values = [item.get_as_json() for item in batch]
    if len(batch) == 1 and isinstance(values[0], dict):  # {"stats": true}: the counters
        outputs.add(json.dumps({"calls": _calls, "items": _items}).encode(), key="data")
        _calls = _items = 0
        return outputs
    _calls += 1
    _items += len(batch)
    with torch.inference_mode():
        result = MODEL(torch.stack([torch.tensor(v, dtype=torch.float32) for v in values]))
    for i, row in enumerate(result.tolist()):
        # json.dumps (C encoder), not add_as_json: djl_python's indent=2 encoding runs in
        # pure Python (~270 us for 256 floats here) and would swamp the batched forward.
        outputs.add(json.dumps(row).encode(), key="data",
                    batch_index=i if len(batch) > 1 else None)
    return outputs
'''

SERVING_PROPERTIES = """engine=Python
batch_size=1
max_batch_delay=5
minWorkers=1
maxWorkers=1
"""


def write_model(root: Path) -> Path:
    model_dir = root / "mlp"
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "model.py").write_text(MODEL_PY)
    (model_dir / "serving.properties").write_text(SERVING_PROPERTIES)
    return model_dir


def model_stats(server: Server, name: str) -> dict[str, int]:
    response = httpx.post(f"{server.base_url}/predictions/{name}", content=b'{"stats": true}',
                          headers={"content-type": "application/json"}, timeout=30)
    response.raise_for_status()
    return response.json()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = load_parser(__doc__, duration=10.0, warmup=2.0, concurrency=[1, 8, 32, 64],
                         rounds=None, quick="~1 min: 3 s points", client=True)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-batch-delay", type=int, default=5, help="ms")
    return parse_load_args(parser, argv, duration=3.0, warmup=1.0)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info = machine_info()
    body = mlp_request_body(size=256)
    points: list[dict[str, Any]] = []
    notes: list[str] = []
    with Processes() as procs:
        model_dir = write_model(procs.tmp)  # removed once the server has stopped
        client = load_client(args, procs, notes)
        with timer("start djl"):
            server = start_djl(procs)
        for batch_size in args.batch_sizes:
            name = f"mlp_b{batch_size}"
            with timer(f"register {name}"):
                register(server, model_dir, name, batch_size=batch_size,
                         max_batch_delay=args.max_batch_delay, min_worker=1, max_worker=1)
            url = f"{server.base_url}/predictions/{name}"
            for c in args.concurrency:
                spec = LoadSpec(url, body, "application/json", c, args.duration)
                if args.warmup > 0:
                    client.run(LoadSpec(url, body, "application/json", c, args.warmup))
                model_stats(server, name)  # reset the counters
                point = measure(client, server, spec, 0)
                stats = model_stats(server, name)
                point.update(batch_size=batch_size, model_calls=stats["calls"],
                             model_items=stats["items"],
                             mean_batch=stats["items"] / stats["calls"] if stats["calls"] else 0)
                points.append(point)
                print(f"batch_size={batch_size:<3} c={c:<3} {point['rps']:>8,.0f} req/s  "
                      f"p50 {point['p50_ms']:.2f} ms  p99 {point['p99_ms']:.2f} ms  "
                      f"mean batch {point['mean_batch']:.1f}  "
                      f"errors {point['errors'] + point['non_2xx']}", flush=True)
            unregister(server, name)
        client_name = client.name
    print()
    print(f"batching bench: MLP 256-512-256, 1 worker, max_batch_delay {args.max_batch_delay} "
          f"ms, {args.duration:g} s per point, client {client_name}, nproc {info['nproc']}")
    by_key = {(p["batch_size"], p["concurrency"]): p for p in points}
    print(table(
        ["c"] + [f"bs={b} req/s" for b in args.batch_sizes]
        + [f"bs={b} p50/p99 ms" for b in args.batch_sizes]
        + [f"bs={b} batch" for b in args.batch_sizes],
        [[c]
         + [by_key[(b, c)]["rps"] for b in args.batch_sizes]
         + [f"{by_key[(b, c)]['p50_ms']:.1f}/{by_key[(b, c)]['p99_ms']:.1f}"
            for b in args.batch_sizes]
         + [by_key[(b, c)]["mean_batch"] for b in args.batch_sizes]
         for c in args.concurrency],
    ))
    print()
    print(table(
        ["batch_size", "c", "req/s", "server µs/req", "worker µs/req", "client µs/req",
         "other load", "errors"],
        [[p["batch_size"], p["concurrency"], p["rps"], p["server_cpu_us_per_req"],
          p["workers_cpu_us_per_req"], p["client_cpu_us_per_req"],
          f"{p['other_busy_cores']:.2f}", p["errors"] + p["non_2xx"]] for p in points],
    ))
    save_results("batching.json", {
        "bench": "batching",
        "settings": vars(args),
        "client": client_name,
        "model": "MLP Linear(256,512)-ReLU-Linear(512,256), torch.set_num_threads(1)",
        "machine": info,
        "notes": notes,
        "points": points,
    })
    return 0


if __name__ == "__main__":
    run_main(main)
