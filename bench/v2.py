"""The TorchScript MLP through the Open Inference Protocol and DJL's own formats, one run.

examples/mlp's ``Linear(128,256)-ReLU-Linear(256,10)`` (same seed) on djl's PyTorch
engine: one worker, batch 32, ``max_batch_delay`` 10 ms, one torch thread. One request
of 128 float32 four ways, all to the same model:

* ``v2 binary``: ``POST /v2/models/mlp/infer``, the tensor after the JSON
  (``Inference-Header-Content-Length``), the output asked for in binary: what
  ``tritonclient`` sends by default;
* ``v2 JSON``: the same with ``"data": [128 numbers]`` and a JSON answer;
* ``DJL npz``: ``POST /predictions/mlp``, ``tensor/npz`` in and out;
* ``DJL JSON``: a JSON array in, ``{"predictions": ...}`` out.

The script checks the four answer the same numbers, then drives each with wrk
(interleaved per round, so drift hits all alike) and records req/s, p50/p99 and the CPU
per request of the server process and of the worker. The target: v2 binary costs the
server no more CPU per request than the npz path. Writes bench/results/v2.json.

    .venv/bin/python bench/v2.py            # ~1.5 min: 8 s per point, c64
    .venv/bin/python bench/v2.py --quick    # ~40 s
"""

from __future__ import annotations

import argparse
import io
import json
import random
import struct
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    MLP_DESCRIPTION,
    LoadSpec,
    Processes,
    interleaved,
    load_client,
    load_parser,
    machine_info,
    measure,
    mlp_folder,
    parse_load_args,
    point_line,
    register,
    report,
    run_main,
    save_results,
    start_djl,
    table,
    timer,
)

MODEL = "mlp"
PATHS = ("v2 binary", "v2 JSON", "DJL npz", "DJL JSON")


def requests(row: np.ndarray) -> dict[str, tuple[str, bytes, str, tuple[tuple[str, str], ...]]]:
    """path name -> (route, body, content type, extra headers)."""
    header = json.dumps({
        "inputs": [{"name": "x", "shape": [128], "datatype": "FP32",
                    "parameters": {"binary_data_size": row.nbytes}}],
        "outputs": [{"name": "output0", "parameters": {"binary_data": True}}],
    }).encode()
    v2_json = json.dumps({
        "inputs": [{"name": "x", "shape": [128], "datatype": "FP32",
                    "data": [float(v) for v in row]}],
        "outputs": [{"name": "output0", "parameters": {"binary_data": False}}],
    }).encode()
    npz = io.BytesIO()
    np.savez(npz, row)
    infer = f"/v2/models/{MODEL}/infer"
    return {
        "v2 binary": (infer, header + row.tobytes(), "application/octet-stream",
                      (("Inference-Header-Content-Length", str(len(header))),)),
        "v2 JSON": (infer, v2_json, "application/json", ()),
        "DJL npz": (f"/predictions/{MODEL}", npz.getvalue(), "tensor/npz", ()),
        "DJL JSON": (f"/predictions/{MODEL}", json.dumps([float(v) for v in row]).encode(),
                     "application/json", ()),
    }


def answer(name: str, r: httpx.Response) -> np.ndarray:
    r.raise_for_status()
    if name == "v2 binary":
        size = int(r.headers["inference-header-content-length"])
        count = json.loads(r.content[:size])["outputs"][0]["parameters"]["binary_data_size"]
        return np.array(struct.unpack(f"<{count // 4}f", r.content[size:size + count]))
    if name == "v2 JSON":
        return np.array(r.json()["outputs"][0]["data"])
    if name == "DJL npz":
        with np.load(io.BytesIO(r.content)) as f:
            return f[f.files[0]]
    return np.array(r.json()["predictions"])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = load_parser(__doc__, duration=8.0, warmup=2.0, concurrency=[64], rounds=1,
                         quick="~40 s: 3 s points")
    return parse_load_args(parser, argv, duration=3.0, warmup=1.0)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info = machine_info()
    rng = random.Random(0)
    row = np.array([round(rng.uniform(-1, 1), 4) for _ in range(128)], np.float32)
    bodies = requests(row)
    points: list[dict[str, Any]] = []
    notes: list[str] = []
    with Processes() as procs:
        folder = mlp_folder(procs.tmp, MODEL)
        client = load_client(args, procs, notes)
        with timer("start djl"):
            djl = start_djl(procs)
        register(djl, folder, MODEL)
        results = {}
        for name, (route, body, content_type, headers) in bodies.items():
            r = httpx.post(djl.base_url + route, content=body, timeout=60,
                           headers={"content-type": content_type, **dict(headers)})
            results[name] = answer(name, r)
        for name, values in results.items():
            worst = float(np.max(np.abs(values - results["DJL npz"])))
            if worst > 1e-5:
                raise SystemExit(f"{name} answers differently (max |diff| {worst})")
        for round_no, c, name in interleaved(args.rounds, args.concurrency, list(bodies)):
            route, body, content_type, headers = bodies[name]
            spec = LoadSpec(djl.base_url + route, body, content_type, c, args.duration, headers)
            point = measure(client, djl, spec, args.warmup)
            point.update(path=name, round=round_no, body_bytes=len(body))
            points.append(point)
            print(point_line(name, point, width=10), flush=True)
        client_name = client.name
    print()
    print(f"v2: MLP 128-256-10 TorchScript, 1 worker, batch 32, max_batch_delay 10 ms, "
          f"1 torch thread, {args.duration:g} s per point, client {client_name}, "
          f"nproc {info['nproc']}")
    print(table(
        ["path", "c", "body B", "req/s", "p50 ms", "p99 ms", "server µs/req",
         "worker µs/req", "other load", "errors"],
        [[p["path"], p["concurrency"], p["body_bytes"], p["rps"], p["p50_ms"], p["p99_ms"],
          p["server_cpu_us_per_req"], p["workers_cpu_us_per_req"],
          f"{p['other_busy_cores']:.2f}", p["errors"] + p["non_2xx"]] for p in points],
    ))
    ratios = compute_ratios(points)
    report(ratios, notes)
    save_results("v2.json", {
        "bench": "v2",
        "settings": vars(args),
        "client": client_name,
        "model": MLP_DESCRIPTION,
        "machine": info,
        "notes": notes,
        "ratios": ratios,
        "points": points,
    })
    return 0


def compute_ratios(points: list[dict[str, Any]]) -> dict[str, float]:
    """Same-run ratios of CPU per request (medians over rounds), per concurrency."""

    def median(name: str, c: int, key: str) -> float | None:
        values = sorted(p[key] for p in points if p["path"] == name and p["concurrency"] == c)
        return values[len(values) // 2] if values else None

    out: dict[str, float] = {}
    for c in sorted({p["concurrency"] for p in points}):
        for key, label in (("server_cpu_us_per_req", "server"),
                           ("workers_cpu_us_per_req", "worker")):
            npz = median("DJL npz", c, key)
            djl_json = median("DJL JSON", c, key)
            binary = median("v2 binary", c, key)
            v2_json = median("v2 JSON", c, key)
            if npz and binary is not None:
                target = " (target <= 1)" if label == "server" else ""
                out[f"c{c} {label} CPU v2 binary / DJL npz{target}"] = binary / npz
            if djl_json and v2_json is not None:
                out[f"c{c} {label} CPU v2 JSON / DJL JSON"] = v2_json / djl_json
    return out


if __name__ == "__main__":
    run_main(main)
