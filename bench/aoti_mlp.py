"""The example MLP as an AOTInductor package on the PyTorch engine: whether this machine
can build and load one, and what it costs the worker next to TorchScript.

Compiles examples/mlp's model with ``torch._inductor.aoti_compile_and_package`` (a C++
compiler must be on PATH; minutes of CPU), loads the package through the engine
(``aoti_load_package``), checks its answers against TorchScript's on the same batch and
measures the worker CPU per request of one batch of 32 JSON requests in-process for both
(bench/engine_worker.py's "hot" condition). Prints the times and writes
bench/results/aoti_mlp.json.

    .venv/bin/python bench/aoti_mlp.py                     # compile, then measure
    .venv/bin/python bench/aoti_mlp.py --package mlp.pt2   # reuse a package built before
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, machine_info, mlp_request_body, table, write_results  # noqa: E402
from engine_worker import MAX_FRAME, MAX_ITEM, batch_payload, cpu_us_per_request  # noqa: E402

from djl import _batch  # noqa: E402
from djl.runtime.torch_engine import TorchEngine, is_aoti_package  # noqa: E402


def compile_package(out: Path) -> float:
    """Build the AOTInductor package of the example MLP at ``out``; seconds it took."""
    import torch

    sys.path.insert(0, str(REPO / "examples" / "mlp"))
    from build import module  # examples/mlp/build.py: same layers, same seed

    program = torch.export.export(module(), (torch.zeros(2, 128),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    start = time.monotonic()
    torch._inductor.aoti_compile_and_package(program, package_path=str(out))
    return time.monotonic() - start


def answers(engine: TorchEngine, payload: bytes) -> list[list[float]]:
    decoder = _batch.FrameDecoder()
    decoder.feed(engine.answer_frame(payload, MAX_ITEM, MAX_FRAME))
    _, body = next(decoder)
    out = []
    for kind, item in _batch.decode_results(body):
        assert kind == _batch.RESPONSE, _batch.decode_error(item)
        out.append(json.loads(bytes(_batch.decode_response(item)[4][0]))["predictions"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", type=Path, help="an AOTInductor .pt2 built before")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, default=100)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "aoti").mkdir()
        (root / "script").mkdir()
        package = root / "aoti" / "model.pt2"
        compile_s = None
        if args.package:
            shutil.copy(args.package, package)
        else:
            print("compiling the AOTInductor package (minutes)...", flush=True)
            compile_s = compile_package(package)
        assert is_aoti_package(package)
        shutil.copy(REPO / "examples" / "mlp" / "model.pt", root / "script" / "model.pt")
        start = time.monotonic()
        aoti = TorchEngine(root / "aoti", "model.pt2", "-1", 1)
        aoti.load({})
        load_s = time.monotonic() - start
        script = TorchEngine(root / "script", "model.pt", "-1", 1)
        script.load({})
        payload = batch_payload(mlp_request_body(), 32)
        worst = max(abs(a - b) for x, y in zip(answers(aoti, payload), answers(script, payload),
                                               strict=True) for a, b in zip(x, y, strict=True))
        best = {"TorchScript": float("inf"), "AOTInductor": float("inf")}
        runs = {"TorchScript": script, "AOTInductor": aoti}
        for _ in range(args.rounds):
            for name, engine in runs.items():  # interleaved: steal hits both

                def run(p: bytes, engine: TorchEngine = engine) -> None:
                    engine.answer_frame(p, MAX_ITEM, MAX_FRAME)

                cpu_us_per_request(run, payload, 32, 5, None)
                best[name] = min(best[name], cpu_us_per_request(run, payload, 32,
                                                                args.batches, None))
    ratio = best["AOTInductor"] / best["TorchScript"]
    print(table(["engine", "worker µs/request (batch 32, hot)"],
                [[name, value] for name, value in best.items()]))
    print(f"compile {compile_s if compile_s is not None else 'skipped'} s, load {load_s:.2f} s, "
          f"max |AOTInductor - TorchScript| {worst:.2e}, AOTInductor / TorchScript {ratio:.2f}")
    path = write_results("aoti_mlp.json", {
        "machine": machine_info(), "compile_s": compile_s, "load_s": load_s,
        "max_abs_diff": worst, "cpu_us_per_request": best, "ratio": ratio})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
