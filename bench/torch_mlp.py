"""A batched MLP seven ways, in one run: djl's PyTorch engine on TorchScript, on djl's own
front (``http_server=djl``, the default) and under ``http_server=hypercorn`` (its best
setting, LeanTCPServer), and on a ``torch.export`` program (``.pt2``), djl's ONNX Runtime
engine, the TorchScript model as a plain ``model.py`` handler on djl, and TorchServe 0.12
serving the TorchScript file and the same ``.onnx`` (its BaseHandler's ONNX session).

The model is examples/mlp's ``Linear(128,256)-ReLU-Linear(256,10)`` (same seed) in each
form (examples/mlp/build.py), written into a temp folder. Every server gets one worker,
batch 32, ``max_batch_delay`` 10 ms and one intra-op thread; the request is a JSON array of
128 floats. The script checks that all answer the same numbers (the ``.pt2`` within 1e-5
of TorchScript), then drives each with wrk at c1 and c64 (interleaved per round, so drift
hits all alike) and records req/s, p50/p99, and the CPU per request of the HTTP front
(djl's server process, TorchServe's Java frontend) and of the workers.

Prints a table and the ratios the PyTorch engine issue sets targets for, and writes
bench/results/torch_mlp.json. TorchServe comes from bench/.venv-ts (``sh bench/setup.sh``);
without it its rows are skipped and the output says so.

    .venv/bin/python bench/torch_mlp.py            # ~2.5 min: 10 s per point
    .venv/bin/python bench/torch_mlp.py --quick    # ~1 min
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
    MLP_SETTINGS,
    LoadSpec,
    Processes,
    Server,
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
    start_torchserve,
    table,
    timer,
    torchserve_archive,
    torchserve_available,
    torchserve_register,
)

HYPERCORN_ROW = "djl engine, hypercorn"

#: --targets name -> the row it measures.
ROWS = {
    "engine": "djl PyTorch engine",
    "pt2": "djl .pt2 engine",
    "onnx": "djl ONNX engine",
    "hypercorn": HYPERCORN_ROW,
    "handler": "djl model.py handler",
    "torchserve": "TorchServe 0.12",
    "torchserve-onnx": "TorchServe 0.12 ONNX",
}

#: The same model behind djl's Python engine: what a user writes without the engine.
MODEL_PY = '''"""The MLP as a plain djl handler (bench/torch_mlp.py): JSON in, JSON out."""

import json

import torch

from djl_python import Input, Output

torch.set_num_threads(1)
MODEL = torch.jit.load("model.pt").eval()


def handle(inputs: Input) -> Output | None:
    if inputs.is_empty():
        return None
    batch = inputs.get_batches()
    rows = [item.get_as_json() for item in batch]
    with torch.inference_mode():
        result = MODEL(torch.tensor(rows, dtype=torch.float32))
    outputs = Output()
    outputs.add_property("content-type", "application/json")
    for i, row in enumerate(result.tolist()):
        outputs.add(json.dumps({"predictions": row}).encode(), key="data",
                    batch_index=i if len(batch) > 1 else None)
    return outputs
'''

#: The same model behind TorchServe: a module-level handler, its usual shape.
TS_HANDLER = '''"""The MLP as a TorchServe handler (bench/torch_mlp.py): JSON in, JSON out."""

import json
import os

import torch

torch.set_num_threads(1)
MODEL = None


def handle(data, context):
    global MODEL
    if MODEL is None:
        model_dir = context.system_properties.get("model_dir")
        MODEL = torch.jit.load(os.path.join(model_dir, "model.pt")).eval()
    if data is None:
        return None
    rows = []
    for item in data:
        body = item.get("data") or item.get("body")
        if isinstance(body, bytes | bytearray):
            body = json.loads(body)
        rows.append(body)
    with torch.inference_mode():
        result = MODEL(torch.tensor(rows, dtype=torch.float32))
    return [{"predictions": row} for row in result.tolist()]
'''

#: The same .onnx behind TorchServe: BaseHandler loads it into an onnxruntime session
#: (its ONNX path); the session is made again with one intra-op thread, as every other
#: server here has (TorchServe's own uses one per core).
TS_ONNX_HANDLER = '''"""The MLP's .onnx as a TorchServe handler (bench/torch_mlp.py)."""

import json

import numpy as np
import onnxruntime as ort
from ts.torch_handler.base_handler import BaseHandler


class OnnxMlp(BaseHandler):
    def initialize(self, context):
        super().initialize(context)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.model = ort.InferenceSession(self.model_pt_path, options,
                                          providers=["CPUExecutionProvider"])

    def preprocess(self, data):
        rows = []
        for item in data:
            body = item.get("data") or item.get("body")
            if isinstance(body, bytes | bytearray):
                body = json.loads(body)
            rows.append(body)
        return np.asarray(rows, dtype=np.float32)

    def inference(self, data):
        return self.model.run(None, {"input": data})[0]

    def postprocess(self, data):
        return [{"predictions": row} for row in data.tolist()]
'''


def build_models(root: Path) -> dict[str, Path]:
    folders = {key: mlp_folder(root, f"mlp_{key}", file=file, engine=engine)
               for key, file, engine in (("engine", "model.pt", "PyTorch"),
                                         ("pt2", "model.pt2", "PyTorch"),
                                         ("onnx", "model.onnx", "OnnxRuntime"))}
    handler = root / "mlp_handler"
    handler.mkdir()
    (handler / "model.pt").write_bytes((folders["engine"] / "model.pt").read_bytes())
    (handler / "model.py").write_text(MODEL_PY)
    (handler / "serving.properties").write_text("engine=Python\n" + MLP_SETTINGS)
    ts_handler = root / "ts_handler.py"
    ts_handler.write_text(TS_HANDLER)
    ts_onnx_handler = root / "ts_onnx_handler.py"
    ts_onnx_handler.write_text(TS_ONNX_HANDLER)
    return {**folders, "handler": handler, "ts_handler": ts_handler,
            "ts_onnx_handler": ts_onnx_handler}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = load_parser(__doc__, duration=10.0, warmup=3.0, concurrency=[1, 64], rounds=3,
                         quick="~1 min: 4 s points")
    parser.add_argument("--no-torchserve", action="store_true", help="skip TorchServe")
    parser.add_argument("--targets", nargs="+", choices=list(ROWS), default=list(ROWS),
                        help="the rows to measure (default: all; the TorchScript engine's "
                             "row, the reference, always runs)")
    parser.add_argument("--prewarm", type=float, default=20.0,
                        help="seconds of c64 load on each TorchServe row before the first "
                        "round (its JVM compiles its hot path under load; 3 s for djl's)")
    args = parse_load_args(parser, argv, duration=4.0, warmup=1.0, rounds=1, prewarm=0.0)
    if "engine" not in args.targets:
        args.targets.insert(0, "engine")
    if args.no_torchserve:
        args.targets = [t for t in args.targets if not t.startswith("torchserve")]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info = machine_info()
    body = mlp_request_body()
    points: list[dict[str, Any]] = []
    notes: list[str] = []
    with Processes() as procs:
        paths = build_models(procs.tmp)
        client = load_client(args, procs, notes)
        targets: dict[str, tuple[Server, str]] = {}
        with timer("start djl"):
            djl = start_djl(procs)
        for key in ("engine", "pt2", "onnx", "handler"):
            if key in args.targets:
                register(djl, paths[key], f"mlp_{key}")
                targets[ROWS[key]] = (djl, f"{djl.base_url}/predictions/mlp_{key}")
        if "hypercorn" in args.targets:
            hyper = start_djl(procs, name="djl-hypercorn",
                              extra_env={"SERVING_HTTP_SERVER": "hypercorn"})
            register(hyper, paths["engine"], "mlp_engine")
            targets[HYPERCORN_ROW] = (hyper, f"{hyper.base_url}/predictions/mlp_engine")
        wants_torchserve = {"torchserve", "torchserve-onnx"} & set(args.targets)
        if wants_torchserve and torchserve_available(allow_install=True) is None:
            notes.append("TorchServe skipped (not installed: sh bench/setup.sh)")
        elif wants_torchserve:
            with timer("start TorchServe"):
                store = procs.tmp / "ts_store"
                torchserve_archive(store, "mlp", paths["ts_handler"],
                                   serialized_file=paths["engine"] / "model.pt")
                ts = start_torchserve(procs, store)
                torchserve_register(ts, "mlp.mar", batch_size=32, max_batch_delay_ms=10)
                torchserve_archive(store, "mlp_onnx", paths["ts_onnx_handler"],
                                   serialized_file=paths["onnx"] / "model.onnx")
                torchserve_register(ts, "mlp_onnx.mar", batch_size=32, max_batch_delay_ms=10)
            for key, model in (("torchserve", "mlp"), ("torchserve-onnx", "mlp_onnx")):
                if key in args.targets:
                    targets[ROWS[key]] = (ts, f"{ts.base_url}/predictions/{model}")
        answers = {}
        for name, (server, url) in targets.items():
            try:
                answers[name] = predictions(url, body)
            except httpx.HTTPError as exc:
                raise SystemExit(f"{name}: {exc}\n{server.log_tail()}") from None
        reference = answers["djl PyTorch engine"]
        differences = {}
        for name, values in answers.items():
            worst = differences[name] = max(abs(a - b) for a, b in zip(values, reference,
                                                                          strict=True))
            if worst > 1e-4:
                raise SystemExit(f"{name} answers differently (max |diff| {worst})")
        for name, (_, url) in targets.items():
            # TorchServe's rounds showed its JIT warming up (239/483/375 req/s) when each
            # point had only --warmup seconds: every row is warmed once at c64 first.
            seconds = args.prewarm if name.startswith("TorchServe") else min(args.prewarm, 3)
            if seconds > 0:
                with timer(f"prewarm {name} {seconds:g} s"):
                    client.run(LoadSpec(url, body, "application/json", 64, seconds))
        for round_no, c, name in interleaved(args.rounds, args.concurrency, list(targets)):
            server, url = targets[name]
            point = measure(client, server, LoadSpec(url, body, "application/json", c,
                                                     args.duration), args.warmup)
            point.update(server=name, round=round_no)
            points.append(point)
            print(point_line(name, point), flush=True)
        client_name = client.name
    print()
    print(f"torch_mlp: MLP 128-256-10 (TorchScript, .pt2, ONNX), 1 worker, batch 32, "
          f"max_batch_delay 10 ms, "
          f"1 torch thread, JSON of 128 floats, {args.duration:g} s per point, "
          f"client {client_name}, nproc {info['nproc']}")
    print(table(
        ["server", "c", "req/s", "p50 ms", "p99 ms", "front µs/req", "worker µs/req",
         "other load", "errors"],
        [[p["server"], p["concurrency"], p["rps"], p["p50_ms"], p["p99_ms"],
          p["server_cpu_us_per_req"], p["workers_cpu_us_per_req"],
          f"{p['other_busy_cores']:.2f}", p["errors"] + p["non_2xx"]] for p in points],
    ))
    ratios = compute_ratios(points)
    if ROWS["pt2"] in differences:
        ratios[".pt2 max |answer - TorchScript's| (target <= 1e-5)"] = differences[ROWS["pt2"]]
    report(ratios, notes)
    save_results("torch_mlp.json", {
        "bench": "torch_mlp",
        "settings": vars(args),
        "client": client_name,
        "model": "Linear(128,256)-ReLU-Linear(256,10), seed 0 (examples/mlp): TorchScript, "
                 "torch.export .pt2, ONNX",
        "max_abs_diff_vs_torchscript": differences,
        "machine": info,
        "notes": notes,
        "ratios": ratios,
        "points": points,
    })
    return 0


def compute_ratios(points: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets, per concurrency, from the medians over rounds."""

    def median(server: str, c: int, key: str) -> float | None:
        values = sorted(p[key] for p in points
                        if p["server"] == server and p["concurrency"] == c)
        return values[len(values) // 2] if values else None

    out: dict[str, Any] = {}
    for c in sorted({p["concurrency"] for p in points}):
        engine_worker = median("djl PyTorch engine", c, "workers_cpu_us_per_req")
        handler_worker = median("djl model.py handler", c, "workers_cpu_us_per_req")
        engine_front = median("djl PyTorch engine", c, "server_cpu_us_per_req")
        if engine_worker is not None and handler_worker:
            out[f"c{c} engine worker / handler worker CPU (target <= 0.2)"] = (
                engine_worker / handler_worker)
        if engine_worker is not None and engine_front:
            out[f"c{c} engine worker / engine server CPU (target <= 0.1)"] = (
                engine_worker / engine_front)
        engine_rps = median("djl PyTorch engine", c, "rps")
        ts_rps = median("TorchServe 0.12", c, "rps")
        handler_rps = median("djl model.py handler", c, "rps")
        if engine_rps and ts_rps:
            out[f"c{c} engine / TorchServe req/s (target >= 1.2 at c64)"] = engine_rps / ts_rps
        engine_p99 = median("djl PyTorch engine", c, "p99_ms")
        ts_p99 = median("TorchServe 0.12", c, "p99_ms")
        if engine_p99 and ts_p99:
            out[f"c{c} engine / TorchServe p99 (target < 1)"] = engine_p99 / ts_p99
        hyper_rps = median(HYPERCORN_ROW, c, "rps")
        if engine_rps and hyper_rps:
            out[f"c{c} engine on djl's front / on hypercorn req/s"] = engine_rps / hyper_rps
        if engine_rps and handler_rps:
            out[f"c{c} engine / handler req/s"] = engine_rps / handler_rps
        onnx_rps = median("djl ONNX engine", c, "rps")
        onnx_worker = median("djl ONNX engine", c, "workers_cpu_us_per_req")
        pt2_worker = median("djl .pt2 engine", c, "workers_cpu_us_per_req")
        ts_onnx_rps = median("TorchServe 0.12 ONNX", c, "rps")
        ts_onnx_worker = median("TorchServe 0.12 ONNX", c, "workers_cpu_us_per_req")
        if onnx_rps and engine_rps:
            out[f"c{c} ONNX engine / TorchScript engine req/s (target >= 1 at c64)"] = (
                onnx_rps / engine_rps)
            paired = paired_ratios(points, ROWS["onnx"], ROWS["engine"], c, "rps")
            out[f"c{c} ONNX engine / TorchScript engine req/s, median of the "
                f"{len(paired)} same-round ratios"] = statistics.median(paired)
        if onnx_worker is not None and engine_worker:
            out[f"c{c} ONNX engine / TorchScript engine worker CPU (target <= 1 at c64)"] = (
                onnx_worker / engine_worker)
        if pt2_worker is not None and engine_worker:
            out[f"c{c} .pt2 engine / TorchScript engine worker CPU (target <= 1.1)"] = (
                pt2_worker / engine_worker)
        if onnx_rps and ts_onnx_rps:
            out[f"c{c} ONNX engine / TorchServe ONNX req/s"] = onnx_rps / ts_onnx_rps
        if onnx_worker is not None and ts_onnx_worker:
            out[f"c{c} ONNX engine / TorchServe ONNX worker CPU"] = onnx_worker / ts_onnx_worker
    return out


def paired_ratios(points: list[dict[str, Any]], row: str, reference: str, c: int,
                  key: str) -> list[float]:
    """``row / reference`` within each round (the two measured minutes apart at most),
    which a drift in the machine's other load moves far less than the ratio of medians."""
    def by_round(server: str) -> dict[int, float]:
        return {p["round"]: p[key] for p in points
                if p["server"] == server and p["concurrency"] == c}

    ours, theirs = by_round(row), by_round(reference)
    return [ours[r] / theirs[r] for r in sorted(ours) if theirs.get(r)]


if __name__ == "__main__":
    run_main(main)
