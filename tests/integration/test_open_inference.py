"""The Open Inference Protocol (KServe v2 / Triton REST) through the real server.

``tritonclient.http``, unchanged, talks to one server (module-scoped, in a thread of its
own: tritonclient blocks) for health, metadata and infer in JSON and binary; raw requests
pin every refusal. TorchScript models are scripted into a temporary folder; the answers
must equal what the same module computes in the test.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
import trio
import tritonclient.http as triton
from serving import model_url, running_server
from test_torch_serving import BatchReporter, Mlp
from tritonclient.utils import InferenceServerException


class Identity(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


class Pair(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"sum": a + b, "difference": a - b}


SLOW_INIT = """
import time


def handle(inputs):
    if inputs.is_empty():
        time.sleep(120)
"""

MLP = Mlp().eval()
ROWS = np.array([[0.5, -1.0, 2.0, 3.25]], dtype=np.float32)


def expected_mlp(x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return MLP(torch.from_numpy(x)[None])[0].numpy()


class Running:
    def __init__(self, url: str, token: trio.lowlevel.TrioToken, stop: trio.Event) -> None:
        self.url = url
        self.host = url.removeprefix("http://")
        self.token = token
        self.stop = stop

    def client(self, **kwargs: Any) -> triton.InferenceServerClient:
        return triton.InferenceServerClient(self.host, **kwargs)

    def raw(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, self.url + path, timeout=60, **kwargs)


def _script(module: torch.nn.Module, folder: Path) -> str:
    folder.mkdir(parents=True)
    torch.jit.script(module).save(str(folder / "model.pt"))
    return f"file:{folder}/"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("v2")
    models = {
        "mlp": _script(MLP, tmp / "mlp"),
        "ident": _script(Identity(), tmp / "ident"),
        "pair": _script(Pair(), tmp / "pair"),
        "reporter": _script(BatchReporter(), tmp / "reporter"),
    }
    started = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        async with running_server(tmp) as s:
            async def register(name: str, url: str, **params: str) -> None:
                r = await s.client.post("/models",
                                        params={"url": url, "model_name": name, **params})
                assert r.status_code == 200, r.text

            await register("mlp", models["mlp"], model_version="1")
            async with trio.open_nursery() as nursery:  # their workers start side by side
                nursery.start_soon(partial(register, "mlp", models["mlp"], model_version="2"))
                nursery.start_soon(register, "ident", models["ident"])
                nursery.start_soon(register, "pair", models["pair"])
                nursery.start_soon(partial(register, "reporter", models["reporter"],
                                           batch_size="8", max_batch_delay="300"))
                nursery.start_soon(register, "echo", model_url("echo"))
            stop = trio.Event()
            box["running"] = Running(s.url, trio.lowlevel.current_trio_token(), stop)
            started.set()
            await stop.wait()

    def run() -> None:
        try:
            trio.run(serve)
        except BaseException as exc:  # noqa: BLE001 — reported by the fixture
            box["error"] = exc
        finally:
            started.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(300)
    if "running" not in box:
        raise RuntimeError("the server did not start") from box.get("error")
    running = box["running"]
    yield running
    trio.from_thread.run_sync(running.stop.set, trio_token=running.token)
    thread.join(60)
    if "error" in box:
        raise box["error"]


def _error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}, body
    return body["error"]


def test_health_and_server_metadata(server: Running) -> None:
    client = server.client()
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "djl-serving"
    assert "binary_tensor_data" in meta["extensions"]
    assert meta["version"]


def test_model_metadata_and_versions(server: Running) -> None:
    client = server.client()
    meta = client.get_model_metadata("mlp")
    assert meta["name"] == "mlp"
    assert meta["versions"] == ["1", "2"]
    assert meta["platform"] == "pytorch_torchscript"
    # what the TorchScript file says (its forward's argument names, one tensor out); a
    # script declares no dtype or shape, so they are left out
    assert meta["inputs"] == [{"name": "x"}]
    assert meta["outputs"] == [{"name": "output0"}]
    pair = client.get_model_metadata("pair")
    assert pair["inputs"] == [{"name": "a"}, {"name": "b"}]
    assert "outputs" not in pair  # a dict: its keys are known only once it runs
    assert client.get_model_metadata("echo")["platform"] == "python"
    assert client.is_model_ready("mlp")
    assert client.is_model_ready("mlp", "2")
    assert client.get_model_metadata("mlp", "2")["name"] == "mlp"
    assert _error(server.raw("GET", "/v2/models/res"), 404) == "Model not found: res"
    assert "version 3" in _error(server.raw("GET", "/v2/models/mlp/versions/3"), 404)
    _error(server.raw("GET", "/v2/models/mlp/versions/3/ready"), 404)
    _error(server.raw("POST", "/v2/models/nope/infer", content=b"{}"), 404)
    _error(server.raw("POST", "/v2/models/mlp/versions/9/infer", content=b"{}"), 404)


@pytest.mark.parametrize("binary", [False, True])
def test_infer_matches_the_module(server: Running, binary: bool) -> None:
    client = server.client()
    x = triton.InferInput("x", list(ROWS.shape), "FP32")
    x.set_data_from_numpy(ROWS, binary_data=binary)
    out = triton.InferRequestedOutput("output0", binary_data=binary)
    for version in ("1", "2"):
        result = client.infer("mlp", [x], model_version=version, outputs=[out],
                              request_id="req-7")
        response = result.get_response()
        assert response["model_name"] == "mlp"
        assert response["model_version"] == version
        assert response["id"] == "req-7"
        got = result.as_numpy("output0")
        assert got.shape == (1, 3)
        np.testing.assert_allclose(got, expected_mlp(ROWS), rtol=1e-5)


def test_all_outputs_when_none_requested(server: Running) -> None:
    """tritonclient asks for binary_data_output when no outputs are named; every output
    comes back, unnamed ones as output0, output1; a dict's keys name them."""
    client = server.client()
    x = triton.InferInput("x", [3], "FP32")
    x.set_data_from_numpy(np.array([1, 2, 3], np.float32))
    result = client.infer("reporter", [x])
    assert [o["name"] for o in result.get_response()["outputs"]] == ["output0", "output1"]
    np.testing.assert_array_equal(result.as_numpy("output0"), [2, 4, 6])
    assert result.as_numpy("output1").dtype == np.int64
    # JSON, raw: no "outputs" at all
    body = {"inputs": [{"name": "a", "shape": [2], "datatype": "FP32", "data": [1, 2]},
                       {"name": "b", "shape": [2], "datatype": "FP32", "data": [3, 5]}]}
    r = server.raw("POST", "/v2/models/pair/infer", json=body)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    outputs = {o["name"]: o for o in r.json()["outputs"]}
    assert outputs["sum"] == {"name": "sum", "datatype": "FP32", "shape": [2], "data": [4.0, 7.0]}
    assert outputs["difference"]["data"] == [-2.0, -3.0]
    # Named as the model names them, in any order: the model's order; nested data.
    body["inputs"].reverse()
    body["inputs"][1]["data"] = [[1], [2]]
    body["outputs"] = [{"name": "difference"}]
    r = server.raw("POST", "/v2/models/pair/infer", json=body)
    [difference] = r.json()["outputs"]
    assert difference["name"] == "difference" and difference["data"] == [-2.0, -3.0]
    # Other names: positional, in request order.
    for tensor, name in zip(body["inputs"], ("p", "q"), strict=True):
        tensor["name"] = name
    r = server.raw("POST", "/v2/models/pair/infer", json=body)
    assert r.json()["outputs"][0]["data"] == [2.0, 3.0]
    body["outputs"] = [{"name": "ratio"}]
    assert "ratio" in _error(server.raw("POST", "/v2/models/pair/infer", json=body), 400)


NUMERIC = [("BOOL", np.bool_), ("UINT8", np.uint8), ("UINT16", np.uint16),
           ("UINT32", np.uint32), ("UINT64", np.uint64), ("INT8", np.int8),
           ("INT16", np.int16), ("INT32", np.int32), ("INT64", np.int64),
           ("FP16", np.float16), ("FP32", np.float32), ("FP64", np.float64)]


def _sample(dtype: Any) -> np.ndarray:
    if dtype is np.bool_:
        return np.array([[True, False, True]])
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else np.finfo(dtype)
    return np.array([[info.min, 0, info.max]], dtype=dtype)


@pytest.mark.parametrize("binary", [False, True])
def test_datatype_round_trips(server: Running, binary: bool) -> None:
    client = server.client()
    for datatype, dtype in NUMERIC:
        data = _sample(dtype)
        x = triton.InferInput("x", list(data.shape), datatype)
        x.set_data_from_numpy(data, binary_data=binary)
        result = client.infer("ident", [x], outputs=[
            triton.InferRequestedOutput("output0", binary_data=binary)])
        [output] = result.get_response()["outputs"]
        assert output["datatype"] == datatype, output
        got = result.as_numpy("output0")
        assert got.dtype == data.dtype and got.shape == data.shape, datatype
        np.testing.assert_array_equal(got, data, err_msg=datatype)


def test_bf16_round_trips_binary_only(server: Running) -> None:
    """BF16 reaches the model as bfloat16 and its bfloat16 output comes back as BF16; in
    JSON it is refused, as Triton does."""
    import ml_dtypes

    client = server.client()
    data = np.array([[1.5, -2.0, 3.0078125]], dtype=ml_dtypes.bfloat16)
    x = triton.InferInput("x", [1, 3], "BF16")
    x.set_data_from_numpy(data)
    result = client.infer("ident", [x])
    [output] = result.get_response()["outputs"]
    assert output["datatype"] == "BF16", output
    got = result.as_numpy("output0")
    assert got.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(got, data)
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "BF16", "data": [1.5]}]}
    assert "binary" in _error(server.raw("POST", "/v2/models/ident/infer", json=body), 400)


def test_bytes_are_read_and_refused_by_torch(server: Running) -> None:
    """BYTES tensors are read (JSON strings, binary length-prefixed); a TorchScript model
    cannot take them, and says so."""
    client = server.client()
    for binary in (False, True):
        x = triton.InferInput("x", [2], "BYTES")
        x.set_data_from_numpy(np.array([b"ab", b"c"], dtype=object), binary_data=binary)
        with pytest.raises(InferenceServerException, match="BYTES"):
            client.infer("ident", [x])


def test_concurrent_infers_share_a_batch(server: Running) -> None:
    """Requests in v2 JSON, v2 binary and DJL's own npz arrive together and are stacked
    into one forward (the reporter's second output is the batch size it saw)."""
    client = server.client(concurrency=8)

    def npz(i: int) -> tuple[np.ndarray, int]:
        buf = io.BytesIO()
        np.savez(buf, np.full(3, i, np.float32))
        r = server.raw("POST", "/predictions/reporter", content=buf.getvalue(),
                       headers={"content-type": "tensor/npz"})
        assert r.status_code == 200, r.text
        with np.load(io.BytesIO(r.content)) as f:
            return f["arr_0"], int(f["arr_1"])

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        npz_answers = [(i, pool.submit(npz, i)) for i in (10, 11)]
        pending = []
        for i in range(6):
            x = triton.InferInput("x", [3], "FP32")
            x.set_data_from_numpy(np.full(3, i, np.float32), binary_data=i % 2 == 0)
            pending.append((i, client.async_infer("reporter", [x], outputs=[
                triton.InferRequestedOutput("output0", binary_data=i % 2 == 0),
                triton.InferRequestedOutput("output1", binary_data=False)])))
        sizes = []
        for i, request in pending:
            result = request.get_result()
            np.testing.assert_array_equal(result.as_numpy("output0"), np.full(3, 2 * i))
            sizes.append(int(result.as_numpy("output1")))
        for i, future in npz_answers:
            doubled, size = future.result()
            np.testing.assert_array_equal(doubled, np.full(3, 2 * i))
            sizes.append(size)
    assert max(sizes) > 1, sizes


def test_python_model_gets_the_json_body(server: Running) -> None:
    body = {"id": "e1", "inputs": [{"name": "t", "shape": [1], "datatype": "INT32",
                                    "data": [1]}]}
    r = server.raw("POST", "/v2/models/echo/infer", json=body)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json() == body


OVERRUN = (b'{"inputs": [{"name": "x", "shape": [4], "datatype": "FP32", '
           b'"parameters": {"binary_data_size": 16}}]}')


@pytest.mark.parametrize(("body", "header", "needle"), [
    (b"{not json", None, "JSON"),
    (b'{"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2]}]}',
     None, "needs 3"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP8", "data": [1]}]}',
     None, "unknown datatype"),
    (b'{"inputs": [{"name": "x", "shape": [-1], "datatype": "FP32", "data": [1]}]}',
     None, "negative"),
    (b'{"inputs": [{"name": "x", "shape": [4000000000, 4000000000], "datatype": "FP32", '
     b'"data": [1]}]}', None, "can carry"),
    (OVERRUN + b"\x00" * 4, str(len(OVERRUN)), "overruns"),
    (b'{"inputs": []}', "900", "Inference-Header-Content-Length"),
    (b'{"inputs": []}', "x1", "Inference-Header-Content-Length"),
])
def test_refusals(server: Running, body: bytes, header: str | None, needle: str) -> None:
    headers = {"inference-header-content-length": header} if header else {}
    message = _error(server.raw("POST", "/v2/models/mlp/infer", content=body,
                                headers=headers), 400)
    assert needle in message, message


def test_not_ready_is_503(server: Running, tmp_path: Path) -> None:
    """A model still loading: its ready and infer routes, and the server's readiness,
    answer 503 until it is gone."""
    (tmp_path / "slow").mkdir()
    (tmp_path / "slow" / "model.py").write_text(SLOW_INIT)
    r = server.raw("POST", "/models", params={"url": f"file:{tmp_path / 'slow'}/",
                                              "model_name": "slow", "synchronous": "false"})
    assert r.status_code == 202, r.text
    try:
        _error(server.raw("GET", "/v2/models/slow/ready"), 503)
        _error(server.raw("POST", "/v2/models/slow/infer", content=b"{}"), 503)
        assert "slow" in _error(server.raw("GET", "/v2/health/ready"), 503)
        assert not server.client().is_server_ready()
        assert server.client().is_server_live()
    finally:
        assert server.raw("DELETE", "/models/slow").status_code == 200
    assert server.client().is_server_ready()


def test_unknown_routes_and_methods(server: Running) -> None:
    _error(server.raw("GET", "/v2/models/mlp/explain"), 404)
    _error(server.raw("GET", "/v2/health/sleepy"), 404)
    _error(server.raw("GET", "/v2/models/mlp/infer"), 405)
    _error(server.raw("POST", "/v2/health/live"), 405)
    assert json.loads(server.raw("GET", "/v2").content)["name"] == "djl-serving"
