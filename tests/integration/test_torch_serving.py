"""The PyTorch engine through the real server: TorchScript folders and archives, the three
wire formats, batching by signature, and bad input answered request by request.

Every .pt file is scripted into ``tmp_path`` by the test itself (nothing binary in git).
Expected values come from running the same module directly in the test; the server's
answers must equal them. Batches are made by firing requests concurrently at a model with
a generous ``max_batch_delay``; models that report the batch size they saw prove a batch
really formed.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
import trio
from serving import running_server
from store_helpers import ServerThread, Site, tar_bytes

from djl.ndlist import decode_ndlist, encode_ndlist

JSON = {"content-type": "application/json"}


class Mlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BatchReporter(torch.nn.Module):
    """Returns (2x its input, the batch size it saw for every row)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = x.shape[0]
        return x * 2, torch.full([n], n, dtype=torch.int64)


class TwoInputs(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"sum": a + b, "product": a * b}


class Rank(torch.nn.Module):
    """The number of dimensions the model sees: 2 for one row stacked, 1 alone."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() > 1:
            return torch.zeros([x.shape[0], 1]) + x.dim()
        return torch.tensor([float(x.dim())])


def save(module: torch.nn.Module, folder: Path, name: str = "model.pt",
         properties: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    torch.jit.script(module).save(str(folder / name))
    if properties:
        (folder / "serving.properties").write_text(properties)
    return folder


async def register(c: httpx.AsyncClient, url: str, name: str, **params: str) -> None:
    r = await c.post("/models", params={"url": url, "model_name": name, **params})
    assert r.status_code == 200, r.text


def npz_bytes(*arrays: np.ndarray, **named: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, *arrays, **named)
    return buf.getvalue()


def npz_arrays(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data)) as f:
        return {k: f[k] for k in f.files}


def expected(module: torch.nn.Module, row: list[float]) -> np.ndarray:
    """What the model answers for one request: run on a batch of one, row 0 (stack)."""
    with torch.inference_mode():
        return module(torch.tensor([row], dtype=torch.float32))[0].numpy()


ROW = [0.5, -1.0, 2.0, 3.25]


async def test_folder_and_archive_round_trips(tmp_path: Path) -> None:
    """A folder with model.pt and a .tar.gz over HTTP both serve JSON, NDList and npz."""
    mlp = Mlp().eval()
    folder = save(mlp, tmp_path / "mlp")
    want = expected(mlp, ROW)
    site = Site(files={"/mlp.tar.gz": tar_bytes([("file", "model.pt",
                                                   (folder / "model.pt").read_bytes())])})
    with ServerThread(site):
        async with running_server(tmp_path) as server:
            c = server.client
            await register(c, f"file:{folder}/", "local")
            await register(c, f"{site.base}/f/mlp.tar.gz", "remote")
            for name in ("local", "remote"):
                # JSON: a bare array, {"inputs": ...} and {"instance": ...}.
                for body in (ROW, {"inputs": ROW}, {"instance": ROW}):
                    r = await c.post(f"/predictions/{name}", content=json.dumps(body),
                                     headers=JSON)
                    assert r.status_code == 200, r.text
                    assert r.headers["content-type"] == "application/json"
                    np.testing.assert_allclose(r.json()["predictions"], want, rtol=1e-5)
                # NDList in, NDList out.
                r = await c.post(f"/predictions/{name}",
                                 content=encode_ndlist([np.array(ROW, np.float32)]),
                                 headers={"content-type": "tensor/ndlist"})
                assert r.status_code == 200, r.text
                assert r.headers["content-type"] == "tensor/ndlist"
                [got] = decode_ndlist(r.content)
                np.testing.assert_allclose(got, want, rtol=1e-5)
                # npz in, npz out.
                r = await c.post(f"/predictions/{name}",
                                 content=npz_bytes(np.array(ROW, np.float32)),
                                 headers={"content-type": "tensor/npz"})
                assert r.status_code == 200, r.text
                assert r.headers["content-type"] == "tensor/npz"
                [got] = npz_arrays(r.content).values()
                np.testing.assert_allclose(got, want, rtol=1e-5)
            # Accept picks the answer's format.
            r = await c.post("/predictions/local", content=json.dumps(ROW),
                             headers={**JSON, "accept": "tensor/npz"})
            assert r.headers["content-type"] == "tensor/npz"
            np.testing.assert_allclose(list(npz_arrays(r.content).values())[0], want, rtol=1e-5)
            r = await c.post("/predictions/local", content=json.dumps(ROW),
                             headers={**JSON, "accept": "tensor/ndlist"})
            assert r.headers["content-type"] == "tensor/ndlist"
            np.testing.assert_allclose(decode_ndlist(r.content)[0], want, rtol=1e-5)
            r = await c.post("/predictions/local",
                             content=encode_ndlist([np.array(ROW, np.float32)]),
                             headers={"content-type": "tensor/ndlist",
                                      "accept": "application/json"})
            assert r.headers["content-type"] == "application/json"
            np.testing.assert_allclose(r.json()["predictions"], want, rtol=1e-5)
            [workflow] = (await c.get("/models/remote")).json()
            assert workflow["models"][0]["status"] == "Healthy"
            # The forward's schema names its input; a script declares no dtype or shape.
            assert workflow["models"][0]["signature"] == {
                "inputs": [{"name": "x"}], "outputs": [{}]}


async def test_several_inputs_and_named_outputs(tmp_path: Path) -> None:
    """An npz with two arrays is two positional inputs; a dict of tensors, named outputs."""
    folder = save(TwoInputs(), tmp_path / "two")
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.full((2, 3), 3, dtype=np.float32)
    async with running_server(tmp_path) as server:
        c = server.client
        await register(c, f"file:{folder}/", "two")
        # A forward returning a dict: its outputs are not known before it runs.
        [workflow] = (await c.get("/models/two")).json()
        assert workflow["models"][0]["signature"] == {"inputs": [{"name": "a"}, {"name": "b"}]}
        r = await c.post("/predictions/two", content=npz_bytes(a, b),
                         headers={"content-type": "tensor/npz"})
        assert r.status_code == 200, r.text
        got = npz_arrays(r.content)
        assert sorted(got) == ["product", "sum"]
        np.testing.assert_array_equal(got["sum"], a + b)
        np.testing.assert_array_equal(got["product"], a * b)
        # An npz request gets npz whatever it accepts (DJL); an NDList one may ask for JSON.
        r = await c.post("/predictions/two", content=npz_bytes(a, b),
                         headers={"content-type": "tensor/npz", "accept": "application/json"})
        assert r.headers["content-type"] == "tensor/npz"
        r = await c.post("/predictions/two", content=encode_ndlist([a, b]),
                         headers={"content-type": "tensor/ndlist", "accept": "application/json"})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/json"
        pairs = dict(r.json()["predictions"])
        np.testing.assert_array_equal(pairs["sum"], a + b)
        np.testing.assert_array_equal(pairs["product"], a * b)


async def post_many(c: httpx.AsyncClient, model: str,
                    requests: list[tuple[bytes, dict[str, str]]]) -> list[httpx.Response]:
    answers: list[Any] = [None] * len(requests)

    async def one(i: int, body: bytes, headers: dict[str, str]) -> None:
        answers[i] = await c.post(f"/predictions/{model}", content=body, headers=headers)

    async with trio.open_nursery() as nursery:
        for i, (body, headers) in enumerate(requests):
            nursery.start_soon(one, i, body, headers)
    return answers


NPZ_OUT = {"content-type": "application/json", "accept": "tensor/npz"}


async def test_concurrent_requests_are_stacked_and_split(tmp_path: Path) -> None:
    """batch_size 8: the model sees batches of several requests, and every answer is its
    own request's (2x its input), never a neighbour's."""
    folder = save(BatchReporter(), tmp_path / "reporter",
                  properties="batch_size=8\nmax_batch_delay=300\n")
    rows = [[float(i), float(i) + 0.5, -float(i)] for i in range(16)]
    async with running_server(tmp_path) as server:
        c = server.client
        await register(c, f"file:{folder}/", "reporter")
        answers = await post_many(c, "reporter", [(json.dumps(r).encode(), NPZ_OUT)
                                                  for r in rows])
        seen = []
        for row, r in zip(rows, answers, strict=True):
            assert r.status_code == 200, r.text
            doubled, size = npz_arrays(r.content).values()
            np.testing.assert_array_equal(doubled, np.array(row, np.float32) * 2)
            assert size.shape == ()
            seen.append(int(size))
        assert max(seen) > 1, seen  # a batch really formed
        assert max(seen) <= 8


async def test_mixed_shapes_and_dtypes_in_one_batch(tmp_path: Path) -> None:
    """Requests whose shapes or dtypes differ share a batch but each group runs apart."""
    folder = save(BatchReporter(), tmp_path / "reporter",
                  properties="batch_size=8\nmax_batch_delay=300\n")
    requests = []
    inputs = []
    for i in range(4):
        for arr in (np.full(3, i, np.float32), np.full(5, i, np.float32),
                    np.full((2, 2), i, np.int64)):
            inputs.append(arr)
            requests.append((npz_bytes(arr), {"content-type": "tensor/npz"}))
    async with running_server(tmp_path) as server:
        c = server.client
        await register(c, f"file:{folder}/", "reporter")
        answers = await post_many(c, "reporter", requests)
        sizes = []
        for arr, r in zip(inputs, answers, strict=True):
            assert r.status_code == 200, r.text
            doubled, size = npz_arrays(r.content).values()
            assert doubled.dtype == arr.dtype
            np.testing.assert_array_equal(doubled, arr * 2)
            sizes.append(int(size))
        # Three signatures of four requests each: no group is larger than four.
        assert max(sizes) <= 4, sizes
        assert max(sizes) > 1, sizes


async def test_bad_inputs_fail_alone(tmp_path: Path) -> None:
    """Each bad request gets its own 4xx JSON error; its batch-mates get their answers; the
    worker serves on (same worker, healthy)."""
    mlp = Mlp().eval()
    folder = save(mlp, tmp_path / "mlp", properties="batch_size=8\nmax_batch_delay=300\n")
    bad = {
        "not json": (b"[1, 2", JSON, 400, "JSON"),
        "not numbers": (b'["a", "b", "c", "d"]', JSON, 400, ""),
        "ragged": (b"[[1, 2, 3, 4], [1, 2]]", JSON, 400, ""),
        "bad ndlist": (b"\x00\x00\x00\x01\x00\x04NDAR", {"content-type": "tensor/ndlist"},
                       400, ""),
        "bad npz": (b"PK\x03\x04 not a zip", {"content-type": "tensor/npz"}, 400, ""),
        "unknown type": (b"1,2,3,4", {"content-type": "text/csv"}, 400, "text/csv"),
        "empty": (b"", JSON, 400, "empty"),
        "wrong shape": (json.dumps([1.0] * 5).encode(), JSON, 400, "rejected"),
    }
    good = [[float(i), 1.0, 2.0, 3.0] for i in range(4)]
    requests = [(json.dumps(r).encode(), JSON) for r in good]
    requests += [(body, headers) for body, headers, _, _ in bad.values()]
    async with running_server(tmp_path) as server:
        c = server.client
        await register(c, f"file:{folder}/", "mlp")
        [before] = (await c.get("/models/mlp")).json()
        answers = await post_many(c, "mlp", requests)
        for row, r in zip(good, answers, strict=False):
            assert r.status_code == 200, r.text
            np.testing.assert_allclose(r.json()["predictions"], expected(mlp, row), rtol=1e-5)
        for (case, (_, _, status, hint)), r in zip(bad.items(), answers[len(good):],
                                                   strict=True):
            assert r.status_code == status, (case, r.text)
            assert r.headers["content-type"].startswith("application/json"), case
            body = r.json()
            assert body["code"] == status, case
            assert body["message"], case
            assert hint.lower() in body["message"].lower(), (case, body)
        [after] = (await c.get("/models/mlp")).json()
        workers = [w["id"] for g in after["models"][0]["workerGroups"] for w in g["workers"]]
        assert workers == [w["id"] for g in before["models"][0]["workerGroups"]
                           for w in g["workers"]]
        assert after["models"][0]["status"] == "Healthy"
        r = await c.post("/predictions/mlp", content=json.dumps(good[0]), headers=JSON)
        assert r.status_code == 200
        assert (await c.get("/ping")).status_code == 200


async def test_batchifier_none_runs_each_request_alone(tmp_path: Path) -> None:
    stacked = save(Rank(), tmp_path / "stacked")
    alone = save(Rank(), tmp_path / "alone", properties="batchifier=none\nbatch_size=4\n")
    async with running_server(tmp_path) as server:
        c = server.client
        await register(c, f"file:{stacked}/", "stacked")
        await register(c, f"file:{alone}/", "alone")
        r = await c.post("/predictions/stacked", content=b"[1, 2, 3]", headers=JSON)
        assert r.json() == {"predictions": [2.0]}
        answers = await post_many(c, "alone", [(b"[1, 2, 3]", JSON)] * 4)
        assert [a.json() for a in answers] == [{"predictions": [1.0]}] * 4


async def test_engine_selection(tmp_path: Path) -> None:
    """model.py next to model.pt runs the handler (spec §4.4 [REC]); engine=PyTorch, from a
    register parameter or ``-m name::PyTorch=url``, runs the TorchScript file instead."""
    folder = save(Mlp().eval(), tmp_path / "both")
    (folder / "model.py").write_text(
        "from djl_python import Output\n\n"
        "def handle(inputs):\n"
        "    if inputs.is_empty():\n"
        "        return None\n"
        "    return Output().add('from model.py')\n")
    url = f"file:{folder}/"
    async with running_server(tmp_path, load_models=f"startup::PyTorch={url}") as server:
        c = server.client
        await register(c, url, "inferred")
        await register(c, url, "explicit", engine="PyTorch")
        r = await c.post("/predictions/inferred", content=json.dumps(ROW), headers=JSON)
        assert r.text == "from model.py"
        [workflow] = (await c.get("/models/inferred")).json()
        assert "signature" not in workflow["models"][0]  # a handler declares nothing
        for name in ("explicit", "startup"):
            r = await c.post(f"/predictions/{name}", content=json.dumps(ROW), headers=JSON)
            assert r.status_code == 200, r.text
            np.testing.assert_allclose(r.json()["predictions"], expected(Mlp().eval(), ROW),
                                       rtol=1e-5)
        r = await c.post("/models", params={"url": url, "model_name": "tf",
                                            "engine": "TensorFlow"})
        assert (r.status_code, r.json()["message"]) == (400, "TensorFlow is not supported")


async def test_load_failures_fail_registration(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.pt").write_bytes(b"not a torchscript archive")
    gpu = save(Mlp(), tmp_path / "gpu")
    async with running_server(tmp_path) as server:
        c = server.client
        r = await c.post("/models", params={"url": f"file:{broken}/", "model_name": "broken"})
        assert r.status_code == 500, r.text
        message = r.json()["message"]
        assert message.startswith("Failed to initialize model: "), message
        assert "RuntimeError" in message, message  # the exception's own text
        assert (await c.get("/models/broken")).status_code == 404  # rolled back
        if not torch.cuda.is_available():
            r = await c.post("/models", params={"url": f"file:{gpu}/", "model_name": "gpu",
                                                "device": "gpu0"})
            assert r.status_code == 500, r.text
            assert "Cannot load on gpu0: CUDA is not available" in r.json()["message"]


def test_the_server_process_never_imports_torch() -> None:
    code = ("import sys, djl.__main__, djl.app, djl.prepare, djl.registry, djl.wlm.worker; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


@pytest.mark.parametrize("threads", ["2"])
async def test_threads_are_logged(tmp_path: Path, threads: str,
                                  caplog: pytest.LogCaptureFixture) -> None:
    folder = save(Mlp(), tmp_path / "mlp", properties=f"option.num_threads={threads}\n")
    async with running_server(tmp_path) as server:
        await register(server.client, f"file:{folder}/", "mlp")
    assert f"{threads} intra-op thread(s)" in caplog.text
