"""Workflows through real HTTP and real worker processes (spec §7, §2.3, §2.5-§2.9, §3.2, §4.3).

The test models live in tests/models/wf_*: ``wf_upper`` uppercases the body (and marks its
Output with the property ``x-upper``), ``wf_suffix`` appends its ``suffix`` init property
(default ``!``, plus `` via upper`` when its Input carries ``x-upper``), ``wf_cls_a`` and
``wf_cls_b`` answer fixed classification lists for ``ensemble``.

Where a test must see worker processes come and go, it copies a model into its own
tmp_path: the copy's path, on the worker's command line (``--model-dir``), is a marker no
other test's processes carry.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
import zipfile
from pathlib import Path
from typing import Any

import trio
from serving import EXAMPLES, MODELS, model_url, running_server, runtime_pids
from store_helpers import ServerThread, Site

TEXT = {"content-type": "text/plain"}


# -- helpers ----------------------------------------------------------------------------------


def file_url(path: Path) -> str:
    """``file:`` URL of a path; a directory's ends with ``/``."""
    return f"file:{path}" + ("/" if path.is_dir() else "")


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    return path


def one(model: str, **extra: Any) -> dict[str, Any]:
    """A workflow's model object for a test model, with a single worker."""
    return {"modelUrl": model_url(model), "minWorkers": 1, "maxWorkers": 1, **extra}


def private_copy(tmp_path: Path, model: str) -> Path:
    """A copy of a test model whose path marks its worker processes."""
    target = tmp_path / f"{model}_{uuid.uuid4().hex[:10]}"
    shutil.copytree(MODELS / model, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


async def wait_until_gone(marker: Path, seconds: float = 20) -> None:
    with trio.fail_after(seconds):
        while runtime_pids(marker):
            await trio.sleep(0.05)


async def predict(client, name: str, body: str = "hello", version: str | None = None) -> str:
    path = f"/predictions/{name}" + (f"/{version}" if version else "")
    r = await client.post(path, content=body.encode(), headers=TEXT)
    assert r.status_code == 200, (name, r.status_code, r.text)
    return r.text


async def post_workflow(client, url: str, **params: str) -> None:
    r = await client.post("/workflows", params={"url": url, **params})
    assert r.status_code == 200, r.text


def workers(described: list[dict[str, Any]], model: str) -> list[int]:
    """The worker ids of ``model`` in a describe answer."""
    [found] = [m for w in described for m in w["models"] if m["modelName"] == model]
    return sorted(w["id"] for g in found["workerGroups"] for w in g["workers"])


def error_of(r) -> dict[str, Any]:
    body = r.json()
    assert body["code"] == r.status_code
    return body


# -- tests --------------------------------------------------------------------------------------


async def test_json_directory_and_yaml_file_from_disk(tmp_path):
    """A directory holding workflow.json and a .yml file: register, chain, list, describe,
    ping; POST /models with a workflow URL names the workflow after the URL (§2.2)."""
    chain_dir = tmp_path / "chain-dir"
    shutil.copytree(MODELS / "wf_suffix", chain_dir / "suffix",
                    ignore=shutil.ignore_patterns("__pycache__"))
    write_json(chain_dir / "workflow.json", {
        "name": "chain", "version": "1.0",
        # {model_dir} is the workflow file's folder: models can sit next to it.
        "models": {"up": one("wf_upper"), "suf": "{model_dir}/suffix/"},
        "workflow": {"upped": ["up", "in"], "out": ["suf", "upped"]},
    })
    yml = tmp_path / "flip.yml"
    yml.write_text(
        "name: flip\n"
        "models:\n"
        f"  first: {{modelUrl: '{model_url('wf_suffix')}', minWorkers: 1, maxWorkers: 1,\n"
        "           arguments: {suffix: '?'}}\n"
        f"  then: '{model_url('wf_upper')}'\n"
        "workflow:\n"
        "  out: ['then', ['first', 'in']]\n"
    )
    suffix_url = f"file:{chain_dir}/suffix/"
    async with running_server(tmp_path) as server:
        c = server.client
        r = await c.post("/workflows", params={"url": file_url(chain_dir / "workflow.json")})
        assert r.status_code == 200, r.text
        assert r.json() == {"status": 'Workflow "chain" registered.'}
        r = await c.post("/workflows", params={"url": file_url(yml)})
        assert r.status_code == 200, r.text
        assert r.json() == {"status": 'Workflow "flip" registered.'}

        # Chains: each model's Output (content and properties) is the next one's Input.
        assert await predict(c, "chain") == "HELLO! via upper"
        assert await predict(c, "flip") == "HELLO?"  # `arguments` reached the model

        # Describe is the same under /workflows and /models, whole or by version.
        described = (await c.get("/workflows/chain")).json()
        assert (await c.get("/models/chain")).json() == described
        assert (await c.get("/workflows/chain/1.0")).json() == described
        [workflow] = described
        assert (workflow["workflowName"], workflow["version"]) == ("chain", "1.0")
        assert [m["modelName"] for m in workflow["models"]] == ["up", "suf"]
        assert [m["modelUrl"] for m in workflow["models"]] == [model_url("wf_upper"), suffix_url]
        for model in workflow["models"]:
            assert model["status"] == "Healthy" and model["loadedAtStartup"] is False
            [group] = model["workerGroups"]
            assert (group["minWorkers"], group["maxWorkers"]) == (1, 1)
            assert len(group["workers"]) == 1
        r = await c.get("/workflows/chain/9")
        assert r.status_code == 404
        assert error_of(r)["message"] == "Workflow not found: chain/9"

        # Multi-model workflows list one row per model, "<workflow>:<model>".
        assert (await c.get("/models")).json() == {"models": [
            {"modelName": "chain:up", "version": "1.0", "modelUrl": model_url("wf_upper"),
             "status": "READY"},
            {"modelName": "chain:suf", "version": "1.0", "modelUrl": suffix_url,
             "status": "READY"},
            {"modelName": "flip:first", "modelUrl": model_url("wf_suffix"), "status": "READY"},
            {"modelName": "flip:then", "modelUrl": model_url("wf_upper"), "status": "READY"},
        ]}
        r = await c.get("/ping")
        assert r.status_code == 200
        assert r.json() == {key: {"status": "Healthy"} for key in
                            ("chain:up", "chain:suf", "flip:first", "flip:then")}
        assert (await c.get("/workflows")).json() == {"nextPageToken": "2", "workflows": [
            {"workflowName": "chain", "version": "1.0"}, {"workflowName": "flip"}]}

        # POST /models with a workflow URL: the inferred or given name wins over the file's.
        r = await c.post("/models", params={"url": file_url(chain_dir)})
        assert r.status_code == 200, r.text
        assert r.json() == {"status": 'Model "chain_dir" registered.'}
        r = await c.post("/models", params={"url": file_url(yml), "model_name": "renamed"})
        assert r.status_code == 200, r.text
        assert r.json() == {"status": 'Model "renamed" registered.'}
        assert await predict(c, "chain_dir") == "HELLO! via upper"
        assert await predict(c, "renamed") == "HELLO?"
        names = [w["workflowName"] for w in (await c.get("/workflows")).json()["workflows"]]
        assert names == ["chain", "chain_dir", "flip", "renamed"]
        # Same local names and versions, so the same worker pools (§4.3).
        assert workers((await c.get("/models/chain_dir")).json(), "up") == workers(described, "up")


async def test_workflows_served_over_http(tmp_path):
    """JSON and YAML workflow files fetched from a local HTTP server."""
    site = Site(files={
        "/remote.json": json.dumps({
            "name": "remote", "models": {"up": one("wf_upper")},
            "workflow": {"out": ["up", "in"]},
        }).encode(),
        "/remote.yaml": (
            "name: in_the_file\n"
            "version: '2'\n"
            f"models:\n  suf: '{model_url('wf_suffix')}'\n"
            "workflow:\n  out: ['suf', 'in']\n"
        ).encode(),
        # A remote workflow may not make the server import code.
        "/functions.json": json.dumps({
            "name": "fn", "models": {"up": one("wf_upper")}, "functions": {"f": "funcs:join"},
            "workflow": {"out": ["f", ["up", "in"]]},
        }).encode(),
    })
    with ServerThread(site):
        async with running_server(tmp_path) as server:
            c = server.client
            r = await c.post("/workflows", params={"url": f"{site.base}/f/remote.json"})
            assert r.status_code == 200, r.text
            assert r.json() == {"status": 'Workflow "remote" registered.'}
            assert await predict(c, "remote") == "HELLO"

            # POST /models: an http(s) *.json or any *.yaml URL is a workflow (§7.1).
            r = await c.post("/models", params={"url": f"{site.base}/f/remote.yaml",
                                                "model_name": "ry"})
            assert r.status_code == 200, r.text
            assert r.json() == {"status": 'Model "ry" registered.'}
            assert await predict(c, "ry") == "hello!"
            r = await c.post("/models", params={"url": f"{site.base}/f/remote.json"})
            assert r.status_code == 200, r.text
            assert r.json() == {"status": 'Model "remote_json" registered.'}
            assert (await c.get("/workflows")).json()["workflows"] == [
                {"workflowName": "remote"}, {"workflowName": "remote_json"},
                {"workflowName": "ry", "version": "2"}]

            r = await c.post("/workflows", params={"url": f"{site.base}/f/functions.json"})
            assert r.status_code == 400
            assert error_of(r)["message"].startswith("Could not load function f: ")
            r = await c.post("/workflows", params={"url": f"{site.base}/f/missing.json"})
            assert 400 <= r.status_code < 500, r.text
            assert "missing.json" in error_of(r)["message"]
            assert len((await c.get("/workflows")).json()["workflows"]) == 3
            assert site.hits["/f/remote.json"] == 2


async def test_ensemble_custom_function_templates_and_pagination(tmp_path):
    folder = tmp_path / "wf"
    (folder / "libs").mkdir(parents=True)
    (folder / "libs" / "funcs.py").write_text(
        "from djl.io import Output\n\n\n"
        "def join(*values):\n"
        "    out = Output()\n"
        "    out.add_property('content-type', 'text/plain')\n"
        "    out.add('|'.join(bytes(v.get_data_item()).decode() for v in values))\n"
        "    return out\n"
    )
    ensemble = write_json(folder / "ensemble.json", {
        "name": "ens",
        "models": {"a": one("wf_cls_a"), "b": one("wf_cls_b")},
        "workflow": {"out": ["ensemble", ["functionsApply", ["a", "b"], "in"]]},
    })
    custom = write_json(folder / "custom.json", {
        "name": "custom",
        "models": {"up": one("wf_upper"), "suf": one("wf_suffix", arguments={"suffix": "?"})},
        "functions": {"join": "funcs:join"},
        # `x` is used twice: evaluated once per request, its Output shared.
        "workflow": {"x": ["up", "in"], "out": ["id", ["join", "x", ["suf", "x"]]]},
    })
    not_classes = write_json(folder / "notclasses.json", {
        "name": "notclasses", "models": {"up": one("wf_upper")},  # custom's `up` pool
        "workflow": {"out": ["ensemble", ["functionsApply", ["up"], "in"]]},
    })
    expected = [{"className": "cat", "probability": 0.5},
                {"className": "dog", "probability": 0.375},
                {"className": "bird", "probability": 0.125}]
    async with running_server(tmp_path) as server:
        c = server.client
        await post_workflow(c, file_url(ensemble))
        r = await c.post("/predictions/ens", content=b"img", headers=TEXT)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/json"
        assert r.json() == expected

        await post_workflow(c, file_url(custom))
        assert await predict(c, "custom") == "HELLO|HELLO? via upper"
        # An ensemble of something that is not a classification fails the request clearly.
        await post_workflow(c, file_url(not_classes))
        r = await c.post("/predictions/notclasses", content=b"img", headers=TEXT)
        assert r.status_code == 400
        assert error_of(r)["message"].startswith("The ensemble item 0 is not JSON")
        assert (await c.delete("/workflows/notclasses")).status_code == 200
        assert await predict(c, "custom") == "HELLO|HELLO? via upper"  # still has its `up`

        # Built-in templates: every single-valued query parameter is a replacement.
        r = await c.post("/workflows", params={
            "template": "ensemble", "name": "tens",
            "urls": f"{model_url('wf_cls_a')},{model_url('wf_cls_b')}"})
        assert r.status_code == 200, r.text
        assert r.json() == {"status": 'Workflow "tens" registered.'}
        r = await c.post("/predictions/tens", content=b"img", headers=TEXT)
        assert r.json() == expected
        r = await c.post("/workflows", params={
            "template": "chain", "name": "tchain", "version": "3",
            "urls": f"{model_url('wf_upper')},{model_url('wf_suffix')}"})
        assert r.status_code == 200, r.text
        assert await predict(c, "tchain") == "HELLO! via upper"
        rows = (await c.get("/models")).json()["models"]
        assert [(m["modelName"], m.get("version")) for m in rows] == [
            ("custom:up", None), ("custom:suf", None), ("ens:a", None), ("ens:b", None),
            ("tchain:tchain_m1", "3"), ("tchain:tchain_m2", "3"),
            ("tens:tens_m1", None), ("tens:tens_m2", None)]

        # GET /workflows pages over endpoints; its nextPageToken is always present (§2.5).
        page = (await c.get("/workflows", params={"limit": 3})).json()
        assert page == {"nextPageToken": "3", "workflows": [
            {"workflowName": "custom"}, {"workflowName": "ens"},
            {"workflowName": "tchain", "version": "3"}]}
        page = (await c.get("/workflows", params={"limit": 3, "next_page_token": 3})).json()
        assert page == {"nextPageToken": "4", "workflows": [{"workflowName": "tens"}]}
        page = (await c.get("/workflows", params={"limit": 3, "next_page_token": 4})).json()
        assert page == {"nextPageToken": "4", "workflows": []}
        page = (await c.get("/workflows", params={"limit": 0})).json()
        assert page == {"nextPageToken": "0", "workflows": []}
        # GET /models pages over endpoints too, so one endpoint may give several rows.
        page = (await c.get("/models", params={"limit": 1})).json()
        assert page["nextPageToken"] == "1"
        assert [m["modelName"] for m in page["models"]] == ["custom:up", "custom:suf"]

        # Another version of the chain, its models in the other order: its own pools.
        r = await c.post("/workflows", params={
            "template": "chain", "name": "tchain", "version": "4",
            "urls": f"{model_url('wf_suffix')},{model_url('wf_upper')}"})
        assert r.status_code == 200, r.text
        assert await predict(c, "tchain", version="4") == "HELLO!"
        assert await predict(c, "tchain", version="3") == "HELLO! via upper"


async def test_shared_pool_scale_and_release(tmp_path):
    """Two workflows using the same local model name (and version) share one worker pool;
    scaling either scales it; it lives until the last of them is unregistered."""
    model = private_copy(tmp_path, "wf_upper")
    shared = {"modelUrl": file_url(model), "minWorkers": 1, "maxWorkers": 1}
    wfa = write_json(tmp_path / "a.json", {
        "name": "wfa", "models": {"shared": shared}, "workflow": {"out": ["shared", "in"]}})
    wfb = write_json(tmp_path / "b.json", {
        "name": "wfb", "models": {"shared": shared, "suf": one("wf_suffix")},
        "workflow": {"out": ["suf", ["shared", "in"]]}})
    # Same local name, another model version: another pool (§4.3: id *and* version).
    wfc = write_json(tmp_path / "c.json", {
        "name": "wfc", "models": {"shared": {**shared, "version": "2"}},
        "workflow": {"out": ["shared", "in"]}})
    async with running_server(tmp_path) as server:
        c = server.client
        await post_workflow(c, file_url(wfa))
        await post_workflow(c, file_url(wfb))
        ids = workers((await c.get("/workflows/wfa")).json(), "shared")
        assert len(ids) == 1
        assert workers((await c.get("/models/wfb")).json(), "shared") == ids
        [pid] = runtime_pids(model)
        await post_workflow(c, file_url(wfc))
        other = workers((await c.get("/workflows/wfc")).json(), "shared")
        assert len(other) == 1 and other != ids
        assert len(runtime_pids(model)) == 2
        assert (await c.delete("/workflows/wfc")).status_code == 200
        with trio.fail_after(20):
            while runtime_pids(model) != {pid}:
                await trio.sleep(0.05)
        assert await predict(c, "wfa") == "HELLO"
        assert await predict(c, "wfb") == "HELLO! via upper"

        # Scaling a workflow scales each of its models, the shared one included.
        r = await c.put("/workflows/wfb", params={"min_worker": 2, "max_worker": 2})
        assert r.status_code == 200, r.text
        line = ('Workflow "wfb" worker scaled. New Worker configuration '
                "min workers:2 max workers:2")
        assert r.json() == {"status": f"{line}\n{line}"}
        [described] = (await c.get("/workflows/wfa")).json()
        [group] = described["models"][0]["workerGroups"]
        assert (group["minWorkers"], group["maxWorkers"]) == (2, 2)
        ids = workers([described], "shared")
        assert len(ids) == 2
        pids = runtime_pids(model)
        assert len(pids) == 2 and pid in pids

        r = await c.delete("/workflows/wfa")
        assert r.status_code == 200
        assert r.json() == {"status": 'Model or workflow "wfa" unregistered'}
        assert (await c.get("/workflows/wfa")).status_code == 404
        assert (await c.post("/predictions/wfa", content=b"x")).status_code == 404
        # The other workflow still serves, on the same workers.
        assert await predict(c, "wfb") == "HELLO! via upper"
        assert workers((await c.get("/workflows/wfb")).json(), "shared") == ids
        assert runtime_pids(model) == pids
        assert (await c.get("/ping")).json() == {
            "wfb:shared": {"status": "Healthy"}, "wfb:suf": {"status": "Healthy"}}

        r = await c.delete("/workflows/wfb")
        assert r.status_code == 200
        await wait_until_gone(model)
        assert (await c.get("/workflows")).json() == {"nextPageToken": "0", "workflows": []}
        assert (await c.get("/ping")).json() == {}


async def test_versions_round_robin(tmp_path):
    v1 = write_json(tmp_path / "v1.json", {
        "name": "rr", "version": "1", "models": {"up": one("wf_upper")},
        "workflow": {"out": ["up", "in"]}})
    v2 = write_json(tmp_path / "v2.json", {
        "name": "rr", "version": "2", "models": {"suf": one("wf_suffix")},
        "workflow": {"out": ["suf", "in"]}})
    async with running_server(tmp_path) as server:
        c = server.client
        await post_workflow(c, file_url(v1))
        await post_workflow(c, file_url(v2))
        r = await c.post("/workflows", params={"url": file_url(v2)})
        assert r.status_code == 409
        assert error_of(r)["message"] == "Workflow rr:2 is already registered."

        answers = [await predict(c, "rr") for _ in range(4)]
        assert answers in (["HELLO", "hello!"] * 2, ["hello!", "HELLO"] * 2), answers
        assert await predict(c, "rr", version="2") == "hello!"
        assert await predict(c, "rr", version="1") == "HELLO"

        assert (await c.get("/workflows")).json() == {"nextPageToken": "1", "workflows": [
            {"workflowName": "rr", "version": "1"}, {"workflowName": "rr", "version": "2"}]}
        rows = (await c.get("/models")).json()["models"]
        assert [(m["modelName"], m["version"]) for m in rows] == [("rr:up", "1"), ("rr:suf", "2")]
        assert set((await c.get("/ping")).json()) == {"rr:up", "rr:suf"}
        described = (await c.get("/workflows/rr")).json()
        assert [(w["version"], w["models"][0]["modelName"]) for w in described] == [
            ("1", "up"), ("2", "suf")]

        # Scaling without a version scales every model of every version (one line each);
        # an omitted bound is echoed as -1 and left alone.
        r = await c.put("/models/rr", params={"max_worker": 1})
        assert r.status_code == 200, r.text
        line = 'Workflow "rr" worker scaled. New Worker configuration min workers:-1 max workers:1'
        assert r.json() == {"status": f"{line}\n{line}"}
        r = await c.put("/workflows/rr/3", params={"max_worker": 1})
        assert r.status_code == 404
        assert error_of(r)["message"] == "Model or workflow not found: rr"

        r = await c.delete("/workflows/rr/1")
        assert r.status_code == 200
        assert [w["version"] for w in (await c.get("/workflows/rr")).json()] == ["2"]
        assert [await predict(c, "rr") for _ in range(2)] == ["hello!", "hello!"]
        r = await c.delete("/models/rr")  # /models/{n} and /workflows/{n} are the same
        assert r.status_code == 200
        assert (await c.get("/workflows/rr")).status_code == 404


async def test_async_registration_and_failed_sync_rollback(tmp_path):
    later = write_json(tmp_path / "later.json", {
        "name": "later", "models": {"up": one("wf_upper"), "suf": one("wf_suffix")},
        "workflow": {"out": ["suf", ["up", "in"]]}})
    good = private_copy(tmp_path, "wf_upper")
    broken = write_json(tmp_path / "broken.json", {
        "name": "broken",
        # `ok` loads first, then `bad` fails: rolling back must stop ok's worker too.
        "models": {"ok": {"modelUrl": file_url(good), "minWorkers": 1, "maxWorkers": 1},
                   "bad": model_url("failinit")},
        "workflow": {"out": ["bad", ["ok", "in"]]}})
    # Shares `up` with `later`: rolling it back must only drop its reference to that pool.
    sharing = write_json(tmp_path / "sharing.json", {
        "name": "sharing", "models": {"up": one("wf_upper"), "bad": model_url("failinit")},
        "workflow": {"out": ["bad", ["up", "in"]]}})
    missing = write_json(tmp_path / "missing.json", {
        "name": "missing", "models": {"m": file_url(tmp_path / "no-such-model") + "/"},
        "workflow": {"out": ["m", "in"]}})
    async with running_server(tmp_path) as server:
        c = server.client
        r = await c.post("/workflows", params={"url": file_url(later), "synchronous": "false"})
        assert r.status_code == 202
        assert r.json() == {"status": 'Workflow "later" registration scheduled.'}
        seen: set[str] = set()
        with trio.fail_after(30):
            while True:
                statuses = {m["status"] for m in (await c.get("/models")).json()["models"]}
                seen |= statuses
                if statuses == {"READY"}:
                    break
                await trio.sleep(0.02)
        assert seen <= {"PENDING", "READY"}
        assert await predict(c, "later") == "HELLO! via upper"
        ids = workers((await c.get("/workflows/later")).json(), "up")

        r = await c.post("/workflows", params={"url": file_url(broken)})
        assert r.status_code == 500
        assert "weights are missing" in error_of(r)["message"]
        await wait_until_gone(good)
        r = await c.post("/workflows", params={"url": file_url(sharing)})
        assert r.status_code == 500
        assert await predict(c, "later") == "HELLO! via upper"
        assert workers((await c.get("/workflows/later")).json(), "up") == ids
        r = await c.post("/workflows", params={"url": file_url(missing)})
        assert r.status_code == 404
        assert "no-such-model" in error_of(r)["message"]
        # Both rolled back: nothing of them is listed, described or pinged.
        assert (await c.get("/workflows")).json() == {
            "nextPageToken": "1", "workflows": [{"workflowName": "later"}]}
        assert (await c.get("/workflows/broken")).status_code == 404
        r = await c.get("/ping")
        assert r.status_code == 200 and set(r.json()) == {"later:up", "later:suf"}
        # ... and the names are free again.
        r = await c.post("/workflows", params={"url": file_url(broken)})
        assert r.status_code == 500


async def test_errors_are_clear_4xx(tmp_path):
    def workflow(name: str, graph: dict[str, Any], **extra: Any) -> str:
        data = {"name": name, "models": {"m": one("wf_upper")}, "workflow": graph, **extra}
        return file_url(write_json(tmp_path / f"{name}.json", data))

    nameless = write_json(tmp_path / "nameless.json", {
        "models": {"m": one("wf_upper")}, "workflow": {"out": ["m", "in"]}})
    text_file = tmp_path / "workflow.txt"
    text_file.write_text("{}")
    (tmp_path / "bad.json").write_text('{"name": "bad", ')
    (tmp_path / "libs").mkdir()
    cases = [
        ({"url": workflow("cyc", {"out": ["m", "a"], "a": ["m", "b"], "b": ["m", "a"]})},
         400, "Your workflow contains a cycle with target: a"),
        ({"url": workflow("unknown", {"out": ["nope", "in"]})},
         400, "Could not find find model or function: nope"),
        ({"url": workflow("undefined", {"out": ["m", "x"]})},
         400, "Expected to find variable but it is not defined: x"),
        ({"url": workflow("noout", {"y": ["m", "in"]})},
         400, "Expected to find variable but it is not defined: out"),
        ({"url": workflow("twoargs", {"out": ["m", "in", "in"]})},
         400, "The model or worker type m should have one arg, but has 2"),
        ({"url": workflow("applyunknown", {"out": ["ensemble", ["functionsApply",
                                                                ["m", "ghost"], "in"]]})},
         400, "Could not find find model or function: ghost"),
        ({"url": workflow("nofunc", {"out": ["f", "in"]}, functions={"f": "absent:f"})},
         400, "Could not load function f: no module named 'absent' in libs/"),
        ({"url": file_url(text_file)}, 400, "Unexpected file type: txt"),
        ({"url": file_url(nameless)}, 400, None),
        ({"url": file_url(tmp_path / "bad.json")}, 400, None),
        ({"url": file_url(tmp_path / "absent.json")}, 404, None),
        ({}, 400, "Either parameter url or template is required."),
        ({"template": "nope"}, 400, "The workflow template nope could not be found"),
        ({"template": "chain", "name": "x"}, 400,
         "The workflow template chain requires the parameter(s): urls"),
    ]
    async with running_server(tmp_path) as server:
        c = server.client
        for params, status, message in cases:
            r = await c.post("/workflows", params=params)
            assert r.status_code == status, (params, r.text)
            body = error_of(r)
            if message is not None:
                assert body["message"] == message, params
            else:
                assert body["message"], params
        r = await c.post("/workflows", params={"url": file_url(nameless)})
        assert "name" in r.json()["message"]
        r = await c.post("/workflows", params={"url": file_url(tmp_path / "bad.json")})
        assert "not valid JSON" in r.json()["message"]
        # The same graph errors through POST /models.
        r = await c.post("/models", params={"url": workflow("cyc2", {"out": ["m", "out"]})})
        assert r.status_code == 400
        assert r.json()["message"] == "Your workflow contains a cycle with target: out"
        r = await c.post("/models", params={"url": file_url(text_file)})
        assert r.status_code != 200  # a .txt file is a model URL, and not a loadable one
        # Nothing was registered, nothing runs.
        assert (await c.get("/workflows")).json() == {"nextPageToken": "0", "workflows": []}


async def test_workflows_loaded_at_startup(tmp_path):
    """`load_models` entries and model-store folders that are workflows (§4.5, §7.1)."""
    start_dir = tmp_path / "start"
    write_json(start_dir / "workflow.json", {
        "name": "startwf", "models": {"up": one("wf_upper"), "suf": one("wf_suffix")},
        "workflow": {"out": ["suf", ["up", "in"]]}})
    yml = tmp_path / "other.yaml"
    yml.write_text(f"name: inside\nmodels:\n  up: '{model_url('wf_upper')}'\n"
                   "workflow:\n  out: ['up', 'in']\n")
    entries = f"{file_url(start_dir)}, named={file_url(yml)}"
    async with running_server(tmp_path, load_models=entries) as server:
        c = server.client
        # Unnamed: the file's name; named: the endpoint prefix wins.
        assert (await c.get("/workflows")).json()["workflows"] == [
            {"workflowName": "named"}, {"workflowName": "startwf"}]
        assert await predict(c, "startwf") == "HELLO! via upper"
        assert await predict(c, "named") == "HELLO"
        assert (await c.get("/ping")).json() == {
            key: {"status": "Healthy"} for key in ("named:up", "startwf:up", "startwf:suf")}

    store = tmp_path / "store"
    write_json(store / "store_wf" / "workflow.json", {
        "name": "inside", "models": {"up": one("wf_upper")}, "workflow": {"out": ["up", "in"]}})
    async with running_server(tmp_path, model_store=str(store), load_models="ALL") as server:
        c = server.client
        # A store folder maps to `<folder name>=file:<folder>/` (§4.5): the folder names it.
        assert (await c.get("/workflows")).json()["workflows"] == [{"workflowName": "store_wf"}]
        assert await predict(c, "store_wf") == "HELLO"


async def test_unregister_while_loading_leaves_no_worker(tmp_path):
    """DELETE of a workflow whose models are still loading (synchronous=false): when the
    load finishes, its worker must not outlive the workflow."""
    model = private_copy(tmp_path, "wf_gated")
    gate = tmp_path / "gate"
    pending = write_json(tmp_path / "pending.json", {
        "name": "pending",
        "models": {"g": {"modelUrl": file_url(model), "minWorkers": 1, "maxWorkers": 1,
                         "arguments": {"gate": str(gate)}}},
        "workflow": {"out": ["g", "in"]}})
    async with running_server(tmp_path) as server:
        c = server.client
        r = await c.post("/workflows", params={"url": file_url(pending), "synchronous": "false"})
        assert r.status_code == 202
        with trio.fail_after(20):  # the worker process is up, its init call waiting
            while not runtime_pids(model):
                await trio.sleep(0.02)
        assert (await c.get("/models")).json()["models"][0]["status"] == "PENDING"
        r = await c.delete("/workflows/pending")
        assert r.status_code == 200
        assert (await c.get("/workflows")).json()["workflows"] == []
        gate.touch()
        await wait_until_gone(model)
        # The name is free, and a new registration loads afresh.
        r = await c.post("/workflows", params={"url": file_url(pending)})
        assert r.status_code == 200, r.text
        assert await predict(c, "pending") == "HELLO"


async def test_concurrent_loads_of_a_shared_model_keep_one_pool(tmp_path):
    """Two workflows registered at once (synchronous=false) that share a model still
    loading: when both loads end, one pool serves both and the spare worker is gone."""
    model = private_copy(tmp_path, "wf_gated")
    gate = tmp_path / "gate"
    shared = {"modelUrl": file_url(model), "minWorkers": 1, "maxWorkers": 1,
              "arguments": {"gate": str(gate)}}
    urls = [file_url(write_json(tmp_path / f"{name}.json", {
        "name": name, "models": {"g": shared}, "workflow": {"out": ["g", "in"]}}))
        for name in ("one", "two")]
    async with running_server(tmp_path) as server:
        c = server.client
        for url in urls:
            r = await c.post("/workflows", params={"url": url, "synchronous": "false"})
            assert r.status_code == 202
        with trio.fail_after(20):  # both loads are in flight, each with its own worker
            while len(runtime_pids(model)) < 2:
                await trio.sleep(0.02)
        gate.touch()
        with trio.fail_after(20):
            while {m["status"] for m in (await c.get("/models")).json()["models"]} != {"READY"}:
                await trio.sleep(0.02)
            while len(runtime_pids(model)) != 1:
                await trio.sleep(0.05)
        ids = workers((await c.get("/workflows/one")).json(), "g")
        assert len(ids) == 1 and workers((await c.get("/workflows/two")).json(), "g") == ids
        assert [await predict(c, name) for name in ("one", "two")] == ["HELLO", "HELLO"]
        assert (await c.delete("/workflows/one")).status_code == 200
        assert await predict(c, "two") == "HELLO"
        assert (await c.delete("/workflows/two")).status_code == 200
        await wait_until_gone(model)


async def test_a_shared_archive_model_is_deleted_with_the_last_workflow(tmp_path):
    """Two workflows share a model loaded from an archive; whichever workflow goes last, the
    extracted cache directory goes with it (the pool entry owns the source)."""
    archive = tmp_path / "echo.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in ("model.py", "serving.properties"):
            zf.write(EXAMPLES / "echo" / name, name)
    flows = [
        write_json(tmp_path / f"{name}.json", {
            "name": name, "models": {"m": file_url(archive)}, "workflow": {"out": ["m", "in"]}})
        for name in ("wfa", "wfb")
    ]
    repo = tmp_path / "cache" / "cache" / "repo"
    async with running_server(tmp_path) as server:
        c = server.client
        for flow in flows:
            await post_workflow(c, file_url(flow))
        [extracted] = os.listdir(repo)  # one extraction, one pool, shared
        assert await predict(c, "wfa") == "hello" and await predict(c, "wfb") == "hello"
        # The workflow that loaded the model goes first: the other one still uses it.
        assert (await c.delete("/workflows/wfa")).status_code == 200
        assert (repo / extracted).is_dir()
        assert await predict(c, "wfb", "still here") == "still here"
        assert (await c.delete("/workflows/wfb")).status_code == 200
        assert not (repo / extracted).exists()
        assert os.listdir(repo) == []
        await wait_until_gone(repo)


async def test_a_streamed_output_refused_as_input_frees_its_worker(tmp_path):
    """A model's streamed output cannot feed the next model (400); the stream is closed at
    once, so that model's only worker is free for the next request instead of blocked on
    a stream nobody reads until chunked_read_timeout."""
    flow = write_json(tmp_path / "streamchain.json", {
        "name": "streamchain",
        "models": {"bs": one("behave"), "e": one("echo")},
        "workflow": {"out": ["e", ["bs", "in"]]},
    })
    async with running_server(tmp_path, chunked_read_timeout="60") as server:
        c = server.client
        await post_workflow(c, file_url(flow))
        r = await c.post("/predictions/streamchain",
                         params={"action": "stream", "n": "500", "size": "10"})
        assert r.status_code == 400
        assert r.json()["message"] == (
            "The model or function e cannot take a streamed output as its input")
        start = trio.current_time()
        with trio.fail_after(15):
            assert await predict(c, "streamchain", "next") == "next"
        print(f"next request answered in {trio.current_time() - start:.2f}s")
