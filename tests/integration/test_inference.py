"""Inference API and the Python handler contract, end to end (spec §3, §6.5-§6.8)."""

from __future__ import annotations

import trio
from serving import model_url, register, running_server

TEXT = {"content-type": "text/plain"}


async def test_handler_results_map_to_statuses(tmp_path):
    async with running_server(tmp_path) as server:
        c = server.client
        await register(server, "b", "behave")

        r = await c.post("/predictions/b", content=b"hello", headers=TEXT)
        assert r.status_code == 200 and r.text == "hello"
        assert "content-type" not in r.headers  # no default content type (spec §3.5)

        r = await c.post("/predictions/b", params={"action": "raise"})
        assert r.status_code == 424
        assert r.headers["content-type"] == "application/json"
        assert r.json() == {"code": 424, "message": "invoke handler failure",
                            "error": "model error"}

        r = await c.post("/predictions/b", params={"action": "none"})
        assert r.status_code == 204 and r.content == b""

        r = await c.post("/predictions/b", params={"action": "string"})
        assert r.status_code == 424
        assert r.json()["error"] == "Invalid output type: <class 'str'>"

        r = await c.post("/predictions/b", params={"action": "memory"})
        assert r.status_code == 507

        r = await c.get("/predictions/b", params={"action": "header"})
        assert r.status_code == 200 and r.text == "with header"
        assert r.headers["x-model"] == "behave" and r.headers["content-type"] == "text/plain"

        # The worker lived through all of that: a plain request still works.
        r = await c.post("/predictions/b", content=b"again", headers=TEXT)
        assert r.text == "again"


async def test_request_to_input_conversion(tmp_path):
    (tmp_path / "inspect").mkdir()
    (tmp_path / "inspect" / "model.py").write_text(
        "import json\n"
        "from djl_python import Output\n"
        "def handle(inputs):\n"
        "    if inputs.is_empty():\n"
        "        return None\n"
        "    content = [[k, bytes(v).decode()] for k, v in inputs.get_content().items()]\n"
        "    props = {k.lower(): v for k, v in inputs.get_properties().items()}\n"
        "    return Output().add_as_json({'content': content, 'props': props})\n"
    )
    async with running_server(tmp_path) as server:
        c = server.client
        r = await c.post("/models", params={"url": f"file:{tmp_path / 'inspect'}/",
                                            "model_name": "inspect"})
        assert r.status_code == 200, r.text
        r = await c.post("/predictions/inspect?a=1&a=2;b=x+y", content=b'{"k": 1}',
                         headers={"content-type": "application/json", "X-Custom": "v",
                                  "x-request-id": "rid-1"})
        body = r.json()
        assert body["content"] == [["a", "1"], ["a", "2"], ["b", "x y"], ["data", '{"k": 1}']]
        assert body["props"]["x-custom"] == "v"
        assert body["props"]["requestid"] == "rid-1"
        assert r.headers["x-request-id"] == "rid-1"

        r = await c.post("/predictions/inspect", data={"f1": "one", "f2": "two"})
        assert r.json()["content"] == [["f1", "one"], ["f2", "two"]]  # no raw `data` item
        r = await c.post("/predictions/inspect", files={"up": ("a.bin", b"bytes!")})
        assert r.json()["content"] == [["up", "bytes!"]]

        r = await c.get("/predictions/inspect")
        assert r.json()["content"] == [["data", ""]]  # empty body is still `data`

        r = await c.post("/predictions/inspect", headers={"handler": "register_adapter"})
        assert r.status_code == 400
        assert r.json()["message"] == "The handler can't be overridden in a request"


async def test_routes_and_model_resolution(tmp_path):
    async with running_server(tmp_path) as server:
        c = server.client
        r = await c.get("/predictions/InvalidModel")
        assert r.status_code == 404
        assert r.json() == {"code": 404, "type": "ModelNotFoundException",
                            "message": "Model or workflow not found: InvalidModel"}
        assert (await c.post("/predictions")).status_code == 404
        r = await c.request("OPTIONS", "/predictions/nope")
        assert r.status_code == 404

        await register(server, "echo")
        await register(server, "other", "echo")
        r = await c.request("OPTIONS", "/predictions/echo")
        assert r.status_code == 200 and r.text == "{}\n"
        r = await c.post("/invocations", content=b"x", headers=TEXT)
        assert r.status_code == 400
        assert r.json()["message"] == "Parameter model_name is required."
        r = await c.post("/invocations?model_name=echo", content=b"q", headers=TEXT)
        assert r.text == "q"
        r = await c.post("/invocations", content=b"h", headers={**TEXT, "model_name": "other"})
        assert r.text == "h"
        r = await c.post("/models/echo/invoke", content=b"i", headers=TEXT)
        assert r.text == "i"
        r = await c.post("/predictions/echo", content=b"a b", params={"stream": "true"},
                         headers=TEXT)
        assert r.status_code == 200 and r.text == "a\nb\n"
        assert r.headers.get("transfer-encoding") == "chunked"


async def test_ping_reports_each_model(tmp_path):
    async with running_server(tmp_path) as server:
        c = server.client
        r = await c.get("/ping")
        assert r.status_code == 200 and r.json() == {} and r.headers["x-request-id"]
        await register(server, "echo")
        assert (await c.get("/ping/anything?x=1")).json() == {"echo": {"status": "Healthy"}}


async def test_queue_full_gives_503_to_the_overflow(tmp_path):
    async with running_server(tmp_path) as server:
        c = server.client
        await register(server, "slow", "behave", job_queue_size="1", max_worker="1")
        statuses = []

        async def call():
            r = await c.post("/predictions/slow", params={"action": "sleep", "seconds": "1"})
            statuses.append((r.status_code, r.json() if r.status_code == 503 else None))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            await trio.sleep(0.3)
            nursery.start_soon(call)
        assert sorted(s for s, _ in statuses) == [200, 503]
        [body] = [b for s, b in statuses if s == 503]
        assert body == {"code": 503, "type": "WlmCapacityException",
                        "message": "Worker queue capacity exceeded for model: slow"}


async def test_batches_use_the_batch_nnn_wire_convention(tmp_path):
    async with running_server(tmp_path) as server:
        c = server.client
        await register(server, "echo", batch_size="8", max_batch_delay="300")
        results = {}

        async def call(i):
            r = await c.post("/predictions/echo", content=f"req-{i}".encode(), headers=TEXT)
            results[i] = (r.status_code, r.text, r.headers.get("content-type"))

        async with trio.open_nursery() as nursery:
            for i in range(12):
                nursery.start_soon(call, i)
        assert results == {i: (200, f"req-{i}", "text/plain") for i in range(12)}


async def test_startup_models_from_the_command_line_syntax(tmp_path):
    url = model_url("echo")
    async with running_server(tmp_path, load_models=f"e1::Python={url} e2:v1={url}") as server:
        rows = (await server.client.get("/models")).json()["models"]
        assert [(r["modelName"], r.get("version")) for r in rows] == [("e1", None), ("e2", "v1")]
        described = (await server.client.get("/models/e1")).json()
        assert described[0]["models"][0]["loadedAtStartup"] is True


async def test_lower_x_priority_is_served_first(tmp_path):
    async with running_server(tmp_path) as server:
        c = server.client
        await register(server, "one", "behave", min_worker="1", max_worker="1")
        finished = []

        async def call(label, params=None, headers=None):
            r = await c.post("/predictions/one", params=params or {}, content=label.encode(),
                             headers={**TEXT, **(headers or {})})
            assert r.status_code == 200
            finished.append(label)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, "blocker", {"action": "sleep", "seconds": "1"})
            await trio.sleep(0.3)  # the worker is busy with the blocker now
            nursery.start_soon(call, "low-1", None, {"x-priority": "5"})
            await trio.sleep(0.1)  # equal priorities leave in arrival order (FIFO)
            nursery.start_soon(call, "low-2", None, {"x-priority": "5"})
            await trio.sleep(0.1)
            nursery.start_soon(call, "high", None, {"x-priority": "1"})
        assert finished == ["blocker", "high", "low-1", "low-2"]


async def test_a_single_python_file_is_a_model(tmp_path):
    script = tmp_path / "shout.py"
    script.write_text(
        "from djl_python import Output\n"
        "def handle(inputs):\n"
        "    if inputs.is_empty():\n"
        "        return None\n"
        "    return Output().add(inputs.get_as_string().upper())\n"
    )
    async with running_server(tmp_path) as server:
        r = await server.client.post("/models", params={"url": f"file:{script}"})
        assert r.status_code == 200, r.text
        assert r.json() == {"status": 'Model "shout_py" registered.'}  # spec §4.2 keeps .py
        r = await server.client.post("/predictions/shout_py", content=b"quiet", headers=TEXT)
        assert r.text == "QUIET"
