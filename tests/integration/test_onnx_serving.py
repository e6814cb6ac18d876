"""The ONNX Runtime engine and ``torch.export`` programs through the real server: folders
and archives, JSON and npz, batching by the declared ranks, bad shapes and bad models.

ONNX graphs are written by the tests (tests/onnx_models.py), ``.pt2`` files exported by
them; expected values come from numpy or from running the module directly. Batches are
made by firing requests concurrently at a generous ``max_batch_delay``; the models report
the batch size they saw, which proves a batch really formed.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx_models
import torch
import trio
from serving import running_server
from test_torch_serving import Mlp, npz_arrays, npz_bytes, post_many, register

from djl.ndlist import decode_ndlist, encode_ndlist

JSON = {"content-type": "application/json"}
NPZ = {"content-type": "tensor/npz"}
BATCHED = "batch_size=16\nmax_batch_delay=300\n"


async def refused(c: httpx.AsyncClient, url: str, name: str, status: int, *hints: str) -> str:
    r = await c.post("/models", params={"url": url, "model_name": name})
    assert r.status_code == status, r.text
    message = r.json()["message"]
    for hint in hints:
        assert hint in message, message
    assert (await c.get(f"/models/{name}")).status_code == 404  # rolled back
    return message


def signature_of(workflow: list[dict[str, Any]]) -> dict[str, Any]:
    return workflow[0]["models"][0]["signature"]


async def test_onnx_models_serve_every_format_and_batch_by_rank(tmp_path: Path) -> None:
    """A folder and a .tar.gz of model.onnx; JSON, NDList and npz; concurrent requests one
    dimension short stacked, ones carrying the batch axis concatenated, each answered with
    its own rows; a wrong shape fails alone; describe names the graph's inputs."""
    folder = onnx_models.linear(tmp_path / "linear")
    (folder / "serving.properties").write_text(BATCHED)
    archive = tmp_path / "packed.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(folder / "model.onnx", arcname="packed/model.onnx")
    two = onnx_models.scale(tmp_path / "two")
    row = np.array([0.5, -1.0, 2.0, 3.25], np.float32)
    async with running_server(tmp_path) as server:
        c = server.client
        await register(c, f"file:{folder}/", "linear")
        await register(c, f"file:{archive}", "packed")
        await register(c, f"file:{two}/", "two")
        assert signature_of((await c.get("/models/linear")).json()) == {
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]},
                        {"name": "rows", "datatype": "INT64", "shape": [-1]}],
        }
        for name in ("linear", "packed"):
            for body in (row.tolist(), {"inputs": row.tolist()}):
                r = await c.post(f"/predictions/{name}", content=json.dumps(body),
                                 headers=JSON)
                assert r.status_code == 200, r.text
                y, rows = r.json()["predictions"]
                assert y[0] == "y" and rows == ["rows", 1]
                np.testing.assert_allclose(y[1], onnx_models.expected(row), rtol=1e-6)
            r = await c.post(f"/predictions/{name}", content=encode_ndlist([row]),
                             headers={"content-type": "tensor/ndlist"})
            assert r.status_code == 200, r.text
            y, rows = decode_ndlist(r.content)
            np.testing.assert_allclose(y, onnx_models.expected(row), rtol=1e-6)

        # Requests of rank 1 are stacked, requests [k, 4] concatenated, in one batch.
        singles = [np.full(4, i, np.float32) for i in range(6)]
        blocks = [np.arange(4 * k, dtype=np.float32).reshape(k, 4) + 100 * k
                  for k in (2, 2, 3, 3, 3)]
        wrong = [np.ones(5, np.float32), np.ones((2, 5), np.float32), np.ones(4, np.float64)]
        requests = [(npz_bytes(a), NPZ) for a in singles + blocks + wrong]
        answers = await post_many(c, "linear", requests)
        sizes = []
        for x, r in zip(singles + blocks, answers, strict=False):
            assert r.status_code == 200, r.text
            got = npz_arrays(r.content)
            np.testing.assert_allclose(got["y"], onnx_models.expected(x), rtol=1e-6)
            sizes.append(int(got["rows"].flat[0]))
        assert max(sizes[:6]) > 1, sizes  # rows stacked from several requests
        assert max(sizes[6:]) > 3, sizes  # blocks of one request are 2 or 3 rows
        short, narrow, double = answers[len(singles) + len(blocks):]
        for r, shape in ((short, "[5]"), (narrow, "[2, 5]")):
            assert r.status_code == 400, r.text
            assert r.json()["message"].startswith(
                f"Input 0 (x) has shape {shape}, which does not fit the model's [-1, 4]"), r.text
        assert double.status_code == 400, double.text  # onnxruntime's own reason, one line
        assert double.json()["message"] == (
            "The model rejected the input: Unexpected input data type. "
            "Actual: (tensor(double)) , expected: (tensor(float))"), double.text

        # Two inputs, the first int64: an npz carries both; JSON carries one array only.
        ids, x = np.array([2, 3], np.int64), np.ones((2, 2), np.float32)
        r = await c.post("/predictions/two", content=npz_bytes(ids, x), headers=NPZ)
        assert r.status_code == 200, r.text
        np.testing.assert_array_equal(npz_arrays(r.content)["scaled"], [[2, 2], [3, 3]])
        r = await c.post("/predictions/two", content=b"[1, 2]", headers=JSON)
        assert r.status_code == 400, r.text
        assert "takes 2 inputs (ids, x)" in r.json()["message"], r.text
        assert signature_of((await c.get("/models/two")).json())["inputs"][0] == {
            "name": "ids", "datatype": "INT64", "shape": [-1]}


async def test_fixed_batch_runs_alone_and_bad_models_fail_registration(tmp_path: Path) -> None:
    fixed = onnx_models.linear(tmp_path / "fixed", batch=1)
    (fixed / "serving.properties").write_text(BATCHED)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "model.onnx").write_bytes(b"\x08\x07 not a graph")
    (tmp_path / "secret.bin").write_bytes(onnx_models.W.tobytes())
    escaping = onnx_models.external(tmp_path / "escaping", "../secret.bin")
    inside = onnx_models.external(tmp_path / "inside", "weights.bin")
    (inside / "weights.bin").write_bytes(onnx_models.W.tobytes())
    option = onnx_models.linear(tmp_path / "option")
    (option / "serving.properties").write_text("option.optLevel=FASTEST\n")
    broken_pt2 = tmp_path / "broken_pt2"
    broken_pt2.mkdir()
    (broken_pt2 / "model.pt2").write_bytes(b"PK\x03\x04 not an archive")
    async with running_server(tmp_path) as server:
        c = server.client
        await register(c, f"file:{fixed}/", "fixed")
        rows = [np.full(4, i, np.float32) for i in range(4)]
        answers = await post_many(c, "fixed", [(npz_bytes(x), NPZ) for x in rows])
        for x, r in zip(rows, answers, strict=True):
            assert r.status_code == 200, r.text
            got = npz_arrays(r.content)
            np.testing.assert_allclose(got["y"], onnx_models.expected(x[None])[0], rtol=1e-6)
            assert got["rows"].tolist() == 1  # each alone, as a batch of one
        await register(c, f"file:{inside}/", "inside")
        r = await c.post("/predictions/inside", content=b"[1, 0, 0, 0]", headers=JSON)
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["predictions"], onnx_models.W[0], rtol=1e-6)
        with trio.fail_after(60):  # a bad model is an answer, never a hang
            await refused(c, f"file:{corrupt}/", "corrupt", 500, "Failed to initialize model",
                          "Protobuf parsing failed")
            await refused(c, f"file:{escaping}/", "escaping", 500,
                          "External data path escapes model directory")
            await refused(c, f"file:{option}/", "option", 500,
                          "option.optLevel FASTEST: use NO_OPT, BASIC_OPT")
            await refused(c, f"file:{broken_pt2}/", "broken_pt2", 500,
                          "Failed to initialize model")
        r = await c.post("/models", params={"url": f"file:{fixed}/", "model_name": "gpu",
                                            "device": "gpu0"})
        assert r.status_code == 500, r.text
        assert "Cannot load on gpu0" in r.json()["message"], r.text


async def test_torch_export_programs_serve_like_torchscript(tmp_path: Path) -> None:
    """model.pt2 from torch.export.save: the same answers as the TorchScript file of the
    same module; the dynamic batch dimension and the names come from its signature."""
    mlp = Mlp().eval()
    script, exported = tmp_path / "script", tmp_path / "exported"
    script.mkdir()
    exported.mkdir()
    torch.jit.script(mlp).save(str(script / "model.pt"))
    program = torch.export.export(mlp, (torch.zeros(2, 4),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(exported / "model.pt2"))
    (exported / "serving.properties").write_text(BATCHED)
    rows = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    async with running_server(tmp_path) as server:
        c = server.client
        await register(c, f"file:{script}/", "script")
        await register(c, f"file:{exported}/", "exported")
        assert signature_of((await c.get("/models/exported")).json()) == {
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
            "outputs": [{"name": "linear_1", "datatype": "FP32", "shape": [-1, 3]}],
        }
        for x in rows:
            a = await c.post("/predictions/script", content=json.dumps(x.tolist()),
                             headers=JSON)
            b = await c.post("/predictions/exported", content=json.dumps(x.tolist()),
                             headers=JSON)
            assert a.status_code == b.status_code == 200, (a.text, b.text)
            np.testing.assert_allclose(b.json()["predictions"], a.json()["predictions"],
                                       atol=1e-5)
        # [k, 4] requests carry the batch axis: concatenated, each gets its own k rows.
        blocks = [rows[:2], rows[2:5], rows[5:]]
        answers = await post_many(c, "exported", [(npz_bytes(b), NPZ) for b in blocks])
        with torch.inference_mode():
            for block, r in zip(blocks, answers, strict=True):
                assert r.status_code == 200, r.text
                np.testing.assert_allclose(npz_arrays(r.content)["arr_0"],
                                           mlp(torch.from_numpy(block)).numpy(), atol=1e-5)
        r = await c.post("/predictions/exported", content=b"[1, 2, 3]", headers=JSON)
        assert r.status_code == 400, r.text
