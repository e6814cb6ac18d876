"""djl.tensor_batch: a batched Input read, grouped by signature, answered item by item."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from djl import _batch
from djl.io import Input, PairList, batch_key
from djl.ndlist import decode_ndlist, encode_ndlist
from djl.tensor_batch import TensorBatch


def batched(*requests: tuple[bytes, dict[str, str]]) -> Input:
    """The Input a handler receives for these (body, headers) requests (spec §6.8)."""
    if len(requests) == 1:
        body, headers = requests[0]
        return Input(dict(headers), PairList([("data", body)]))
    props = {"batch_size": str(len(requests))}
    content = PairList()
    for i, (body, headers) in enumerate(requests):
        props.update({batch_key(i, k): v for k, v in headers.items()})
        content.add(batch_key(i, "data"), body)
    return Input(props, content)


def answers(inputs: Input, output) -> list[bytes]:
    """Request i's body: the content item batch_<i>.data."""
    items = dict(output.content.items())
    return [items[f"batch_{i}.data"] for i in range(inputs.get_batch_size())]


JSON = {"content-type": "application/json"}


def test_groups_by_signature_and_answers_each_in_its_own_format() -> None:
    npz = io.BytesIO()
    np.savez(npz, np.full((2,), 5, np.float32))
    inputs = batched(
        (b"[1, 2]", JSON),
        (b"[[1, 2, 3]]", JSON),
        (encode_ndlist([np.array([3, 4], np.float32)]), {"Content-Type": "tensor/ndlist"}),
        (npz.getvalue(), {"content-type": "tensor/npz"}),
        (b"[7, 8]", {"content-type": "application/json", "accept": "tensor/npz"}),
    )
    batch = TensorBatch(inputs)
    assert len(batch) == 5
    assert [g.indices for g in batch] == [[0, 2, 3, 4], [1]]
    seen = []
    for group in batch:
        (x,) = group.inputs
        assert isinstance(x, np.ndarray) and x.shape[0] == len(group)
        seen.append(x.copy())
        group.set_outputs(x * 10)
    assert seen[0].tolist() == [[1, 2], [3, 4], [5, 5], [7, 8]]
    output = batch.output()
    assert "content-type" not in output.properties  # mixed formats share one header set
    bodies = answers(inputs, output)
    assert json.loads(bodies[0]) == {"predictions": [10.0, 20.0]}
    assert json.loads(bodies[1]) == {"predictions": [[10.0, 20.0, 30.0]]}
    assert decode_ndlist(bodies[2])[0].tolist() == [30.0, 40.0]
    with np.load(io.BytesIO(bodies[3])) as archive:
        assert archive["arr_0"].tolist() == [50.0, 50.0]
    with np.load(io.BytesIO(bodies[4])) as archive:
        assert archive["arr_0"].tolist() == [70.0, 80.0]


def test_one_format_sets_the_content_type_and_named_outputs_keep_their_names() -> None:
    inputs = batched((b"[1, 2]", JSON), (b"[3, 4]", JSON))
    batch = TensorBatch(inputs)
    (group,) = batch
    (x,) = group.inputs
    group.set_outputs({"double": x * 2, "sum": x.sum(axis=1)})
    output = batch.output()
    assert output.properties["content-type"] == "application/json"
    assert [json.loads(b) for b in answers(inputs, output)] == [
        {"predictions": [["double", [2.0, 4.0]], ["sum", 3.0]]},
        {"predictions": [["double", [6.0, 8.0]], ["sum", 7.0]]},
    ]


def test_bad_requests_get_their_error_and_batch_mates_their_answers() -> None:
    inputs = batched((b"[1, 2]", JSON), (b"[[1], [2, 3]]", JSON),
                     (b"[1]", {"content-type": "text/csv"}), (b"[1, 2, 3]", JSON))
    batch = TensorBatch(inputs)
    for group in batch:
        (x,) = group.inputs
        if x.shape[1] != 2:
            group.fail(f"expected 2 features, got {x.shape[1]}")
        else:
            group.set_outputs(x + 1)
    output = batch.output()
    assert output.code == 200
    assert output.properties["content-type"] == "application/json"  # errors are JSON too
    ok, ragged, csv, wide = (json.loads(b) for b in answers(inputs, output))
    assert ok == {"predictions": [2.0, 3.0]}
    assert ragged == {"code": 400, "type": "TranslateException",
                      "message": "JSON input: row 1 has 2 values, row 0 has 1 value"}
    assert csv["message"].startswith("Unsupported content type text/csv")
    assert wide["message"] == "expected 2 features, got 3"


def test_a_request_alone_that_fails_is_a_400() -> None:
    inputs = batched((b"[1, 2", JSON))
    output = TensorBatch(inputs).output()
    assert (output.code, output.properties["content-type"]) == (400, "application/json")
    body = json.loads(output.get_data_item())
    assert body["message"] == "JSON input: expected ',' or ']': the payload ends at byte 5"
    unanswered = TensorBatch(batched((b"[1]", JSON))).output()  # the handler forgot a group
    assert json.loads(unanswered.get_data_item())["message"] == (
        "The handler produced no output for this request")


def test_outputs_that_do_not_split_fail_their_group() -> None:
    inputs = batched((b"[1, 2]", JSON), (b"[3, 4]", JSON))
    batch = TensorBatch(inputs)
    (group,) = batch
    group.set_outputs(np.zeros(3))
    output = batch.output()  # every request failed: the batch answers 400
    assert output.code == 400
    assert json.loads(output.get_data_item())["message"] == (
        "The model's output 0 has shape [3]: its first axis must be the batch (2)")


def test_torch_tensors_share_the_batch_buffer() -> None:
    torch = pytest.importorskip("torch")
    inputs = batched((encode_ndlist([np.arange(3, dtype=np.int64)]), {}),
                     (encode_ndlist([np.arange(3, 6, dtype=np.int64)]), {}))
    batch = TensorBatch(inputs, torch=True)
    (group,) = batch
    (x,) = group.inputs
    assert isinstance(x, torch.Tensor) and x.dtype == torch.int64 and x.shape == (2, 3)
    group.set_outputs((x * 2, x.to(torch.bfloat16)))
    output = batch.output()
    assert output.properties["content-type"] == "tensor/ndlist"
    doubled, as_float = decode_ndlist(answers(inputs, output)[1])
    assert doubled.tolist() == [6, 8, 10] and as_float.dtype == np.float32
    assert _batch.output_format(None, None) == _batch.FORMAT_NDLIST


def test_outputs_not_in_c_order_are_answered_by_value() -> None:
    """A transposed or strided output (numpy or torch) is what its values say, in every
    format (the encoders copy them into C order)."""
    import torch

    inputs = batched((b"[[1, 2, 3]]", JSON), (b"[[4, 5, 6]]", JSON),
                     (b"[[7, 8, 9]]", {**JSON, "accept": "tensor/ndlist"}))
    batch = TensorBatch(inputs)
    (group,) = batch
    (x,) = group.inputs  # shape (3, 1, 3)
    fortran = np.asfortranarray(x[:, 0, :])
    strided = torch.from_numpy(np.ascontiguousarray(x[:, 0, :].T)).T  # a transposed view
    assert not fortran.flags.c_contiguous and not strided.is_contiguous()
    group.set_outputs((fortran, strided))
    bodies = answers(inputs, batch.output())
    assert json.loads(bodies[0]) == {"predictions": [["arr_0", [1.0, 2.0, 3.0]],
                                                     ["arr_1", [1.0, 2.0, 3.0]]]}
    assert [a.tolist() for a in decode_ndlist(bodies[2])] == [[7.0, 8.0, 9.0]] * 2
