"""djl/runtime/onnx_engine.py in-process: session options, and a batch whose requests
the graph's declared ranks split into stacked, concatenated and refused ones; the CUDA
provider (bench/gpu_check.sh runs the ``gpu`` ones where a GPU is)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx_models
import onnxruntime as ort
import pytest
from test_torch_engine import batch

from djl.errors import ItemError
from djl.runtime.onnx_engine import OnnxEngine, reason, session_options
from djl.runtime.tensor_engine import TensorLoadError


def npz(*arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, *arrays)
    return buf.getvalue()


def test_session_options_follow_djls_names() -> None:
    options = session_options(ort, {"optLevel": "basic_opt", "interOpNumThreads": "3",
                                    "executionMode": "PARALLEL",
                                    "memoryPatternOptimization": "false"}, 2)
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 3)
    assert options.execution_mode == ort.ExecutionMode.ORT_PARALLEL
    assert options.enable_mem_pattern is False
    default = session_options(ort, {}, 1)
    assert default.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    for bad, hint in (({"optLevel": "O3"}, "option.optLevel O3: use NO_OPT"),
                      ({"interOpNumThreads": "two"}, "option.interOpNumThreads two"),
                      ({"cpuArenaAllocator": "yes"}, "option.cpuArenaAllocator yes")):
        with pytest.raises(TensorLoadError, match=hint):
            session_options(ort, bad, 1)


def test_onnxruntime_errors_read_as_one_line() -> None:
    exc = RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions\n"
                       " index: 1 Got: 5 Expected: 4\n Please fix the inputs.")
    assert reason(exc) == (
        "Got invalid dimensions index: 1 Got: 5 Expected: 4 Please fix the inputs.")


def test_one_batch_stacked_concatenated_and_refused(tmp_path: Path) -> None:
    onnx_models.linear(tmp_path)
    engine = OnnxEngine(tmp_path, "model.onnx", "-1", 1)
    engine.load({})
    row, block = np.ones(4, np.float32), np.arange(8, dtype=np.float32).reshape(2, 4)
    answers = engine.invoke(batch(
        ({"content-type": "tensor/npz"}, [("data", npz(row))]),
        ({"content-type": "tensor/npz"}, [("data", npz(block))]),
        ({"content-type": "tensor/npz"}, [("data", npz(row * 3))]),
        ({"content-type": "tensor/npz"}, [("data", npz(block + 1))]),
        ({"content-type": "tensor/npz"}, [("data", npz(np.ones((2, 2, 4), np.float32)))]),
        ({"content-type": "application/json"}, [("data", b"[1, 2, 3, 4]")]),
    ))
    for x, answer in zip((row, block, row * 3, block + 1), answers, strict=False):
        with np.load(io.BytesIO(bytes(answer.content.get("data")))) as f:
            np.testing.assert_allclose(f["y"], onnx_models.expected(x), rtol=1e-6)
            # The three rows (two npz, one JSON) are one forward; so are the two blocks.
            assert f["rows"].flat[0] == (3 if x.ndim == 1 else 4)
    assert isinstance(answers[4], ItemError)
    assert answers[4].message.startswith("Input 0 (x) has shape [2, 2, 4]")
    y, rows = json.loads(bytes(answers[5].content.get("data")))["predictions"]
    np.testing.assert_allclose(y[1], onnx_models.expected(np.arange(1, 5)), rtol=1e-6)
    assert rows == ["rows", 3]


def test_a_json_request_takes_the_declared_dtype(tmp_path: Path) -> None:
    """JSON numbers have no dtype (they parse as float32): they are cast to the input's
    int64; an npz keeps its own dtype, and a float one is refused by the graph."""
    onnx_models.doubled_ids(tmp_path)
    engine = OnnxEngine(tmp_path, "model.onnx", "-1", 1)
    engine.load({})
    json_answer, float_npz = engine.invoke(batch(
        ({"content-type": "application/json"}, [("data", b"[1, 2, 3]")]),
        ({"content-type": "tensor/npz"}, [("data", npz(np.ones(3, np.float32)))]),
    ))
    assert json.loads(bytes(json_answer.content.get("data"))) == {"predictions": [2, 4, 6]}
    assert isinstance(float_npz, ItemError)
    assert "Unexpected input data type" in float_npz.message


# -- CUDA ---------------------------------------------------------------------------------------

#: Set by bench/gpu_check.sh: there, a missing GPU or CUDA provider fails, never skips.
GPU_REQUIRED = os.environ.get("DJL_GPU_CHECK") == "1"
HAS_CUDA_PROVIDER = "CUDAExecutionProvider" in ort.get_available_providers()


def _npz_batch(arrays: list[np.ndarray]) -> Any:
    return batch(*[({"content-type": "tensor/npz"}, [("data", npz(a))]) for a in arrays])


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA_PROVIDER and not GPU_REQUIRED,
                    reason="this onnxruntime has no CUDA provider (bench/gpu_check.sh)")
def test_a_batch_runs_on_the_cuda_provider_of_each_gpu(tmp_path: Path) -> None:
    """gpuN is a session on CUDA device N, not one that fell back to the CPU; four
    requests are one forward there, each answered its own rows."""
    import torch

    onnx_models.linear(tmp_path)
    assert HAS_CUDA_PROVIDER, f"onnxruntime {ort.__version__}: {ort.get_available_providers()}"
    assert torch.cuda.device_count() > 0
    rows = [np.full(4, i, np.float32) for i in range(4)]
    for index in range(torch.cuda.device_count()):
        engine = OnnxEngine(tmp_path, "model.onnx", str(index), 1)
        engine.load({})
        assert engine.session.get_providers()[0] == "CUDAExecutionProvider"
        options = engine.session.get_provider_options()["CUDAExecutionProvider"]
        assert options["device_id"] == str(index), options
        for x, answer in zip(rows, engine.invoke(_npz_batch(rows)), strict=True):
            with np.load(io.BytesIO(bytes(answer.content.get("data")))) as f:
                np.testing.assert_allclose(f["y"], onnx_models.expected(x), rtol=1e-5)
                assert f["rows"].flat[0] == 4  # one forward for the four


def test_onnx_on_a_gpu_without_cuda_is_a_load_failure(tmp_path: Path) -> None:
    """Here (onnxruntime without its CUDA provider) loading on gpu0 names what is missing;
    under bench/gpu_check.sh (CUDA_VISIBLE_DEVICES="") the provider is there but cannot
    start, and that is a load failure too, never a session quietly on the CPU."""
    onnx_models.linear(tmp_path)
    with pytest.raises(TensorLoadError, match="Cannot load on gpu0: ") as info:
        OnnxEngine(tmp_path, "model.onnx", "0", 1).load({})
    if HAS_CUDA_PROVIDER:
        assert "CUDA" in str(info.value)
    else:
        assert "has no CUDA provider, only " in str(info.value)


def test_a_cuda_provider_that_falls_back_to_the_cpu_is_a_load_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime given a CUDA provider it cannot start builds the session on the CPU
    with a warning only: what a GPU asked of it must then fail to load. This onnxruntime
    is told it has the provider; the session it builds really falls back."""
    if HAS_CUDA_PROVIDER:
        pytest.skip("this onnxruntime can start CUDA: the gpu_without_cuda run covers it")
    onnx_models.linear(tmp_path)
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(TensorLoadError, match=(
            r"Cannot load on gpu1: onnxruntime's CUDA provider did not start \(the session "
            r"runs on CPUExecutionProvider\)")):
        OnnxEngine(tmp_path, "model.onnx", "1", 1).load({})
