"""Workload manager with the real server and real worker processes (spec §5, §6.8, §6.9).

Batching fills under concurrency and is bounded by ``max_batch_delay``; a slow load
scales up to ``max_worker`` and idle temporary workers go after ``max_idle_time``; a
worker that exits, hangs past ``predict_timeout`` or never finishes loading is killed,
its requests get a 503 at once and it is replaced, until ``retry_threshold`` turns the
model FAILED; unregister answers everything and leaves no process behind.

Timeouts are short (predict 1-2 s, idle 1 s, batch delay 100-300 ms); every wait polls
with a generous deadline, so a slow machine makes a test slower, not red.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import socket
import time
from collections import Counter
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio
from serving import MODELS, Server, model_url, register, running_server

from djl.wlm import launch as launch_module

#: Generous ceiling for anything that should take a moment (process start, replacement).
PATIENCE_S = 30.0


# -- helpers ------------------------------------------------------------------------------


def model_copy(tmp_path: Path, model: str, properties: str, *, source: str = "") -> str:
    """A model folder under tmp_path: tests/models/<model>/model.py (or ``source``) and
    the given serving.properties. Returns its ``file:`` URL."""
    folder = tmp_path / "models" / model
    folder.mkdir(parents=True)
    if source:
        (folder / "model.py").write_text(source)
    else:
        shutil.copy(MODELS / model / "model.py", folder / "model.py")
    (folder / "serving.properties").write_text(properties)
    return f"file:{folder.resolve()}/"


async def register_url(server: Server, name: str, url: str, **params: str) -> None:
    r = await server.client.post("/models", params={"url": url, "model_name": name, **params})
    assert r.status_code == 200, r.text


async def describe(server: Server, name: str) -> dict:
    r = await server.client.get(f"/models/{name}")
    assert r.status_code == 200, r.text
    [workflow] = r.json()
    [model] = workflow["models"]
    return model


def workers(model: dict) -> list[dict]:
    return [w for group in model["workerGroups"] for w in group["workers"]]


def ready_ids(model: dict) -> list[int]:
    return [w["id"] for w in workers(model) if w["status"] == "READY"]


class MostReady:
    """The most READY workers of a model that describe has shown so far."""

    def __init__(self, server: Server, name: str) -> None:
        self.server, self.name, self.most = server, name, 0

    async def reached(self, count: int) -> bool:
        model = await describe(self.server, self.name)
        self.most = max(self.most, len(ready_ids(model)))
        return self.most >= count


async def eventually(check, timeout: float = PATIENCE_S, interval: float = 0.05):
    """Poll ``await check()`` until it returns something truthy; fail after ``timeout``."""
    with trio.move_on_after(timeout):
        while True:
            value = await check()
            if value:
                return value
            await trio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s: {check.__name__}")


async def predict(server: Server, name: str, body: bytes = b"x", **params: str):
    return await server.client.post(f"/predictions/{name}", params=params, content=body)


async def worker_pid(server: Server, name: str) -> int:
    r = await predict(server, name, action="pid")
    assert r.status_code == 200, r.text
    return int(r.text)


def assert_wlm_503(r: httpx.Response, message: str | None = None) -> str:
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["code"] == 503 and body["type"] == "WlmException"
    if message is not None:
        assert body["message"] == message
    return body["message"]


def alive(pid: int) -> bool:
    """A live (not zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def runtime_pids(model_dir_fragment: str) -> list[int]:
    """``python -m djl.runtime`` children of this test process serving that model folder."""
    me = str(os.getpid())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if b"djl.runtime" not in argv or not any(model_dir_fragment.encode() in a for a in argv):
            continue
        if stat.rsplit(")", 1)[1].split()[1] == me:
            found.append(int(entry.name))
    return found


# -- batching (spec §5.5, §6.8) ------------------------------------------------------------


async def test_concurrent_requests_fill_batches(tmp_path):
    """16 concurrent requests to one worker with batch_size 8: they share batches."""
    async with running_server(tmp_path) as server:
        await register(server, "batchsize", max_batch_delay="300")
        sizes: list[int] = []

        async def one():
            r = await predict(server, "batchsize")
            assert r.status_code == 200, r.text
            sizes.append(json.loads(r.text)["batch"])

        async with trio.open_nursery() as nursery:
            for _ in range(16):
                nursery.start_soon(one)
        counts = Counter(sizes)
        print("batch sizes seen:", dict(counts))
        assert len(sizes) == 16
        assert 1 < max(sizes) <= 8
        # A batch of n answers n requests, each saying n.
        assert all(count % size == 0 for size, count in counts.items())


async def test_a_lone_request_waits_for_max_batch_delay_and_no_longer(tmp_path):
    """Step 3: a lone job waits the whole budget (exact lower bound) and not twice it;
    step 4: batch_size 1 never waits, not even half of its 5 s max_batch_delay."""
    async with running_server(tmp_path) as server:
        await register(server, "batchsize", max_batch_delay="1000")
        await register(server, "single", "batchsize", batch_size="1", max_batch_delay="5000")
        model = await describe(server, "single")
        assert (model["batchSize"], model["maxBatchDelayMillis"]) == (1, 5000)
        for name in ("batchsize", "single"):  # the first request may pay for imports
            assert (await predict(server, name)).status_code == 200
        start = time.monotonic()
        r = await predict(server, "batchsize")
        waited = time.monotonic() - start
        assert r.status_code == 200 and json.loads(r.text) == {"batch": 1}
        print(f"lone request, max_batch_delay 1000 ms: {waited * 1000:.0f} ms")
        assert 1.0 <= waited < 1.9  # the margin is for a loaded machine, below a 2nd wait
        start = time.monotonic()
        r = await predict(server, "single")
        waited = time.monotonic() - start
        assert r.status_code == 200 and json.loads(r.text) == {"batch": 1}
        print(f"lone request, batch_size 1, max_batch_delay 5000 ms: {waited * 1000:.0f} ms")
        assert waited < 2.5


async def test_batched_answers_go_back_to_their_own_requests(tmp_path):
    """The behave model echoes each item of a batch: nobody gets a neighbour's answer."""
    async with running_server(tmp_path) as server:
        await register(server, "behave", batch_size="4", max_batch_delay="200")
        answers: dict[int, str] = {}

        async def one(i: int):
            r = await predict(server, "behave", f"body-{i}".encode())
            assert r.status_code == 200, r.text
            answers[i] = r.text

        async with trio.open_nursery() as nursery:
            for i in range(12):
                nursery.start_soon(one, i)
        assert answers == {i: f"body-{i}" for i in range(12)}


async def test_requests_whose_client_left_are_dropped_before_the_batch(tmp_path):
    """Step 5: while the worker is busy, two of three queued clients hang up; the third
    request then runs in a batch of one, not three."""
    async with running_server(tmp_path) as server:
        await register(server, "batchsize", max_batch_delay="300")

        async def busy():
            r = await predict(server, "batchsize", delay="2")
            assert r.status_code == 200 and json.loads(r.text) == {"batch": 1}

        async def impatient():
            with pytest.raises(httpx.TimeoutException):
                await server.client.post("/predictions/batchsize", content=b"x", timeout=0.3)

        result = {}

        async def patient():
            r = await predict(server, "batchsize")
            result["batch"] = json.loads(r.text)["batch"]

        async with trio.open_nursery() as nursery:
            nursery.start_soon(busy)
            await trio.sleep(0.6)  # the busy request's batch has left (300 ms budget)
            nursery.start_soon(impatient)
            nursery.start_soon(impatient)
            nursery.start_soon(patient)
        assert result == {"batch": 1}


# -- scaling (spec §5.2, §5.4, §5.5 step 1) --------------------------------------------------


async def test_slow_load_scales_up_to_max_then_idle_workers_retire(tmp_path):
    async with running_server(tmp_path) as server:
        await register(server, "behave", batch_size="1", min_worker="1", max_worker="3",
                       max_idle_time="1")
        model = await describe(server, "behave")
        [permanent] = ready_ids(model)
        assert model["maxIdleSeconds"] == 1
        assert [(g["minWorkers"], g["maxWorkers"]) for g in model["workerGroups"]] == [(1, 3)]

        statuses: Counter[int] = Counter()
        ready = MostReady(server, "behave")
        stop = trio.Event()

        async def client():
            while not stop.is_set():
                r = await predict(server, "behave", action="sleep", seconds="0.3")
                statuses[r.status_code] += 1

        async def scaled_up():
            return await ready.reached(3)

        start = time.monotonic()
        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(client)
            try:
                await eventually(scaled_up)
                print(f"scaled up to 3 workers in {time.monotonic() - start:.2f}s")
                # Keep the load a little longer: the pool must not pass max_worker.
                for _ in range(10):
                    await scaled_up()
                    await trio.sleep(0.05)
            finally:
                stop.set()
        assert ready.most == 3
        assert set(statuses) == {200}, statuses

        stopped = time.monotonic()

        async def back_to_min():
            model = await describe(server, "behave")
            return model if ready_ids(model) == [permanent] else None

        model = await eventually(back_to_min)
        print(f"back to 1 worker {time.monotonic() - stopped:.2f}s after the load stopped")
        # Retired workers stay listed as UNLOADING (spec §5.7); the model stays Healthy.
        assert len([w for w in workers(model) if w["status"] == "UNLOADING"]) >= 2
        assert model["status"] == "Healthy"
        r = await predict(server, "behave", b"still here")
        assert r.status_code == 200 and r.text == "still here"


# -- failures (spec §5.6, §6.9) --------------------------------------------------------------


async def test_crashed_worker_answers_503_and_is_replaced(tmp_path):
    async with running_server(tmp_path) as server:
        await register(server, "behave")
        [old_id] = ready_ids(await describe(server, "behave"))
        old_pid = await worker_pid(server, "behave")

        start = time.monotonic()
        r = await predict(server, "behave", action="exit")
        answered = time.monotonic() - start
        assert_wlm_503(r, "Python worker disconnected.")
        print(f"crash answered in {answered * 1000:.0f} ms")
        assert answered < 10

        async def replaced():
            model = await describe(server, "behave")
            ids = ready_ids(model)
            return model if ids and old_id not in ids else None

        model = await eventually(replaced)
        print(f"crash to replacement listed: {time.monotonic() - start:.2f}s")
        listed = {w["id"]: w["status"] for w in workers(model)}
        assert listed[old_id] == "UNLOADING"
        [new_id] = ready_ids(model)
        assert new_id > old_id
        assert model["status"] == "Healthy"
        new_pid = await worker_pid(server, "behave")
        assert new_pid != old_pid and not alive(old_pid)
        r = await predict(server, "behave", b"after the crash")
        assert r.status_code == 200 and r.text == "after the crash"
        r = await server.client.get("/ping")
        assert r.status_code == 200, r.text


async def test_predict_timeout_kills_the_worker_and_answers_503(tmp_path):
    url = model_copy(tmp_path, "behave", "engine=Python\noption.predict_timeout=1\n")
    async with running_server(tmp_path) as server:
        await register_url(server, "hang", url)
        old_pid = await worker_pid(server, "hang")
        start = time.monotonic()
        r = await predict(server, "hang", action="sleep", seconds="60")
        answered = time.monotonic() - start
        message = assert_wlm_503(r)
        assert "timed out" in message
        print(f"timeout answered after {answered:.2f}s: {message}")
        assert 1 <= answered < 10
        new_pid = await eventually(lambda: _pid_if_new(server, "hang", old_pid))
        print(f"timeout to a new worker: {time.monotonic() - start:.2f}s")
        assert not alive(old_pid)  # killed, not left sleeping for a minute
        assert alive(new_pid)


async def _pid_if_new(server: Server, name: str, old_pid: int) -> int | None:
    r = await predict(server, name, action="pid")
    if r.status_code == 200 and int(r.text) != old_pid:
        return int(r.text)
    return None


async def test_crashes_past_retry_threshold_fail_the_model(tmp_path):
    """retry_threshold=1 in serving.properties: the second crash turns the model FAILED."""
    url = model_copy(tmp_path, "behave", "engine=Python\nretry_threshold=1\n")
    async with running_server(tmp_path) as server:
        await register_url(server, "fragile", url)
        pid = await worker_pid(server, "fragile")
        assert_wlm_503(await predict(server, "fragile", action="exit"))
        await eventually(lambda: _pid_if_new(server, "fragile", pid))
        r = await server.client.get("/ping")
        assert r.status_code == 200, r.text

        assert_wlm_503(await predict(server, "fragile", action="exit"))

        async def ping_fails():
            r = await server.client.get("/ping")
            return r if r.status_code == 500 else None

        r = await eventually(ping_fails)
        assert r.json() == {"fragile": {"status": "FAILED"}}
        assert_wlm_503(await predict(server, "fragile"), "Model is not ready: fragile")
        model = await describe(server, "fragile")
        assert model["status"] == "FAILED" and ready_ids(model) == []

        async def no_process():
            return not runtime_pids(str(tmp_path / "models"))

        await eventually(no_process)


async def test_model_loading_timeout_fails_the_registration(tmp_path):
    source = "import time\ntime.sleep(60)\n\n\ndef handle(inputs):\n    return None\n"
    url = model_copy(tmp_path, "slowload", "engine=Python\noption.model_loading_timeout=1\n",
                     source=source)
    async with running_server(tmp_path) as server:
        start = time.monotonic()
        r = await server.client.post("/models", params={"url": url, "model_name": "slowload"})
        elapsed = time.monotonic() - start
        print(f"registration failed after {elapsed:.2f}s: {r.text.strip()}")
        assert r.status_code >= 400
        assert "timed out" in r.json()["message"]
        assert 1 <= elapsed < 15
        assert runtime_pids(str(tmp_path / "models")) == []
        r = await server.client.get("/models/slowload")
        assert r.status_code == 404


async def test_500_requests_with_a_worker_killed_mid_run(tmp_path):
    """Every request is answered; the only failures are 503s of the killed worker's batch."""
    async with running_server(tmp_path) as server:
        await register(server, "behave", min_worker="2", max_worker="2", batch_size="4",
                       max_batch_delay="20")
        victim = await worker_pid(server, "behave")
        results: dict[int, httpx.Response] = {}
        todo = iter(range(500))
        killed_at: list[int] = []

        async def client():
            for i in todo:
                r = await predict(server, "behave", f"req-{i}".encode())
                results[i] = r
                if len(results) == 100 and not killed_at:
                    os.kill(victim, signal.SIGKILL)
                    killed_at.append(i)

        start = time.monotonic()
        async with trio.open_nursery() as nursery:
            for _ in range(32):
                nursery.start_soon(client)
        elapsed = time.monotonic() - start
        codes = Counter(r.status_code for r in results.values())
        print(f"500 requests in {elapsed:.2f}s: {dict(codes)}")
        assert len(results) == 500 and killed_at
        assert set(codes) <= {200, 503}, codes
        assert codes[503] <= 4  # at most the killed worker's one batch
        for i, r in results.items():
            if r.status_code == 200:
                assert r.text == f"req-{i}"
            else:
                assert_wlm_503(r)
        assert not alive(victim)

        async def two_ready():
            model = await describe(server, "behave")
            return len(ready_ids(model)) == 2

        await eventually(two_ready)


# -- lifecycle ------------------------------------------------------------------------------


async def test_unregister_answers_inflight_and_queued_requests(tmp_path):
    url = model_copy(tmp_path, "behave", "engine=Python\n")
    async with running_server(tmp_path) as server:
        await register_url(server, "leaving", url, min_worker="2", max_worker="2",
                           batch_size="1")
        assert len(runtime_pids(str(tmp_path / "models"))) == 2
        outcomes: list[tuple[int, str]] = []

        async def one():
            r = await predict(server, "leaving", action="sleep", seconds="2")
            outcomes.append((r.status_code, r.text))

        async with trio.open_nursery() as nursery:
            for _ in range(6):
                nursery.start_soon(one)

            async def queued():
                # Two sleep in the workers, up to four wait in the queue.
                return (await describe(server, "leaving"))["requestInQueue"] >= 3

            await eventually(queued)
            start = time.monotonic()
            r = await server.client.delete("/models/leaving")
            print(f"unregister took {time.monotonic() - start:.2f}s")
            assert r.status_code == 200, r.text
            assert r.json() == {"status": 'Model or workflow "leaving" unregistered'}
        assert len(outcomes) == 6
        served = [text for code, text in outcomes if code == 200]
        refused = [json.loads(text) for code, text in outcomes if code == 503]
        assert len(served) + len(refused) == 6
        assert len(served) >= 2 and refused
        assert all(body["message"] == "Worker shutting down" for body in refused)
        assert runtime_pids(str(tmp_path / "models")) == []
        r = await predict(server, "leaving")
        assert r.status_code == 404


async def test_shutdown_stops_every_worker(tmp_path):
    url = model_copy(tmp_path, "behave", "engine=Python\n")
    async with running_server(tmp_path) as server:
        await register_url(server, "a", url, min_worker="2", max_worker="2")
        assert len(runtime_pids(str(tmp_path / "models"))) == 2
    assert runtime_pids(str(tmp_path / "models")) == []


async def test_worker_output_goes_to_the_server_log(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="djl.worker")
    source = (
        "import sys\n"
        "print('loaded from stdout')\n\n\n"
        "def handle(inputs):\n"
        "    if inputs.is_empty():\n"
        "        return None\n"
        "    print('handling a request')\n"
        "    print('a warning', file=sys.stderr)\n"
        "    from djl_python import Output\n"
        "    return Output().add('ok')\n"
    )
    url = model_copy(tmp_path, "talker", "engine=Python\n", source=source)
    async with running_server(tmp_path) as server:
        await register_url(server, "talker", url)
        [worker_id] = ready_ids(await describe(server, "talker"))
        r = await predict(server, "talker")
        assert r.status_code == 200 and r.text == "ok"
        prefix = f"[talker/{worker_id}] "

        async def logged():
            lines = {(rec.levelno, rec.getMessage()) for rec in caplog.records
                     if rec.name == "djl.worker"}
            wanted = {
                (logging.INFO, prefix + "loaded from stdout"),
                (logging.INFO, prefix + "handling a request"),
                (logging.WARNING, prefix + "a warning"),
            }
            return wanted <= lines

        await eventually(logged, timeout=10)


async def test_a_crashing_workers_last_words_reach_the_log(tmp_path, caplog):
    """The log forwarders drain the pipes after the process dies, so a crash's traceback
    is in the server log, not lost with the worker."""
    caplog.set_level(logging.INFO, logger="djl.worker")
    async with running_server(tmp_path) as server:
        await register(server, "loud", "behave")
        r = await server.client.post("/predictions/loud", params={"action": "die_loudly"})
        assert r.status_code == 503

        async def logged():
            return any(rec.getMessage().startswith("[loud/")
                       and rec.getMessage().endswith("Traceback: last words before dying")
                       for rec in caplog.records if rec.name == "djl.worker")

        await eventually(logged, timeout=10)


# -- regressions ------------------------------------------------------------------------------

#: Loads unless the file named by ``option.marker`` exists; answers with its pid after
#: sleeping ``seconds``.
GUARDED_MODEL = '''\
import os
import time

from djl_python import Output


def handle(inputs):
    if inputs.is_empty():
        marker = inputs.get_properties().get("marker")
        if marker and os.path.exists(marker):
            raise RuntimeError("this model cannot load twice")
        return None
    item = inputs.get_batches()[0]
    if item.contains_key("seconds"):
        time.sleep(float(item.get_as_string("seconds")))
    return Output().add(str(os.getpid()))
'''


@pytest.mark.parametrize("threshold", [
    pytest.param("", id="default-threshold"),
    pytest.param("retry_threshold=100\n", id="threshold-100"),
])
async def test_a_scale_up_worker_that_cannot_load_leaves_the_model_serving(
    tmp_path, threshold
):
    """A temporary worker whose load fails is that worker's failure: the model does not
    turn FAILED, its healthy worker is not cancelled, every request is answered by it."""
    marker = tmp_path / "no-more-workers"
    url = model_copy(tmp_path, "guarded",
                     f"engine=Python\noption.marker={marker}\n{threshold}",
                     source=GUARDED_MODEL)
    async with running_server(tmp_path) as server:
        await register_url(server, "guarded", url, min_worker="1", max_worker="2",
                           batch_size="1")
        pid = await worker_pid(server, "guarded")
        marker.touch()
        seen: set[str] = set()
        statuses: Counter[int] = Counter()
        texts: set[str] = set()
        done = trio.Event()

        async def watch():
            while not done.is_set():
                model = await describe(server, "guarded")
                seen.add(model["status"])
                r = await server.client.get("/ping")
                seen.add(f"ping {r.status_code}")
                await trio.sleep(0.05)

        async def client():
            r = await predict(server, "guarded", seconds="0.4")
            statuses[r.status_code] += 1
            texts.add(r.text)

        async def scale_up_tried():
            return len(workers(await describe(server, "guarded"))) > 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            async with trio.open_nursery() as clients:
                for _ in range(6):  # queue 5 > 2 x batch_size: scale up
                    clients.start_soon(client)
                await eventually(scale_up_tried, timeout=10)
            done.set()
        print("statuses", dict(statuses), "seen", sorted(seen))
        assert statuses == {200: 6}, (statuses, texts)
        assert texts == {str(pid)}
        assert seen == {"Healthy", "ping 200"}
        assert await worker_pid(server, "guarded") == pid


async def test_unregister_whose_client_hangs_up_still_stops_the_workers(tmp_path):
    """The client of DELETE gives up during the grace period for an in-flight request: the
    model is gone anyway, so its worker processes must stop (not live on unreachable)."""
    source = (
        "import pathlib\nimport time\n\nfrom djl_python import Output\n\n\n"
        "def handle(inputs):\n"
        "    if inputs.is_empty():\n"
        "        return None\n"
        "    pathlib.Path('busy').touch()  # the working directory is the model folder\n"
        "    time.sleep(3)\n"
        "    return Output().add('slept')\n"
    )
    url = model_copy(tmp_path, "sleeper", "engine=Python\n", source=source)
    busy = tmp_path / "models" / "sleeper" / "busy"
    async with running_server(tmp_path) as server:
        await register_url(server, "leaving", url, min_worker="2", max_worker="2")
        assert len(runtime_pids(str(tmp_path / "models"))) == 2
        outcome: list[int] = []

        async def inflight():
            outcome.append((await predict(server, "leaving")).status_code)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(inflight)
            with trio.fail_after(10):
                while not busy.exists():
                    await trio.sleep(0.02)
            with pytest.raises(httpx.TimeoutException):
                await server.client.delete("/models/leaving", timeout=0.5)
            hung_up = time.monotonic()

            async def gone():
                listed = (await server.client.get("/models")).json()["models"]
                return not listed and not runtime_pids(str(tmp_path / "models"))

            await eventually(gone, timeout=10)
            print(f"workers gone {time.monotonic() - hung_up:.2f}s after the client hung up")
        assert outcome and outcome[0] in (200, 503)
        assert (await predict(server, "leaving")).status_code == 404


async def test_jobs_queued_behind_a_dying_temporary_worker_are_served(tmp_path):
    """min_worker=0: the only (temporary) worker dies with a job still queued; a new
    worker starts for it instead of leaving it waiting forever."""
    async with running_server(tmp_path) as server:
        await register(server, "lazy", "behave", min_worker="0", max_worker="1",
                       batch_size="1")
        results: dict[str, httpx.Response] = {}

        async def call(label: str, **params: str):
            results[label] = await predict(server, "lazy", label.encode(), **params)

        async def queued(n: int):
            async def check():
                model = await describe(server, "lazy")
                return workers(model) and model["requestInQueue"] == n
            check.__name__ = f"{n} queued"
            await eventually(check, timeout=15)

        start = time.monotonic()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(call, "r1", action="sleep", seconds="2"))
            await queued(0)  # a temporary worker started and took r1
            nursery.start_soon(partial(call, "r2", action="exit"))
            await queued(1)
            nursery.start_soon(call, "r3")
            await queued(2)
            with trio.fail_after(15):
                while len(results) < 3:
                    await trio.sleep(0.05)
        print(f"all answered in {time.monotonic() - start:.2f}s")
        assert results["r1"].status_code == 200 and results["r1"].text == "r1"
        assert_wlm_503(results["r2"])
        assert results["r3"].status_code == 200 and results["r3"].text == "r3"


class _NoFileDescriptors:
    """Stands in for the ``socket`` module in djl.wlm.worker: socketpair fails (EMFILE)."""

    def __getattr__(self, name: str):
        return getattr(socket, name)

    def socketpair(self, *args, **kwargs):
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))


#: A model whose crash leaves a process behind holding the worker's stderr for a moment
#: (in its own session, so stopping the worker's process group does not reach it): the
#: server's log forwarders are still draining after the worker's process has been reaped.
LINGERING_LOGS_MODEL = """
import os
import subprocess
import sys

from djl_python import Output


def handle(inputs):
    if inputs.is_empty():
        return None
    item = inputs.get_batches()[0]
    if item.contains_key("action") and item.get_as_string("action") == "exit":
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.8)"],
                         start_new_session=True)
        os._exit(3)
    return Output().add(str(os.getpid()))
"""


async def test_a_crashed_worker_holds_its_slot_until_its_logs_are_drained(tmp_path):
    """A request queued while a dead worker's logs still drain must wait for the restart,
    not start a scale-up beside it: that put two workers in a maxWorkers=1 group."""
    url = model_copy(tmp_path, "lingering", "minWorkers=1\nmaxWorkers=1\n",
                     source=LINGERING_LOGS_MODEL)
    async with running_server(tmp_path) as server:
        c = server.client
        r = await c.post("/models", params={"url": url, "model_name": "m"})
        assert r.status_code == 200, r.text
        r = await c.post("/predictions/m", files={"action": b"exit"})
        assert r.status_code == 503, r.text
        r = await c.post("/predictions/m", files={"data": b"x"})  # queued: no worker now
        assert r.status_code == 200, r.text
        most = 0
        with trio.move_on_after(2):
            while True:
                described = (await c.get("/models/m")).json()[0]["models"][0]
                workers = described["workerGroups"][0]["workers"]
                most = max(most, sum(w["status"] == "READY" for w in workers))
                await trio.sleep(0.05)
        assert most == 1


async def test_a_worker_that_cannot_be_spawned_is_a_clean_load_failure(tmp_path, monkeypatch):
    """A missing python executable, or no file descriptor left for the socketpair: the
    registration fails 500 naming the cause, is rolled back, and the server serves on."""
    url = model_copy(tmp_path, "behave",
                     "engine=Python\noption.pythonExecutable=/nonexistent/python\n")
    async with running_server(tmp_path) as server:
        c = server.client

        async def refused(name: str, source: str) -> str:
            r = await c.post("/models", params={"url": source, "model_name": name})
            assert r.status_code == 500, r.text
            body = r.json()
            assert body["code"] == 500 and body["type"] == "EngineException", body
            assert (await c.get(f"/models/{name}")).status_code == 404  # rolled back
            return body["message"]

        message = await refused("nopython", url)
        assert message.startswith("Cannot start the worker process: "), message
        assert "/nonexistent/python" in message

        with monkeypatch.context() as patch:
            patch.setattr(launch_module, "socket", _NoFileDescriptors())
            message = await refused("nofds", model_url("behave"))
        assert message == (
            f"Cannot start the worker process: [Errno {errno.EMFILE}] "
            f"{os.strerror(errno.EMFILE)}"), message

        assert (await c.get("/models")).json() == {"models": []}
        assert runtime_pids("behave") == []
        await register(server, "fine", "behave")
        r = await predict(server, "fine", b"still serving")
        assert r.status_code == 200 and r.text == "still serving"
        r = await c.get("/ping")
        assert r.status_code == 200 and r.json() == {"fine": {"status": "Healthy"}}


async def test_a_burst_scales_up_to_max_worker(tmp_path):
    """30 one-second requests at once: the pool keeps adding temporary workers as each one
    becomes ready, up to max_worker, not just one (the queue stays > 2 x batch_size)."""
    async with running_server(tmp_path) as server:
        await register(server, "behave", batch_size="1", min_worker="1", max_worker="4")
        statuses: Counter[int] = Counter()
        ready = MostReady(server, "behave")

        async def client():
            r = await predict(server, "behave", action="sleep", seconds="1")
            statuses[r.status_code] += 1

        async def scaled_to_max():
            return await ready.reached(4)

        start = time.monotonic()
        async with trio.open_nursery() as nursery:
            for _ in range(30):
                nursery.start_soon(client)
            await eventually(scaled_to_max)
            print(f"4 workers after {time.monotonic() - start:.2f}s")
        print(f"30 requests answered after {time.monotonic() - start:.2f}s")
        assert statuses == {200: 30}


async def test_a_crash_fails_only_the_batch_being_run_not_pipelined_ones(tmp_path):
    """A fast model pipelines batches (pipeline_depth 4); when one request kills the worker,
    the batches sent behind it in the pipe are served by the replacement, not failed.

    Each round: a 20 ms request keeps the worker busy while a crashing request (priority 0,
    so it goes first) and 8 echo requests queue; the worker then sends the crashing batch
    with 3 echo batches pipelined behind it."""
    url = model_copy(tmp_path, "behave", "engine=Python\nretry_threshold=100\n")
    async with running_server(tmp_path) as server:
        await register_url(server, "b", url, batch_size="1", min_worker="1", max_worker="1")
        failed: list[str] = []
        for _ in range(5):
            for _warm in range(30):  # fast answers: the worker's service time says "pipeline"
                assert (await predict(server, "b", b"warm")).status_code == 200
            outcomes: dict[int, httpx.Response] = {}

            async def client(i: int, outcomes=outcomes, **params: str):
                headers = {"x-priority": "0"} if params.get("action") == "exit" else {}
                outcomes[i] = await server.client.post(
                    "/predictions/b", params=params, content=str(i).encode(), headers=headers)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(client, -1, action="sleep", seconds="0.02"))
                await trio.sleep(0.002)
                nursery.start_soon(partial(client, 0, action="exit"))
                for i in range(1, 9):
                    nursery.start_soon(client, i)
            assert outcomes.pop(-1).status_code == 200
            assert_wlm_503(outcomes.pop(0), "Python worker disconnected.")
            failed += [f"{i}: {r.status_code} {r.text}" for i, r in outcomes.items()
                       if (r.status_code, r.text) != (200, str(i))]
        assert failed == []


async def test_scaling_to_zero_answers_the_queued_requests(tmp_path):
    """Requests queued when the model is scaled to 0/0 get the 503 new ones get, at once,
    instead of waiting for a worker that can never come."""
    async with running_server(tmp_path) as server:
        await register(server, "behave", batch_size="1", min_worker="1", max_worker="1")
        answers: list[httpx.Response] = []

        async def client():
            answers.append(await predict(server, "behave", action="sleep", seconds="1"))

        async with trio.open_nursery() as nursery:
            for _ in range(6):
                nursery.start_soon(client)

            async def queued():
                return (await describe(server, "behave")).get("requestInQueue", 0) >= 4

            await eventually(queued)
            r = await server.client.put("/models/behave",
                                        params={"min_worker": "0", "max_worker": "0"})
            assert r.status_code == 200
            scaled = time.monotonic()
        print(f"all answered {time.monotonic() - scaled:.2f}s after the scale")
        assert time.monotonic() - scaled < 10
        kinds = Counter(r.status_code for r in answers)
        assert kinds[200] >= 1 and kinds[200] + kinds[503] == 6, kinds
        for r in answers:
            if r.status_code == 503:
                assert r.json() == {"code": 503, "type": "WlmShutdownException",
                                    "message": "All model workers has been shutdown: behave"}
