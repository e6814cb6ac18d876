"""Micro-benchmark of the worker's share of a request: the tensor codecs of djl/_tensor.pxi
against the Python path a plain handler takes (``json.loads`` + ``torch.tensor``, then
``.tolist()`` + ``json.dumps``). No server: CPU µs per item, in-process.

    .venv/bin/python bench/collate.py            # ~40 s   (--quick: ~10 s)

Per item of a batch of 32 (the bench's torch MLP: 128 float32 in, 10 out; and 128 out):

* in:  ``parse_tensors`` per body + one ``collate``  vs  ``torch.stack`` of
  ``torch.tensor(json.loads(body))`` (and the numpy variant ``np.array(json.loads(...))``);
* out: one ``encode_rows``  vs  ``json.dumps({"predictions": t.tolist()})`` per row.

Writes ``bench/results/collate.json``. Timings are the best of ``--rounds`` runs (the
least disturbed by CPU steal); compare the ratios, not absolute times across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from djl import _batch

RESULTS = Path(os.environ.get("DJL_BENCH_RESULTS") or Path(__file__).parent / "results"
               ) / "collate.json"
BATCH = 32


def _round(fn: Callable[[], Any], min_time: float) -> float:
    count = 0
    start = time.perf_counter()
    while True:
        fn()
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return elapsed / count


def per_item_us(fns: list[Callable[[], Any]], items: int, rounds: int,
                min_time: float) -> list[float]:
    """Best-of-rounds wall time of each fn, in µs per item. The functions take turns
    within every round, so a burst of CPU steal hits both sides of a comparison."""
    for fn in fns:
        fn()  # warm up (imports, lazy tables)
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            best[i] = min(best[i], _round(fn, min_time))
    return [b / items * 1e6 for b in best]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--min-time", type=float, default=0.3, help="seconds per round")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 0.2 s")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.min_time = 3, 0.2
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        torch = None

    rng = np.random.default_rng(0)
    inputs = rng.standard_normal((BATCH, 128)).astype(np.float32)
    bodies = [json.dumps({"inputs": row.tolist()}).encode() for row in inputs]
    outputs = {n: rng.standard_normal((BATCH, n)).astype(np.float32) for n in (10, 128)}
    fmts = [_batch.FORMAT_JSON] * BATCH

    def ours_in() -> Any:
        return _batch.collate([_batch.parse_tensors(b, _batch.FORMAT_JSON) for b in bodies])

    def numpy_in() -> Any:
        return np.stack([np.array(json.loads(b)["inputs"], dtype=np.float32) for b in bodies])

    rows: list[tuple[str, float, float | None, str]] = []

    def measure(label: str, ours: Callable[[], Any], theirs: Callable[[], Any] | None,
                theirs_label: str) -> None:
        if theirs is None:
            (mine,) = per_item_us([ours], BATCH, args.rounds, args.min_time)
            rows.append((label, mine, None, theirs_label))
        else:
            mine, other = per_item_us([ours, theirs], BATCH, args.rounds, args.min_time)
            rows.append((label, mine, other, theirs_label))

    (batch,) = ours_in()
    assert np.array_equal(batch, numpy_in())  # same values both ways
    if torch is not None:
        def torch_in() -> Any:
            return torch.stack([torch.tensor(json.loads(b)["inputs"]) for b in bodies])

        measure("in: JSON 128 floats", ours_in, torch_in, "torch.tensor(json.loads)")
    measure("in: JSON 128 floats", ours_in, numpy_in, "np.array(json.loads)")
    for n, out in outputs.items():
        tensor = torch.from_numpy(out) if torch is not None else None
        source = tensor if tensor is not None else out

        def ours_out(out: np.ndarray = out) -> Any:
            return _batch.encode_rows([out], fmts)

        def python_out(source: Any = source) -> Any:
            return [json.dumps({"predictions": t.tolist()}).encode() for t in source]

        first = json.loads(ours_out()[0])["predictions"]
        assert np.array_equal(np.array(first, dtype=np.float32), out[0])
        measure(f"out: JSON {n} floats", ours_out, python_out, "json.dumps(t.tolist())")
    ndlist = [_batch.encode_tensors([row], _batch.FORMAT_NDLIST) for row in inputs]
    measure("in: NDList 128 floats",
            lambda: _batch.collate([_batch.parse_tensors(b, _batch.FORMAT_NDLIST)
                                    for b in ndlist]), None, "")
    measure("out: NDList 10 floats",
            lambda: _batch.encode_rows([outputs[10]], [_batch.FORMAT_NDLIST] * BATCH), None, "")
    npz = [_batch.encode_tensors([row], _batch.FORMAT_NPZ) for row in inputs]
    measure("in: npz 128 floats",
            lambda: _batch.collate([_batch.parse_tensors(b, _batch.FORMAT_NPZ) for b in npz]),
            None, "")
    measure("out: npz 10 floats",
            lambda: _batch.encode_rows([outputs[10]], [_batch.FORMAT_NPZ] * BATCH), None, "")

    print(f"µs per item, batch of {BATCH}, best of {args.rounds} rounds")
    print(f"{'path':24} {'djl._batch':>11} {'python':>9} {'ratio':>7}  python path")
    for label, mine, other, other_label in rows:
        ratio = f"{other / mine:6.1f}x" if other else ""
        other_text = f"{other:9.2f}" if other else ""
        print(f"{label:24} {mine:11.2f} {other_text:>9} {ratio:>7}  {other_label}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "batch": BATCH,
        "rounds": args.rounds,
        "rows": [{"path": label, "djl_us_per_item": mine, "python_us_per_item": other,
                  "python_path": other_label} for label, mine, other, other_label in rows],
        "machine": {"nproc": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "numpy": np.__version__,
                    "torch": getattr(torch, "__version__", None)},
    }, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
