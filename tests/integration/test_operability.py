"""Issue 11 through the real server: error answers close the connection (spec §1.3), the
error-rate breaker turns /ping 503 (§3.9), asynchronous requests (§3.8), dynamic loading
(§3.10) and the access log."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import httpx
import trio
from serving import model_url, register, running_server

# -- connections ------------------------------------------------------------------------------


def _port(server) -> int:
    return int(server.url.rsplit(":", 1)[1].rstrip("/"))


async def _exchange(stream: trio.SocketStream, request: bytes) -> tuple[bytes, bool]:
    """Send one request; read its whole answer; whether the server then closed."""
    await stream.send_all(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return data, True
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
    while len(body) < length:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        body += chunk
    closed = False
    with trio.move_on_after(0.5):
        try:
            closed = await stream.receive_some(1) == b""
        except trio.BrokenResourceError:
            closed = True
    return head, closed


def _get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


async def test_errors_close_the_connection_successes_keep_it(tmp_path):
    async with running_server(tmp_path) as server:
        await register(server, "behave")
        stream = await trio.open_tcp_stream("127.0.0.1", _port(server))
        for path in ("/ping", "/predictions/behave", "/models"):  # inference, model, Quart
            head, closed = await _exchange(stream, _get(path))
            assert head.startswith(b"HTTP/1.1 200"), head
            assert b"connection: close" not in head.lower()
            assert not closed, f"{path}: a 200 closed the connection"
        for path in ("/predictions/nothing", "/predictions/behave?action=raise", "/models/x",
                     "/nowhere"):
            stream = await trio.open_tcp_stream("127.0.0.1", _port(server))
            head, closed = await _exchange(stream, _get(path))
            assert re.match(rb"HTTP/1.1 (4|5)\d\d", head), head
            assert b"connection: close" in head.lower(), head
            assert closed, f"{path}: an error left the connection open"
            await stream.aclose()


# -- breaker ----------------------------------------------------------------------------------


async def test_breaker_trips_ping_to_503(tmp_path):
    async with running_server(tmp_path, error_rate_any="1/PT5M") as server:
        await register(server, "behave")
        client = server.client
        assert (await client.get("/predictions/behave", params={"action": "raise"})
                ).status_code == 424
        assert (await client.get("/ping")).status_code == 200  # one error is tolerated
        assert (await client.get("/predictions/nothing")).status_code == 404  # not counted
        assert (await client.get("/ping")).status_code == 200
        assert (await client.get("/predictions/behave", params={"action": "raise"})
                ).status_code == 424
        r = await client.get("/ping")
        assert r.status_code == 503
        assert r.json() == {"behave": {"status": "Healthy"}}
        assert (await client.get("/predictions/behave")).status_code == 200  # serving goes on
        assert (await client.get("/ping")).status_code == 503  # latched


async def test_without_rules_errors_never_trip_ping(tmp_path):
    async with running_server(tmp_path) as server:
        await register(server, "behave")
        for _ in range(5):
            r = await server.client.get("/predictions/behave", params={"action": "raise"})
            assert r.status_code == 424, r.text  # each one an error the breaker would see
        assert (await server.client.get("/ping")).status_code == 200


# -- asynchronous requests ----------------------------------------------------------------------

ASYNC = {"x-synchronous": "false"}


async def _poll_until_done(client: httpx.AsyncClient, token: str, limit: int = 200,
                           **headers: str) -> list[httpx.Response]:
    pages = []
    for _ in range(limit):
        r = await client.get("/predictions/behave",
                             headers={"x-starting-token": token, **headers})
        pages.append(r)
        if r.status_code != 202 and "x-next-token" not in r.headers:
            return pages
        token = r.headers["x-next-token"]
        if r.status_code == 202:
            await trio.sleep(0.02)
    raise AssertionError(f"no final page in {limit} polls")


async def test_async_submit_pending_then_result(tmp_path):
    mark = tmp_path / "in-handle"
    async with running_server(tmp_path) as server:
        await register(server, "behave")
        client = server.client
        r = await client.post("/predictions/behave", content=b"ignored", headers=ASYNC,
                              params={"action": "sleep", "seconds": "1", "mark": str(mark)})
        assert r.status_code == 200 and r.content == b""
        token = r.headers["x-next-token"]
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
                            token)
        assert r.headers["x-amzn-sagemaker-custom-attributes"] == f"x-next-token={token}"
        with trio.fail_after(10):
            while not mark.exists():
                await trio.sleep(0.01)
        pending = await client.get("/invocations", headers={"x-starting-token": token})
        assert pending.status_code == 202  # the model is still inside handle()
        assert pending.headers["x-next-token"] == token
        pages = await _poll_until_done(client, token)
        final = pages[-1]
        assert final.status_code == 200 and final.content == b"ignored"
        assert "x-next-token" not in final.headers  # the [REC]: final at once
        # The same through SageMaker's custom attributes.
        r = await client.post("/predictions/behave", content=b"via attributes", headers={
            "X-Amzn-SageMaker-Custom-Attributes": "X-Synchronous=false; other=1"})
        token = r.headers["x-next-token"]
        pages = await _poll_until_done(client, token)
        assert pages[-1].content == b"via attributes"
        r = await client.get("/predictions/behave", headers={
            "X-Amzn-SageMaker-Custom-Attributes": f"x-starting-token={token}"})
        assert r.content == b"via attributes"


async def test_async_streamed_result_item_by_item(tmp_path):
    async with running_server(tmp_path) as server:
        await register(server, "behave")
        client = server.client
        r = await client.post("/predictions/behave", headers=ASYNC,
                              params={"action": "stream", "n": "4", "size": "3"})
        token = r.headers["x-next-token"]
        pages = await _poll_until_done(client, token, **{"x-max-items": "1"})
        bodies = [p.content for p in pages if p.status_code == 200]
        assert bodies == [b"xxx"] * 4
        assert "x-next-token" not in pages[-1].headers
        whole = await client.get("/predictions/behave", headers={"x-starting-token": token})
        assert whole.content == b"xxx" * 4 and "x-next-token" not in whole.headers


async def test_async_unknown_token_and_failures(tmp_path):
    async with running_server(tmp_path) as server:
        await register(server, "behave")
        client = server.client
        r = await client.get("/predictions/behave",
                             headers={"x-starting-token": "0" * 36})
        assert r.status_code == 400
        assert r.json()["message"] == f"Invalid x-starting-token: {'0' * 36}"
        r = await client.get("/predictions/behave", headers={
            "x-starting-token": "0" * 36, "x-max-items": "many"})
        assert r.status_code == 400 and "x-max-items" in r.json()["message"]
        r = await client.post("/predictions/behave", params={"action": "exit"}, headers=ASYNC)
        pages = await _poll_until_done(client, r.headers["x-next-token"])
        assert pages[-1].status_code == 503
        assert pages[-1].json()["type"] == "WlmException"


async def test_async_store_is_bounded(tmp_path):
    async with running_server(tmp_path, async_result_max_entries="2",
                              async_result_max_bytes="100") as server:
        await register(server, "behave")
        client = server.client
        tokens = []
        for body in (b"a" * 40, b"b" * 40):
            r = await client.post("/predictions/behave", content=body, headers=ASYNC)
            tokens.append(r.headers["x-next-token"])
            await _poll_until_done(client, tokens[-1])
        # A third result evicts the oldest: by entries (2) and by bytes (100) alike.
        r = await client.post("/predictions/behave", content=b"c" * 40, headers=ASYNC)
        tokens.append(r.headers["x-next-token"])
        assert (await _poll_until_done(client, tokens[2]))[-1].content == b"c" * 40
        gone = await client.get("/predictions/behave", headers={"x-starting-token": tokens[0]})
        assert gone.status_code == 400
        kept = await client.get("/predictions/behave", headers={"x-starting-token": tokens[1]})
        assert kept.content == b"b" * 40
        r = await client.post("/predictions/behave", content=b"d" * 101, headers=ASYNC)
        too_big = (await _poll_until_done(client, r.headers["x-next-token"]))[-1]
        assert too_big.status_code == 500
        assert "async_result_max_bytes" in too_big.json()["message"]


# -- dynamic loading ----------------------------------------------------------------------------


def _behave_dir() -> str:
    return model_url("behave")


async def test_dynamic_loading(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="djl.registry")
    behave = _behave_dir()
    pattern = re.escape(str(Path(behave[len("file:"):]).parent)) + ".*"
    async with running_server(tmp_path, model_url_pattern=f"file:{pattern}") as server:
        client = server.client
        # Concurrent first requests: both answered, the model loaded once.
        answers: list[httpx.Response] = []

        async def first() -> None:
            answers.append(await client.post("/predictions/dyn", content=b"hi",
                                             params={"model_url": behave}))

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(first)
        assert [(r.status_code, r.content) for r in answers] == [(200, b"hi")] * 3
        loads = [r for r in caplog.records if "for a prediction" in r.getMessage()]
        assert len(loads) == 1
        described = (await client.get("/models/dyn")).json()
        assert described[0]["models"][0]["modelUrl"] == behave
        # Known now: no model_url needed.
        assert (await client.post("/predictions/dyn", content=b"again")).content == b"again"

        r = await client.post("/predictions/other")
        assert (r.status_code, r.json()["message"]) == (404, "Parameter model_url is required.")
        elsewhere = "file:/tmp/elsewhere/"
        r = await client.post("/predictions/other", params={"model_url": elsewhere})
        assert (r.status_code, r.json()["message"]) == (404, f"Permission denied: {elsewhere}")
        # DJL skips the pattern for a header: we do not.
        r = await client.post("/predictions/other", headers={"model_url": elsewhere})
        assert (r.status_code, r.json()["message"]) == (404, f"Permission denied: {elsewhere}")
        assert (await client.get("/models/other")).status_code == 404


async def test_dynamic_loading_checks_allowed_urls_too(tmp_path):
    async with running_server(tmp_path, model_url_pattern="file:.*",
                              allowed_urls=r"https://models\.example/.*") as server:
        for how in ("params", "headers"):
            r = await server.client.post("/predictions/dyn", **{how: {"model_url": _behave_dir()}})
            assert r.status_code == 403, r.text
            assert "allowed_urls" in r.json()["message"]
        assert (await server.client.get("/models/dyn")).status_code == 404


async def test_without_a_pattern_unknown_models_are_404(tmp_path):
    async with running_server(tmp_path) as server:
        r = await server.client.post("/predictions/dyn", params={"model_url": _behave_dir()})
        assert r.status_code == 404
        assert r.json()["message"] == "Model or workflow not found: dyn"


# -- access log ---------------------------------------------------------------------------------


async def test_access_log(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="djl.access")
    async with running_server(tmp_path, access_log="true") as server:
        await register(server, "behave")
        client = server.client
        r = await client.post("/predictions/behave", content=b"12345",
                              headers={"x-request-id": "req-1"})
        assert r.status_code == 200
        await client.get("/predictions/nothing", headers={"x-request-id": "req-2"})
        await client.get("/models", headers={"x-request-id": "req-3"})
        await client.post("/invocations", data={"model_name": "behave"},
                          headers={"x-request-id": "req-4"})
    # The registration's line may land after clear(): it is written once its answer is out.
    lines = [r.getMessage() for r in caplog.records
             if r.name == "djl.access" and r.getMessage().startswith("req-")]
    assert len(lines) == 4, lines
    pattern = r"(\S+) (\S+) (\S+) (\S+) (\d+) (\d+) (\d+\.\d+)"
    fields = [re.fullmatch(pattern, line).groups() for line in lines]
    assert [f[:6] for f in fields] == [
        ("req-1", "POST", "/predictions/behave", "behave", "200", "5"),
        ("req-2", "GET", "/predictions/nothing", "nothing", "404",
         str(len(_error_404("nothing")))),
        ("req-3", "GET", "/models", "-", "200", fields[2][5]),
        ("req-4", "POST", "/invocations", "behave", "200", fields[3][5]),
    ]
    assert all(float(f[6]) > 0 for f in fields)


def _error_404(name: str) -> bytes:
    return (b'{\n  "code": 404,\n  "type": "ModelNotFoundException",\n  "message": '
            b'"Model or workflow not found: ' + name.encode() + b'"\n}\n')


async def test_access_log_is_off_by_default(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="djl.access")
    async with running_server(tmp_path) as server:
        await server.client.get("/ping")
    assert not [r for r in caplog.records if r.name == "djl.access"]
