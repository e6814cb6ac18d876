"""Operability through the real server (issue 11): Prometheus metrics (spec §2.8), health
that counts only live workers (§3.2, 11.6), worker recycling under load (11.7)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families
from serving import MODELS, Server, model_url, register, running_server

PROMETHEUS = {"SERVING_PROMETHEUS": "true"}


def model_copy(tmp_path: Path, **properties: str) -> Path:
    """tests/models/recycle/ in tmp_path, with ``properties`` added to serving.properties."""
    target = tmp_path / "recycle"
    shutil.copytree(MODELS / "recycle", target)
    with open(target / "serving.properties", "a") as file:
        for key, value in properties.items():
            file.write(f"{key}={value}\n")
    return target


async def register_dir(server: Server, name: str, path: Path, **params: str) -> None:
    r = await server.client.post("/models", params={"url": f"file:{path}/", "model_name": name,
                                                    **params})
    assert r.status_code == 200, r.text


async def scrape(server: Server, *names: str) -> dict[str, list]:
    """Family name → its samples, parsed with prometheus_client's own parser."""
    params = [("name[]", n) for n in names]
    r = await server.client.get("/server/metrics", params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {f.name: f.samples for f in text_string_to_metric_families(r.text)}


def value(samples: list, name: str, **labels: str) -> float:
    found = [s.value for s in samples
             if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (name, labels, samples)
    return found[0]


# -- metrics (spec §2.8) ------------------------------------------------------------------------


async def test_metrics_count_known_traffic(tmp_path):
    async with running_server(tmp_path, env=PROMETHEUS) as server:
        await register(server, "m", "recycle", min_worker="1", max_worker="1")
        failed = await server.client.post("/models", params={"url": model_url("failinit"),
                                                             "model_name": "bad"})
        assert failed.status_code >= 400
        for _ in range(5):
            r = await server.client.post("/predictions/m", params={"action": "pid"})
            assert r.status_code == 200
        refused = await server.client.post("/predictions/m", params={"action": "raise"})
        assert refused.status_code == 424  # the model's failure: a ServerError (§3.9)
        crash = await server.client.post("/predictions/m", params={"action": "exit"})
        assert crash.status_code == 503
        missing = await server.client.post("/predictions/nobody")
        assert missing.status_code == 404
        families = await scrape(server)
        # Every answer before this scrape: register and 5 predictions; the 424 and the
        # 404; the failed registration and the crash.
        assert value(families["Response_2XX"], "Response_2XX_total") == 6
        assert value(families["Response_4XX"], "Response_4XX_total") == 2
        assert value(families["Response_5XX"], "Response_5XX_total") == 2
        m = {"Model": "m", "Version": ""}
        assert value(families["DJLServingStart"], "DJLServingStart_total",
                     Version="0.1.0") == 1
        [startup] = families["StartupLatency"]
        assert startup.labels["Host"] and startup.value > 0
        assert value(families["RegisterWorkflow"], "RegisterWorkflow_count", **m) == 1
        assert value(families["DownloadModel"], "DownloadModel_count", **m) == 1
        assert value(families["LoadModel"], "LoadModel_count", **m) == 1
        assert value(families["LoadModel"], "LoadModel_sum", **m) > 0  # µs
        assert value(families["ModelLoadingError"], "ModelLoadingError_total") == 1
        assert value(families["QueueTime"], "QueueTime_count", **m) == 7
        assert value(families["DynamicBatchSize"], "DynamicBatchSize_count", **m) == 7
        assert value(families["DynamicBatchSize"], "DynamicBatchSize_sum", **m) == 7
        assert value(families["RequestLatency"], "RequestLatency_count", **m) == 7
        assert value(families["WlmError"], "WlmError_total") == 1
        assert value(families["ServerError"], "ServerError_total") == 1
        assert value(families["QueueDepth"], "QueueDepth", **m) == 0
        assert value(families["WorkerRecycles"], "WorkerRecycles_total", **m) == 0

        # The crashed worker is replaced: one more restart, and its RSS is reported.
        with trio.fail_after(20):
            while True:
                families = await scrape(server, "Workers", "WorkerRestarts", "WorkerRSS")
                idle = [s for s in families["Workers"] if s.labels["State"] == "IDLE"]
                if idle:
                    break
                await trio.sleep(0.05)
        assert value(families["WorkerRestarts"], "WorkerRestarts_total", **m) == 1
        assert value(families["Workers"], "Workers", State="STOPPED", **m) == 1
        [rss] = families["WorkerRSS"]
        assert rss.labels["Model"] == "m" and rss.value > 1 << 20
        assert set(families) == {"Workers", "WorkerRestarts", "WorkerRSS"}


async def test_metrics_name_filter_and_disabled(tmp_path):
    async with running_server(tmp_path, env=PROMETHEUS) as server:
        r = await server.client.get(
            "/server/metrics?name[]=DJLServingStart&name[]=StartupLatency")
        assert r.status_code == 200 and "StartupLatency{Host=" in r.text
        names = {f.name for f in text_string_to_metric_families(r.text)}
        assert names == {"DJLServingStart", "StartupLatency"}
        r = await server.client.put("/server/metrics")
        assert r.status_code == 405
    async with running_server(tmp_path) as server:
        r = await server.client.get("/server/metrics")
        assert r.status_code == 400
        assert r.json()["message"] == ("Prometheus is not enabled, set SERVING_PROMETHEUS "
                                       "environment var to true to enable prometheus metrics")


# -- health (spec §3.2, issue 11.6) ---------------------------------------------------------------


async def _unhealthy_after_failed_replacements(tmp_path: Path, env: dict[str, str]) -> None:
    path = model_copy(tmp_path, retry_threshold="100")
    async with running_server(tmp_path, env=env) as server:
        await register_dir(server, "m", path, min_worker="1", max_worker="1")
        r = await server.client.get("/ping")
        assert r.status_code == 200 and r.json() == {"m": {"status": "Healthy"}}
        (path / "refuse_load").touch()
        r = await server.client.post("/predictions/m", params={"action": "exit"})
        assert r.status_code == 503
        with trio.fail_after(20):  # until a replacement has failed and none is loading
            while True:
                [described] = (await server.client.get("/models/m")).json()
                workers = described["models"][0]["workerGroups"][0]["workers"]
                if len(workers) >= 2 and all(w["status"] == "UNLOADING" for w in workers):
                    break
                await trio.sleep(0.05)
        assert described["models"][0]["status"] == "Unhealthy"
        r = await server.client.get("/ping")
        assert r.json() == {"m": {"status": "Unhealthy"}}
        return r.status_code


async def test_a_model_whose_replacements_cannot_load_is_unhealthy(tmp_path):
    """Regression: the dead worker and the failed replacements are listed (UNLOADING) but
    count for nothing; they used to keep the model Healthy."""
    assert await _unhealthy_after_failed_replacements(tmp_path, {}) == 200


async def test_sagemaker_health_check_override_fails_ping_for_an_unhealthy_model(tmp_path):
    env = {"SAGEMAKER_HEALTH_CHECK_OVERRIDE": "true"}
    assert await _unhealthy_after_failed_replacements(tmp_path, env) == 500


# -- recycling (issue 11.7) -----------------------------------------------------------------------


@dataclass
class Load:
    """What ``steady_load`` saw: every status, and the worker pid of every 200."""

    pids: list[str] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)


@asynccontextmanager
async def steady_load(client: httpx.AsyncClient, clients: int) -> AsyncIterator[Load]:
    """``clients`` concurrent clients asking /predictions/m for its pid, back to back, for
    as long as the block runs (and a moment after it, so traffic outlasts the change)."""
    load = Load()
    stop = trio.Event()

    async def one() -> None:
        while not stop.is_set():
            r = await client.post("/predictions/m", params={"action": "pid"})
            load.statuses.append(r.status_code)
            if r.status_code == 200:
                load.pids.append(r.text)

    async with trio.open_nursery() as nursery:
        for _ in range(clients):
            nursery.start_soon(one)
        yield load
        await trio.sleep(0.2)
        stop.set()


async def test_a_worker_is_recycled_by_request_count_under_load(tmp_path):
    path = model_copy(tmp_path, **{"option.max_worker_requests": "15"})
    async with running_server(tmp_path, env=PROMETHEUS) as server:
        await register_dir(server, "m", path, min_worker="1", max_worker="1")
        async with steady_load(server.client, 4) as load:
            with trio.fail_after(60):
                while len(set(load.pids)) < 3:
                    await trio.sleep(0.05)
        pids = load.pids
        assert set(load.statuses) == {200}
        distinct = list(dict.fromkeys(pids))
        assert len(distinct) >= 3
        assert all(pids.count(pid) >= 15 for pid in distinct[:-2])
        [described] = (await server.client.get("/models/m")).json()
        recycled = described["models"][0]["recycledWorkers"]
        assert recycled >= 2
        families = await scrape(server, "WorkerRecycles", "WorkerRestarts")
        m = {"Model": "m", "Version": ""}
        assert value(families["WorkerRecycles"], "WorkerRecycles_total", **m) >= recycled
        assert value(families["WorkerRestarts"], "WorkerRestarts_total", **m) == 0


async def test_a_worker_is_recycled_by_memory_under_load(tmp_path):
    path = model_copy(tmp_path, **{"option.max_worker_rss_mb": "150",
                                   "option.worker_rss_check_interval": "0.1"})
    async with running_server(tmp_path) as server:
        await register_dir(server, "m", path, min_worker="1", max_worker="1")
        first = (await server.client.post("/predictions/m", params={"action": "pid"})).text
        async with steady_load(server.client, 3) as load:
            await trio.sleep(0.5)
            assert set(load.pids) == {first}  # under the limit: nothing happens
            r = await server.client.post("/predictions/m", params={"action": "grow",
                                                                   "mb": "200"})
            assert r.status_code == 200 and r.text == first
            with trio.fail_after(30):
                while load.pids[-1] == first:
                    await trio.sleep(0.05)
        assert set(load.statuses) == {200}
        assert len(set(load.pids)) == 2 and load.pids[-1] != first
        [described] = (await server.client.get("/models/m")).json()
        assert described["models"][0]["recycledWorkers"] == 1
        assert described["models"][0]["status"] == "Healthy"
