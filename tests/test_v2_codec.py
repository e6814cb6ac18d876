"""djl/_v2.pxi: v2 request bodies read into collatable tensors, answers written in v2."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from djl import _batch
from djl.errors import BadInput


def body(*inputs: dict, **extra: object) -> bytes:
    return json.dumps({"inputs": list(inputs), **extra}).encode()


def binary_type(header: bytes) -> str:
    return f"{_batch.V2_MEDIA_TYPE}; header-length={len(header)}"


def test_json_values_are_exact_in_their_datatype() -> None:
    big = 2**63 - 1
    p = _batch.parse_v2(body(
        {"name": "i", "shape": [2, 2], "datatype": "INT64", "data": [[1, -2], [3, big]]},
        {"name": "u", "shape": [1], "datatype": "UINT64", "data": [2**64 - 1]},
        {"name": "h", "shape": [4], "datatype": "FP16", "data": [0.1, 65519.9, 1e-8, -3]},
        {"name": "b", "shape": [2], "datatype": "BOOL", "data": [True, False]}))
    i, u, h, b = _batch.collate([p])
    assert i[0].tolist() == [[1, -2], [3, big]] and i.dtype == np.int64
    assert u[0, 0] == 2**64 - 1
    # one correct rounding from the decimal, as numpy's from a float64
    np.testing.assert_array_equal(h[0], np.array([0.1, 65519.9, 1e-8, -3]).astype(np.float16))
    assert b[0].tolist() == [True, False]
    assert p.names == ("i", "u", "h", "b")


def test_a_v2_request_stacks_with_an_npz_one() -> None:
    """Same dtype and shape: one signature, one collate, whatever the format."""
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    header = body({"name": "x", "shape": [2, 3], "datatype": "FP32",
                   "parameters": {"binary_data_size": 24}})
    v2 = _batch.parse_v2(header + x.tobytes(), binary_type(header))
    buf = io.BytesIO()
    np.savez(buf, x + 1)
    npz = _batch.parse_tensors(buf.getvalue(), _batch.FORMAT_NPZ)
    assert v2.signature == npz.signature
    [stacked] = _batch.collate([v2, npz])
    np.testing.assert_array_equal(stacked, np.stack([x, x + 1]))


def test_answers_json_and_binary() -> None:
    header = body({"name": "x", "shape": [1], "datatype": "FP32", "data": [1]},
                  id="r9", outputs=[{"name": "output1", "parameters": {"binary_data": True}},
                                    {"name": "output0"}])
    p = _batch.parse_v2(header)
    assert p.v2.answer_format == _batch.FORMAT_V2_BINARY
    outs = [np.array([[0.5, 1.0]], np.float32), np.array([[7]], np.int32)]
    [answer] = _batch.encode_rows(outs, [p.v2.answer_format], None, [p])
    size = int.from_bytes(answer[:4], "little")
    head = json.loads(answer[4:4 + size])
    assert head == {"id": "r9", "outputs": [
        {"name": "output1", "datatype": "INT32", "shape": [1],
         "parameters": {"binary_data_size": 4}},
        {"name": "output0", "datatype": "FP32", "shape": [2], "data": [0.5, 1.0]}]}
    assert answer[4 + size:] == np.int32(7).tobytes()
    # all outputs, JSON; a named output; an unknown one fails that row only
    plain = _batch.parse_v2(body({"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}))
    wrong = _batch.parse_v2(body({"name": "x", "shape": [1], "datatype": "FP32", "data": [1]},
                                 outputs=[{"name": "nope"}]))
    ok, refused = _batch.encode_rows([np.ones((2, 1), np.float64)], [4, 4], ["y"],
                                     [plain, wrong])
    assert json.loads(ok) == {"outputs": [{"name": "y", "datatype": "FP64", "shape": [1],
                                           "data": [1.0]}]}
    assert isinstance(refused, BadInput) and "nope" in refused.message


def test_inputs_named_as_the_model_names_them_follow_its_order() -> None:
    a = {"name": "a", "shape": [1], "datatype": "INT32", "data": [1]}
    b = {"name": "b", "shape": [2], "datatype": "FP32", "data": [2, 3]}
    p = _batch.parse_v2(body(b, a), input_names=("a", "b"))
    assert p.names == ("a", "b")
    assert p.signature == (("int32", (1,)), ("float32", (2,)))
    got_a, got_b = _batch.collate([p])
    assert got_a.tolist() == [[1]] and got_b.tolist() == [[2.0, 3.0]]
    # names the model does not have: request order
    assert _batch.parse_v2(body(b, a), input_names=("x", "y")).names == ("b", "a")


def test_bytes_and_bf16_inputs() -> None:
    strings = b"\x02\x00\x00\x00ab\x00\x00\x00\x00"
    bf16 = np.array([0x3FC0, 0xC000], np.uint16).tobytes()  # 1.5, -2.0
    header = body({"name": "s", "shape": [2], "datatype": "BYTES",
                   "parameters": {"binary_data_size": len(strings)}},
                  {"name": "w", "shape": [2], "datatype": "BF16",
                   "parameters": {"binary_data_size": 4}},
                  {"name": "t", "shape": [1], "datatype": "BYTES", "data": ["h\u00e9"]})
    p = _batch.parse_v2(header + strings + bf16, binary_type(header))
    assert [dtype for dtype, _ in p.signature] == ["object", "bfloat16", "object"]
    s, w, t = _batch.collate([p])
    assert s[0].tolist() == [b"ab", b""] and t[0].tolist() == ["h\u00e9".encode()]
    assert w.dtype == np.int16 and w[0].view(np.uint16).tolist() == [0x3FC0, 0xC000]


@pytest.mark.parametrize(("raw", "needle"), [
    (b"", "empty"),
    (b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2, 3]}]}',
     "more than"),
    (b'{"inputs": [{"name": "x", "shape": [2], "datatype": "INT8", "data": [1, 128]}]}',
     "out of range"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [1.5]}]}',
     "integer"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "BOOL", "data": [1]}]}',
     "true or false"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}', "no \"data\""),
    (b'{"inputs": [{"shape": [1], "datatype": "FP32", "data": [1]}]}', "no \"name\""),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "data": [1]}]}', "no \"shape\""),
    (b'{"inputs": [{"name": "x", "shape": [1.5], "datatype": "FP32", "data": [1]}]}',
     "integer"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]},'
     b' {"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}', "twice"),
    (b'{"inputs": []}', 'no "inputs"'),
    (b'{"id": 5, "inputs": []}', "string"),
    (b'{"inputs": [{"name": "x", "shape": [99999999999], "datatype": "FP64",'
     b' "data": [1]}]}', "can carry"),
])
def test_refusals_name_the_problem(raw: bytes, needle: str) -> None:
    with pytest.raises(BadInput) as info:
        _batch.parse_v2(raw)
    assert needle in info.value.message, info.value.message


def test_binary_sizes_are_checked_against_the_body() -> None:
    header = body({"name": "x", "shape": [2], "datatype": "FP32",
                   "parameters": {"binary_data_size": 8}})
    with pytest.raises(BadInput, match="overruns"):
        _batch.parse_v2(header + b"\x00" * 4, binary_type(header))
    with pytest.raises(BadInput, match="no input's binary data"):
        _batch.parse_v2(header + b"\x00" * 12, binary_type(header))
    wrong = body({"name": "x", "shape": [3], "datatype": "FP32",
                  "parameters": {"binary_data_size": 8}})
    with pytest.raises(BadInput, match="does not fill"):
        _batch.parse_v2(wrong + b"\x00" * 12, binary_type(wrong))
