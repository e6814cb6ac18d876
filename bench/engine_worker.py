"""The worker's CPU per request for one batch, in-process: the PyTorch engine against the
same model as a plain ``model.py`` handler (the two djl rows of bench/torch_mlp.py), and
the same MLP as a ``torch.export`` program (``.pt2``, the PyTorch engine) and as ONNX (the
ONNX Runtime engine), each over the same batch.

No server and no pipe wait: each side runs exactly what ``djl.runtime``'s frame loop runs
for one REQUEST frame as the server encodes it (32 JSON requests with the headers wrk
sends) — the engine's ``answer_frame``; for the handler ``decode_request`` → ``Input`` →
``PythonEngine.invoke`` → ``_send_output`` into a socketpair. Two conditions:

* **hot**: batch after batch, caches warm (the floor of the code);
* **cold**: 32 MiB of memory written between batches, as a live worker finds its caches
  after the server process ran on the same cores for ~25 ms (a live worker at c64 serves
  a batch every 20–30 ms);
* **idle**: the process sleeps 9 ms before each batch, the gap a live worker at c64 sees
  between batches (bench/torch_mlp.py). On a shared VM the core runs other work meanwhile
  and code comes back slow: this is the condition that predicts the live rows.

A third row, **forward alone**, is the model's own share of the engine's batch (the
collated arrays to torch, the forward, the outputs back to numpy: ``_forward``): the
floor under the engine's cost, which the handler pays too.

Prints µs of CPU per request (best of ``--rounds``), the engine / handler ratio, the
forward / handler ratio (the smallest engine / handler could be) and the .pt2 and ONNX
engines' CPU as a ratio of the TorchScript engine's, and writes
bench/results/engine_worker.json.

    .venv/bin/python bench/engine_worker.py            # ~1 min
    .venv/bin/python bench/engine_worker.py --quick    # ~20 s
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_info, mlp_request_body, table, write_results  # noqa: E402
from torch_mlp import build_models  # noqa: E402

from djl import _batch  # noqa: E402
from djl.config import ServerConfig  # noqa: E402
from djl.http import codec  # noqa: E402
from djl.io import Input, PairList  # noqa: E402
from djl.runtime import __main__ as runtime  # noqa: E402
from djl.runtime.onnx_engine import OnnxEngine  # noqa: E402
from djl.runtime.python_engine import PythonEngine  # noqa: E402
from djl.runtime.tensor_engine import TensorEngine  # noqa: E402
from djl.runtime.torch_engine import TorchEngine  # noqa: E402

MAX_ITEM = 1 << 26
MAX_FRAME = 1 << 28


def batch_payload(body: bytes, n: int) -> bytes:
    """The REQUEST payload the server sends for n requests like wrk's."""
    headers = [(b"host", b"127.0.0.1:8080"), (b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    config = ServerConfig()
    inputs = []
    for i in range(n):
        properties, _ = codec.request_properties(headers, config)
        inputs.append(codec.body_input(properties, codec.Query([]), body, f"request-{i}"))
    frame = _batch.encode_batch(inputs, {"handler": "handle"})
    return bytes(frame[5:])


def loaded(engine: TensorEngine) -> TensorEngine:
    engine.load({})
    engine.initialise(Input({}, PairList()))
    return engine


def engine_paths(models: dict[str, Path]) -> dict[str, Callable[[bytes], Any]]:
    """Each engine's whole batch, and the TorchScript forward alone on that batch's
    arrays."""
    engine = loaded(TorchEngine(models["engine"], "model.pt", "-1", 1))
    pt2 = loaded(TorchEngine(models["pt2"], "model.pt2", "-1", 1))
    onnx = loaded(OnnxEngine(models["onnx"], "model.onnx", "-1", 1))
    collated: dict[bytes, tuple[list[np.ndarray], Any]] = {}

    def forward(payload: bytes) -> None:
        known = collated.get(payload)
        if known is None:
            _, _, groups, _ = _batch.read_requests(payload)
            items = groups[0][1]
            known = collated[payload] = (_batch.collate(items), items[0].signature)
        engine._forward(*known)

    return {"engine": lambda payload: engine.answer_frame(payload, MAX_ITEM, MAX_FRAME),
            "forward": forward,
            "pt2": lambda payload: pt2.answer_frame(payload, MAX_ITEM, MAX_FRAME),
            "onnx": lambda payload: onnx.answer_frame(payload, MAX_ITEM, MAX_FRAME)}


def handler_path(model_dir: Path) -> Callable[[bytes], Any]:
    engine = PythonEngine(model_dir, "model.py", "-1")
    engine.load()
    engine.initialise(Input({}, PairList()))
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)

    def run(payload: bytes) -> None:
        props, keys, values = _batch.decode_request(payload)
        output = engine.invoke(Input(props, PairList(zip(keys, values, strict=True))))
        runtime._send_output(ours, output, MAX_ITEM, MAX_FRAME)
        try:
            while theirs.recv(1 << 22):
                pass
        except BlockingIOError:
            pass

    return run


def cpu_us_per_request(run: Callable[[bytes], Any], payload: bytes, n: int, batches: int,
                       before: Callable[[], Any] | None) -> float:
    spent = 0.0
    for _ in range(batches):
        if before is not None:
            before()  # what happens to the caches between two batches
        start = time.process_time()
        run(payload)
        spent += time.process_time() - start
    return spent / batches / n * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, default=100, help="batches per round")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 40 batches")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.batches = 3, 40
    import torch

    torch.set_num_threads(1)
    body = mlp_request_body()
    flush = np.zeros(32 << 20, np.uint8)

    def evict() -> None:
        np.add(flush, 1, out=flush)  # write 32 MiB: the last batch's lines are evicted

    conditions = (("hot", None), ("cold", evict), ("idle", lambda: time.sleep(0.009)))
    with tempfile.TemporaryDirectory() as tmp:
        models = build_models(Path(tmp))
        cwd = os.getcwd()
        os.chdir(models["engine"])
        paths = engine_paths(models)
        os.chdir(models["handler"])  # the handler loads model.pt from its own folder
        paths["handler"] = handler_path(models["handler"])
        os.chdir(cwd)
        rows, points = [], []
        for n in args.batch_sizes:
            payload = batch_payload(body, n)
            for condition, before in conditions:
                best = {name: float("inf") for name in paths}
                for _ in range(args.rounds):
                    for name, run in paths.items():  # interleaved: steal hits both
                        cpu_us_per_request(run, payload, n, 5, before)  # warm up
                        best[name] = min(best[name], cpu_us_per_request(
                            run, payload, n, args.batches, before))
                ratio = best["engine"] / best["handler"]
                floor = best["forward"] / best["handler"]
                pt2, onnx = best["pt2"] / best["engine"], best["onnx"] / best["engine"]
                rows.append([n, condition, best["engine"], best["forward"], best["handler"],
                             ratio, floor, best["pt2"], best["onnx"], pt2, onnx])
                points.append({"batch": n, "condition": condition,
                               "engine_us": best["engine"], "forward_us": best["forward"],
                               "handler_us": best["handler"], "ratio": ratio,
                               "forward_ratio": floor, "pt2_us": best["pt2"],
                               "onnx_us": best["onnx"], "pt2_ratio": pt2, "onnx_ratio": onnx})
    print("worker CPU µs per request for one batch, in-process, best of "
          f"{args.rounds} rounds × {args.batches} batches")
    print(table(["batch", "caches", "engine", "forward alone", "model.py handler",
                 "engine / handler", "forward / handler", ".pt2 engine", "ONNX engine",
                 ".pt2 / engine", "ONNX / engine"], rows))
    path = write_results("engine_worker.json", {"machine": machine_info(), "points": points})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
