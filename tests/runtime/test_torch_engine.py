"""djl/runtime/torch_engine.py in-process: a batch's requests, and one engine's answers.

The format rules themselves (_batch.input_format, output_format) are in test_collate.py."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from djl import _batch
from djl.errors import ERROR_OUTPUT, FrameError, ItemError
from djl.io import Input, PairList, batch_key
from djl.runtime.tensor_engine import results_frame
from djl.runtime.torch_engine import TorchEngine, TorchLoadError


def batch(*requests: tuple[dict[str, str], list[tuple[str, bytes]]]) -> Input:
    """A batched Input as the worker receives it (spec §6.8 keys)."""
    props: dict[str, str] = {"batch_size": str(len(requests)), "handler": "handle"}
    content = PairList()
    for i, (headers, items) in enumerate(requests):
        for k, v in headers.items():
            props[batch_key(i, k)] = v
        for k, v in items:
            content.add(batch_key(i, k), v)
    return Input(props, content)


def payload(inputs: Input) -> bytes:
    """The REQUEST payload the worker receives for ``inputs``."""
    frame = _batch.encode_request(inputs.properties, inputs.content.keys, inputs.content.values)
    return bytes(frame[5:])


def test_items_of_a_batch() -> None:
    inputs = batch(
        ({"Content-Type": "application/json", "Accept": "tensor/npz"}, [("data", b"[1]")]),
        ({"content-type": "tensor/npz"}, [("q", b"query"), ("data", b"PK")]),
        ({}, [("only", b"first")]),
    )
    assert _batch.request_items(payload(inputs)) == [
        ("application/json", "tensor/npz", b"[1]"),
        ("tensor/npz", "", b"PK"),  # the data item, not the query item before it
        ("", "", b"first"),
    ]
    single = Input({"CONTENT-TYPE": "tensor/npz", "accept": "x"}, PairList([("data", b"d")]))
    assert _batch.request_items(payload(single)) == [("tensor/npz", "x", b"d")]
    # Keys of another request's number, or not of the batch convention, are not read.
    odd = Input({"batch_size": "1", "batch_007.content-type": "tensor/npz", "accept": "x"},
                PairList([("batch_000.data", b"d"), ("batch_009.data", b"e"), ("data", b"f")]))
    assert _batch.request_items(payload(odd)) == [("", "", b"d")]


@pytest.mark.parametrize("cut", [1, 5, 17, 40])
def test_a_truncated_request_frame_is_a_frame_error(cut: int) -> None:
    inputs = batch(({"content-type": "application/json"}, [("data", b"[1, 2, 3]")]))
    whole = payload(inputs)
    with pytest.raises(FrameError):
        _batch.request_items(whole[:len(whole) - cut])


def test_the_direct_results_frame_equals_the_generic_one(tmp_path: Path) -> None:
    e = engine(tmp_path, Double())
    request = batch(
        ({"content-type": "application/json"}, [("data", b"[1.5, 2.5]")]),
        ({"content-type": "application/json", "accept": "tensor/npz"}, [("data", b"[4]")]),
    )
    direct = e.answer_frame(payload(request), 1 << 20, 1 << 24)
    generic = results_frame(e.invoke(request), 1 << 20, 1 << 24)
    assert direct == generic
    assert direct[4] == _batch.RESULTS


def test_an_answer_over_the_item_limit_fails_only_its_request(tmp_path: Path) -> None:
    e = engine(tmp_path, Double())
    request = batch(
        ({"content-type": "application/json"}, [("data", b"[1]")]),
        ({"content-type": "application/json"}, [("data", json.dumps([1.0] * 50).encode())]),
    )
    decoder = _batch.FrameDecoder()
    decoder.feed(e.answer_frame(payload(request), 100, 1 << 24))
    kind, body = next(decoder)
    (k0, p0), (k1, p1) = _batch.decode_results(body)
    assert k0 == _batch.RESPONSE
    assert json.loads(bytes(_batch.decode_response(p0)[4][0])) == {"predictions": [2.0]}
    assert k1 == _batch.ERROR and _batch.decode_error(p1)[0] == ERROR_OUTPUT


class Double(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


def engine(tmp_path: Path, module: torch.nn.Module, **properties: str) -> TorchEngine:
    torch.jit.script(module).save(str(tmp_path / "model.pt"))
    e = TorchEngine(tmp_path, "model.pt", "-1")
    e.load(properties)
    assert e.initialise(Input(dict(properties), PairList())).code == 204
    return e


def test_a_batch_is_answered_request_by_request(tmp_path: Path) -> None:
    e = engine(tmp_path, Double())
    buf = io.BytesIO()
    np.savez(buf, np.array([1, 2], np.int64))
    answers = e.invoke(batch(
        ({"Content-Type": "application/json"}, [("data", b"[1.5, 2.5]")]),
        ({"Content-Type": "application/json"}, [("data", b"[1.5, oops")]),
        ({"Content-Type": "tensor/npz"}, [("data", buf.getvalue())]),
        ({"Content-Type": "text/csv"}, [("data", b"1,2")]),
    ))
    assert json.loads(bytes(answers[0].content.get("data"))) == {"predictions": [3.0, 5.0]}
    assert answers[0].properties["content-type"] == "application/json"
    assert isinstance(answers[1], ItemError) and answers[1].kind == "input"
    with np.load(io.BytesIO(bytes(answers[2].content.get("data")))) as f:
        np.testing.assert_array_equal(f[f.files[0]], [2, 4])
    assert answers[3] == ItemError(
        "input", "Unsupported content type text/csv: tensors are read from application/json, "
        "tensor/ndlist and tensor/npz")


def test_gpu_without_cuda_is_a_load_failure(tmp_path: Path) -> None:
    if torch.cuda.is_available():  # bench/gpu_check.sh runs this with CUDA hidden
        pytest.skip("this machine has CUDA")
    torch.jit.script(Double()).save(str(tmp_path / "model.pt"))
    with pytest.raises(TorchLoadError, match="Cannot load on gpu0: CUDA is not available"):
        TorchEngine(tmp_path, "model.pt", "0").load()


def test_batchifier_none_runs_a_scalar_input_on_its_own(tmp_path: Path) -> None:
    buf = io.BytesIO()
    np.savez(buf, np.array(1.5, np.float32))  # a 0-d input
    e = engine(tmp_path, Double(), batchifier="none")
    answers = e.invoke(batch(
        ({"Content-Type": "tensor/npz"}, [("data", buf.getvalue())]),
        ({"Content-Type": "application/json"}, [("data", b"[1.0, 2.0]")]),
    ))
    with np.load(io.BytesIO(bytes(answers[0].content.get("data")))) as f:
        assert f[f.files[0]].shape == () and float(f[f.files[0]]) == 3.0
    assert json.loads(bytes(answers[1].content.get("data"))) == {"predictions": [2.0, 4.0]}


# -- CUDA (bench/gpu_check.sh runs these on a machine with a GPU) ------------------------------

#: Set by bench/gpu_check.sh: there, a missing GPU is a failure, never a skip.
GPU_REQUIRED = os.environ.get("DJL_GPU_CHECK") == "1"
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available() and not GPU_REQUIRED,
                                reason="no CUDA on this machine (bench/gpu_check.sh)")


class Where(torch.nn.Module):
    """Each item's answer: the batch size × 100 + the index of the device it ran on."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0 + (x.size(0) * 100 + x.get_device())


@pytest.mark.gpu
@needs_cuda
def test_a_batch_runs_as_one_forward_on_each_cuda_device(tmp_path: Path) -> None:
    torch.jit.script(Where()).save(str(tmp_path / "model.pt"))
    assert torch.cuda.device_count() > 0
    for index in range(torch.cuda.device_count()):
        e = TorchEngine(tmp_path, "model.pt", str(index))
        e.load()
        assert e.device == torch.device(f"cuda:{index}")
        assert e.initialise(Input({}, PairList())).code == 204
        json_item = ({"Content-Type": "application/json"}, [("data", b"[1.0, 2.0]")])
        answers = e.invoke(batch(*[json_item] * 4))
        for answer in answers:  # 4 items in one forward, on cuda:index, answered on the CPU
            got = json.loads(bytes(answer.content.get("data")))
            assert got == {"predictions": [400.0 + index] * 2}, got


@pytest.mark.gpu
@needs_cuda
def test_a_device_past_the_gpu_count_is_a_load_failure(tmp_path: Path) -> None:
    torch.jit.script(Double()).save(str(tmp_path / "model.pt"))
    count = torch.cuda.device_count()
    with pytest.raises(TorchLoadError, match=f"Cannot load on gpu{count}: torch sees {count} "):
        TorchEngine(tmp_path, "model.pt", str(count)).load()


def test_the_cpu_runs_a_batch_as_one_forward_too(tmp_path: Path) -> None:
    """The same probe on the CPU (device index -1): what the CUDA test compares against."""
    e = engine(tmp_path, Where())
    json_item = ({"Content-Type": "application/json"}, [("data", b"[1.0]")])
    answers = e.invoke(batch(*[json_item] * 3))
    assert [json.loads(bytes(a.content.get("data"))) for a in answers] == [
        {"predictions": [299.0]}] * 3
