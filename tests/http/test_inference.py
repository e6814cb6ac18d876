"""Inference API and the Python handler contract, end to end (spec §3, §6.5-§6.8).

The stream tests end streams through the transport (a client that leaves, stalls or gets
a cut): they run on both HTTP servers (``both_servers``)."""

from __future__ import annotations

import time

import httpx
import pytest
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
        for path in ("/predictions/echo/v9", "/invocations?model_name=echo&model_version=v9"):
            r = await c.request("OPTIONS", path)
            assert r.status_code == 404, path
            assert r.json()["message"] == "Model or workflow not found: echo"
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
        mark = tmp_path / "sleeping"

        async def call():
            r = await c.post("/predictions/slow", params={
                "action": "sleep", "seconds": "2", "mark": str(mark)})
            statuses.append((r.status_code, r.json() if r.status_code == 503 else None))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            with trio.fail_after(30):  # the first is inside the model, not merely sent
                while not mark.exists():
                    await trio.sleep(0.02)
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

        async def queued(n: int) -> None:
            """Wait until ``n`` requests wait in the model's queue (describe shows it)."""
            with trio.fail_after(10):
                while True:
                    [model] = (await c.get("/models/one")).json()[0]["models"]
                    if model["requestInQueue"] == n:
                        return
                    await trio.sleep(0.01)

        mark = tmp_path / "blocker-started"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, "blocker", {"action": "sleep", "seconds": "3",
                                                 "mark": str(mark)})
            with trio.fail_after(10):
                while not mark.exists():  # the worker is busy with the blocker now
                    await trio.sleep(0.01)
            # Each count proves the race was staged: each request is queued before the
            # next is sent, so equal priorities must leave in arrival order (FIFO). Each
            # takes 0.3 s in the model, so the answers reach their clients in the order
            # the worker served them (not as two clients' wake-ups happen to fall).
            for n, (label, priority) in enumerate(
                    [("low-1", "5"), ("low-2", "5"), ("high", "1")], start=1):
                nursery.start_soon(call, label, {"action": "sleep", "seconds": "0.3"},
                                   {"x-priority": priority})
                await queued(n)
            assert finished == [], "all three must be queued while the blocker runs"
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


# -- regressions: a client cannot hold a worker or knock it over ----------------------------


def _port(server) -> int:
    return int(server.url.rsplit(":", 1)[1].rstrip("/"))


async def _stall_on_a_long_stream(server) -> trio.SocketStream:
    """A raw client that asks model ``s`` for a long stream and reads only the headers."""
    stalled = await trio.open_tcp_stream("127.0.0.1", _port(server))
    # ~80 MiB: far more than the loopback socket buffers and the chunk channel hold.
    await stalled.send_all(
        b"POST /predictions/s?action=stream&n=10000&size=8192 HTTP/1.1\r\n"
        b"Host: 127.0.0.1\r\nContent-Length: 0\r\n\r\n")
    head = b""
    with trio.fail_after(30):
        while b"\r\n\r\n" not in head:
            head += await stalled.receive_some(65536)
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    return stalled


async def _next_request_served(server, deadline_s: float = 20) -> float:
    """Seconds until model ``s`` answers another request (fails after ``deadline_s``)."""
    start = time.monotonic()
    r = None
    with trio.move_on_after(deadline_s):
        r = await server.client.post("/predictions/s", content=b"next", headers=TEXT)
    waited = time.monotonic() - start
    print(f"next request answered after {waited:.2f}s")
    assert r is not None, "the worker is still held by the stream nobody reads"
    assert r.status_code == 200 and r.text == "next"
    return waited


@pytest.mark.both_servers
async def test_a_stream_whose_client_stops_reading_frees_the_worker(tmp_path):
    """A client that reads the headers of a long stream and then nothing more holds the
    worker for about chunked_read_timeout: the next request is answered while that client
    is still connected."""
    async with running_server(tmp_path, chunked_read_timeout="1") as server:
        await register(server, "s", "behave", min_worker="1", max_worker="1")
        stalled = await _stall_on_a_long_stream(server)
        try:
            assert await _next_request_served(server) < 15
        finally:
            await stalled.aclose()


@pytest.mark.both_servers
async def test_a_stream_cut_for_a_stalled_client_does_not_end_as_complete(tmp_path):
    """Once the worker gives up on a client that stopped reading, that client must not
    receive what looks like the whole response when it reads again."""
    async with running_server(tmp_path, chunked_read_timeout="1") as server:
        await register(server, "s", "behave", min_worker="1", max_worker="1")
        stalled = await _stall_on_a_long_stream(server)
        try:
            await _next_request_served(server)
            rest = b""
            with trio.fail_after(15):  # it must end, with EOF or a reset: never hang
                try:
                    while data := await stalled.receive_some(1 << 20):
                        rest += data
                        if rest.endswith(b"\r\n0\r\n\r\n"):
                            break
                except trio.BrokenResourceError:
                    pass  # a reset is a fine way to say "incomplete"
            print(f"{len(rest)} more bytes of the 80 MiB body")
            assert not rest.endswith(b"\r\n0\r\n\r\n"), "truncated, yet ends cleanly"
        finally:
            await stalled.aclose()


@pytest.mark.both_servers
async def test_a_stream_whose_client_left_while_the_model_ran_frees_the_worker(tmp_path):
    """The client gives up while handle() still runs; the stream it returns afterwards has
    no reader at all, and is drained at once rather than holding the only worker until
    chunked_read_timeout."""
    async with running_server(tmp_path, chunked_read_timeout="60") as server:
        await register(server, "s", "behave", min_worker="1", max_worker="1")
        with pytest.raises(httpx.TimeoutException):
            await server.client.post("/predictions/s", timeout=0.5, params={
                "action": "stream", "n": "500", "size": "10", "before": "1.5"})
        await trio.sleep(1.5)  # the model has returned its stream by now
        assert await _next_request_served(server) < 10


@pytest.mark.both_servers
async def test_a_stream_whose_worker_dies_midway_is_not_ended_as_complete(tmp_path):
    """The worker exits after 3 of 10 chunks: the client gets the 3 chunks and then a
    broken response (no final chunk), not a short body passed off as the whole; the
    worker is replaced and serves the next request."""
    async with running_server(tmp_path) as server:
        await register(server, "s", "behave", min_worker="1", max_worker="1")
        with pytest.raises(httpx.RemoteProtocolError):
            await server.client.post("/predictions/s", params={
                "action": "stream", "n": "10", "size": "1000", "exit_after": "3"})
        received = b""
        with pytest.raises(httpx.RemoteProtocolError):
            async with server.client.stream("POST", "/predictions/s", params={
                    "action": "stream", "n": "10", "size": "1000", "exit_after": "3"}) as r:
                assert r.status_code == 200
                async for data in r.aiter_bytes():
                    received += data
        assert received == b"x" * 3000
        assert await _next_request_served(server) < 15


@pytest.mark.both_servers
async def test_a_stream_whose_client_left_before_the_first_chunk_frees_the_worker(tmp_path):
    """The client gives up while the model prepares its first chunk; the stream is closed at
    once (not after chunked_read_timeout), so the worker drains it and serves the next."""
    async with running_server(tmp_path, chunked_read_timeout="60") as server:
        await register(server, "s", "behave", min_worker="1", max_worker="1")
        with pytest.raises(httpx.TimeoutException):
            # More chunks than the worker may buffer for the HTTP side.
            await server.client.post("/predictions/s", timeout=0.5, params={
                "action": "stream", "n": "500", "delay": "1.5"})
        assert await _next_request_served(server) < 15


MIB = 1024 * 1024


@pytest.mark.parametrize("size", [MIB * 3 // 2, 2 * MIB, 48 * MIB])
async def test_an_oversized_response_item_fails_its_request_not_the_worker(tmp_path, size):
    """An output item over the limit (max of max_worker_item_bytes and max_request_size)
    answers its request 500 naming the limit; the worker lives on, no failure counted."""
    async with running_server(tmp_path, max_worker_item_bytes=str(MIB),
                              max_request_size=str(MIB)) as server:
        c = server.client
        await register(server, "b", "behave", min_worker="1", max_worker="1")
        pid = (await c.post("/predictions/b", params={"action": "pid"})).text
        r = await c.post("/predictions/b", params={"action": "big", "size": str(size)})
        assert r.status_code == 500, r.text  # 503 would mean the worker was killed for it
        assert r.headers["content-type"] == "application/json"
        assert r.json() == {
            "code": 500, "type": "OutputTooLargeException",
            "message": f"The model's output item of {size} bytes exceeds the limit of {MIB} "
                       "bytes (max_worker_item_bytes)"}
        r2 = await c.post("/predictions/b", params={"action": "pid"})
        assert r2.status_code == 200 and r2.text == pid  # the same process
        r2 = await c.post("/predictions/b", params={"action": "big", "size": str(MIB)})
        assert r2.status_code == 200 and len(r2.content) == MIB  # at the limit is fine
        r2 = await c.get("/ping")
        assert r2.status_code == 200 and r2.json() == {"b": {"status": "Healthy"}}
        [group] = (await c.get("/models/b")).json()[0]["models"][0]["workerGroups"]
        assert [w["status"] for w in group["workers"]] == ["READY"]


async def test_an_answer_over_the_frame_limit_fails_its_request_not_the_worker(tmp_path):
    """Items each within max_worker_item_bytes can add up to more than the server reads in
    one frame: the runtime refuses that answer itself, so only its request fails (500),
    the worker serves on and no failure counts against retry_threshold (issue 8, defect 2;
    it used to be killed as a broken worker, and FAILED at the second one)."""
    async with running_server(tmp_path, max_worker_item_bytes=str(MIB),
                              max_request_size=str(MIB), retry_threshold="0") as server:
        c = server.client
        await register(server, "b", "behave", min_worker="1", max_worker="1")
        pid = (await c.post("/predictions/b", params={"action": "pid"})).text
        for _ in range(2):
            r = await c.post("/predictions/b", params={"action": "many", "count": "3",
                                                       "size": str(MIB)})
            assert r.status_code == 500, r.text  # 503 would mean the worker was killed
            body = r.json()
            assert body["type"] == "OutputTooLargeException", body
            assert "exceeds the limit of" in body["message"], body
        r = await c.post("/predictions/b", params={"action": "many", "count": "1",
                                                   "size": str(MIB)})
        assert r.status_code == 200 and len(r.content) == MIB
        r = await c.post("/predictions/b", params={"action": "pid"})
        assert r.status_code == 200 and r.text == pid  # the same process
        r = await c.get("/ping")
        assert r.status_code == 200 and r.json() == {"b": {"status": "Healthy"}}


async def test_a_stream_chunk_over_the_item_limit_arrives_whole(tmp_path):
    """Streamed chunks have no size limit for the model: the runtime splits a big one."""
    async with running_server(tmp_path, max_worker_item_bytes=str(MIB),
                              max_request_size=str(MIB)) as server:
        await register(server, "s", "behave", min_worker="1", max_worker="1")
        r = await server.client.post("/predictions/s", params={
            "action": "stream", "n": "2", "size": str(5 * MIB // 2)})
        assert r.status_code == 200 and r.content == b"x" * (5 * MIB)


async def test_common_headers_replace_the_models_whatever_its_case(tmp_path):
    """Spec §3.5: x-request-id and the no-cache headers overwrite what the model set, even
    when the model spells them in another case: one header each, ours."""
    async with running_server(tmp_path) as server:
        await register(server, "b", "behave")
        r = await server.client.post("/predictions/b", headers={"x-request-id": "mine"},
                                     params={"action": "headers_in_case"})
        assert r.status_code == 200
        assert r.headers.get_list("x-request-id") == ["mine"]
        assert r.headers.get_list("pragma") == ["no-cache"]
        assert r.headers.get_list("cache-control") == [
            "no-cache; no-store, must-revalidate, private"]
        assert r.headers["x-model"] == "behave"


@pytest.mark.both_servers
async def test_an_empty_stream_and_a_stream_that_never_starts(tmp_path):
    """A generator that yields nothing: an empty 200 with no invented content-type. One whose
    first chunk does not come within chunked_read_timeout: a 503 naming it, not a 200."""
    async with running_server(tmp_path, chunked_read_timeout="1") as server:
        c = server.client
        await register(server, "s", "behave", min_worker="1", max_worker="1")
        r = await c.post("/predictions/s", params={"action": "stream", "n": "0"})
        assert r.status_code == 200 and r.content == b""
        assert "content-type" not in r.headers
        r = await c.post("/predictions/s", params={"action": "stream", "n": "2", "delay": "3"})
        assert r.status_code == 503
        assert r.json()["message"] == (
            "The model sent no stream chunk within chunked_read_timeout (1s)")
        assert await _next_request_served(server) < 15
