"""A hand-written model.py on the collation fast path (djl.tensor_batch), through the real
server: concurrent requests share batches, and each answer is its own input's result."""

from __future__ import annotations

import io
import json

import numpy as np
import trio

from djl.ndlist import decode_ndlist, encode_ndlist
from tests.serving import register, running_server


def expected(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) * 2 + 1


async def test_concurrent_json_requests_are_stacked_and_answered_each_its_own(tmp_path):
    rng = np.random.default_rng(7)
    inputs = rng.standard_normal((16, 3, 4)).astype(np.float32)
    async with running_server(tmp_path) as server:
        await register(server, "tensor_batch")
        groups: list[int] = []

        async def one(i: int) -> None:
            body = json.dumps({"inputs": inputs[i].tolist()})
            r = await server.client.post("/predictions/tensor_batch", content=body,
                                         headers={"content-type": "application/json"})
            assert r.status_code == 200, r.text
            assert r.headers["content-type"] == "application/json"
            (name_y, y), (name_g, group) = json.loads(r.text)["predictions"]
            assert (name_y, name_g) == ("y", "group")
            assert np.array_equal(np.array(y, dtype=np.float32), expected(inputs[i]))
            groups.append(group)

        async with trio.open_nursery() as nursery:
            for i in range(16):
                nursery.start_soon(one, i)
        print("group sizes seen:", sorted(groups))
        assert len(groups) == 16 and max(groups) > 1 and max(groups) <= 8


async def test_mixed_formats_and_a_bad_request_in_one_batch(tmp_path):
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    npz = io.BytesIO()
    np.savez(npz, x + 100)
    requests = {
        "json": (json.dumps(x.tolist()).encode(), {"content-type": "application/json"}),
        "ndlist": (encode_ndlist([x + 10]), {"content-type": "tensor/ndlist"}),
        "npz": (npz.getvalue(), {"content-type": "tensor/npz"}),
        "ragged": (b"[[1, 2, 3, 4], [5]]", {"content-type": "application/json"}),
        "wide": (b"[[1, 2, 3]]", {"content-type": "application/json"}),
    }
    answers = {}
    async with running_server(tmp_path) as server:
        await register(server, "tensor_batch")

        async def one(name: str) -> None:
            body, headers = requests[name]
            answers[name] = await server.client.post("/predictions/tensor_batch",
                                                     content=body, headers=headers)

        async with trio.open_nursery() as nursery:
            for name in requests:
                nursery.start_soon(one, name)
    for r in answers.values():
        assert r.status_code in (200, 400), r.text
    body = json.loads(answers["json"].content)["predictions"]
    assert np.array_equal(np.array(body[0][1], dtype=np.float32), expected(x))
    y, _group = decode_ndlist(answers["ndlist"].content)
    assert np.array_equal(y, expected(x + 10))
    with np.load(io.BytesIO(answers["npz"].content)) as archive:
        assert archive.files == ["y", "group"]
        assert np.array_equal(archive["y"], expected(x + 100))
    ragged = json.loads(answers["ragged"].content)
    assert ragged["type"] == "TranslateException"
    assert ragged["message"] == "JSON input: row 1 has 1 value, row 0 has 4 values"
    wide = json.loads(answers["wide"].content)
    assert wide["message"] == "The model expects 4 features, got shape [1, 3]"
    # the worker lives on, and a bad request alone is a plain 400
    async with running_server(tmp_path) as server:
        await register(server, "tensor_batch", batch_size="1")
        r = await server.client.post("/predictions/tensor_batch", content=b"[1, 2",
                                     headers={"content-type": "application/json"})
        assert r.status_code == 400, r.text
        assert json.loads(r.text)["message"] == (
            "JSON input: expected ',' or ']': the payload ends at byte 5")
        r = await server.client.post("/predictions/tensor_batch", content=b"[1, 2, 3, 4]",
                                     headers={"content-type": "application/json"})
        assert r.status_code == 200
        assert json.loads(r.text)["predictions"] == [["y", [3.0, 5.0, 7.0, 9.0]], ["group", 1]]
