"""djl/runtime/torch_engine.py in-process: formats, batch items, and one engine's answers."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from djl import _batch
from djl.errors import ItemError, TranslateError, UnsupportedMediaType
from djl.io import Input, PairList, batch_key
from djl.ndlist import encode_ndlist
from djl.runtime.torch_engine import (
    TorchEngine,
    TorchLoadError,
    batch_items,
    input_format,
    output_format,
)

J, N, Z = _batch.FORMAT_JSON, _batch.FORMAT_NDLIST, _batch.FORMAT_NPZ


@pytest.mark.parametrize(
    ("content_type", "data", "fmt"),
    [
        ("application/json", b"[1]", J),
        ("Application/JSON; charset=utf-8", b"[1]", J),
        ("application/vnd.api+json", b"[1]", J),
        ("tensor/ndlist", b"x", N),
        ("tensor/npz", b"x", Z),
        ("", b"PK\x03\x04", Z),  # no content type: sniffed
        ("", encode_ndlist([np.zeros(1)]), N),
        ("", b"[1, 2]", J),
        ("application/octet-stream", b"PK\x03\x04", Z),
    ],
)
def test_input_format(content_type: str, data: bytes, fmt: int) -> None:
    assert input_format(content_type, data) == fmt


def test_input_format_refuses() -> None:
    with pytest.raises(UnsupportedMediaType, match="Unsupported content type text/csv") as e:
        input_format("text/csv", b"1,2")
    assert e.value.status == 415
    with pytest.raises(UnsupportedMediaType):
        input_format("application/octet-stream", b"\x01\x02")
    with pytest.raises(TranslateError, match="empty"):
        input_format("application/json", b"")


@pytest.mark.parametrize(
    ("accept", "content_type", "fmt"),
    [
        ("", "application/json", J),
        ("*/*", "application/json", J),
        ("tensor/npz", "application/json", Z),
        ("tensor/ndlist", "application/json", N),
        ("", "tensor/npz", Z),
        ("tensor/ndlist", "tensor/npz", Z),  # npz when either says so (DJL)
        ("", "tensor/ndlist", N),
        ("application/json", "tensor/ndlist", J),
        ("text/html, application/json;q=0.9", "tensor/ndlist", J),
        ("", "", N),  # DJL's default
    ],
)
def test_output_format(accept: str, content_type: str, fmt: int) -> None:
    assert output_format(accept, content_type) == fmt


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


def test_items_of_a_batch() -> None:
    inputs = batch(
        ({"Content-Type": "application/json", "Accept": "tensor/npz"}, [("data", b"[1]")]),
        ({"content-type": "tensor/npz"}, [("q", b"query"), ("data", b"PK")]),
        ({}, [("only", b"first")]),
    )
    assert batch_items(inputs) == [
        ("application/json", "tensor/npz", b"[1]"),
        ("tensor/npz", "", b"PK"),  # the data item, not the query item before it
        ("", "", b"first"),
    ]
    single = Input({"CONTENT-TYPE": "tensor/npz", "accept": "x"}, PairList([("data", b"d")]))
    assert batch_items(single) == [("tensor/npz", "x", b"d")]


class Double(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


def engine(tmp_path: Path, module: torch.nn.Module, **properties: str) -> TorchEngine:
    torch.jit.script(module).save(str(tmp_path / "model.pt"))
    e = TorchEngine(tmp_path, "model.pt", "-1")
    e.load()
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
    assert isinstance(answers[3], ItemError) and answers[3].kind == "media_type"


def test_gpu_without_cuda_is_a_load_failure(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    torch.jit.script(Double()).save(str(tmp_path / "model.pt"))
    with pytest.raises(TorchLoadError, match="Cannot load on gpu0: CUDA is not available"):
        TorchEngine(tmp_path, "model.pt", "0").load()
