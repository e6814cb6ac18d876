"""djl.signature: what an engine reports of its model's inputs and outputs, and how the
server reads it back."""

from __future__ import annotations

import pytest

from djl.signature import Signature, TensorSpec, datatype_of


def test_round_trip_leaves_unknowns_out() -> None:
    sig = Signature(
        inputs=(TensorSpec("x", "FP32", (-1, 128)), TensorSpec("mask")),
        outputs=(TensorSpec(datatype="INT64"),),
    )
    assert sig.as_json() == {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 128]}, {"name": "mask"}],
        "outputs": [{"datatype": "INT64"}],
    }
    assert Signature.decode(sig.encode()) == sig
    assert Signature(inputs=None, outputs=None).as_json() == {}


@pytest.mark.parametrize("text", ["", "not json", "[1, 2]", '{"inputs": [{"shape": "ab"}]}',
                                  '{"inputs": 3}'])
def test_a_malformed_report_is_no_signature(text: str) -> None:
    assert Signature.decode(text) is None


def test_datatypes_are_the_open_inference_protocols() -> None:
    assert [datatype_of(n) for n in ("float32", "torch.int64", "bool", "torch.bfloat16")] == [
        "FP32", "INT64", "BOOL", "BF16"]
    assert datatype_of("complex64") is None
