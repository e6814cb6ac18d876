"""LoRA adapters through the real server: DJL's adapter API (spec §2.10) on the example
causal LM, PEFT adapters built here (``init_lora_weights=False``, so each one changes the
answers), every way a request selects one, mixed batches checked token for token against
PEFT's own greedy ``generate``, workers started later, and a model.py's own handlers.

One server for the module: the tiny LM (option.enable_lora=true, two LoRA slots, one
built-in adapter in its ``adapters/`` folder) as the single start-up model.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest
import trio
from serving import EXAMPLES, serving_process
from test_cli import runtime_pids

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

TINYLM = EXAMPLES / "tinylm" / "model"
PROMPTS = ["The model server", "Once upon a time there was", "Hello! How are you", "red"]
TOKENS = 12
#: name → (seed, rank, target modules); "builtin" ships in the model folder.
ADAPTERS = {
    "a1": (1, 4, ["q_proj", "v_proj"]),
    "a2": (2, 8, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                  "down_proj"]),
    "a3": (3, 2, ["down_proj"]),
    "builtin": (4, 4, ["v_proj", "up_proj"]),
}
PYMODEL = '''
import json
from djl_python import Output

adapters = {}


def handle(inputs):
    if inputs.is_empty():
        return None
    seen = inputs.get_as_string("adapter")
    return Output().add(json.dumps({"adapter": seen, "known": adapters}))


def option(inputs, key):
    return inputs.get_as_string(key) if inputs.contains_key(key) else None


def register_adapter(inputs):
    name = inputs.get_property("name")
    if name == "refused":
        return Output(424, "refused by model.py")
    adapters[name] = {"src": inputs.get_property("src"), "pin": option(inputs, "pin")}
    return Output(message=f"Adapter {name} registered")


def update_adapter(inputs):
    name = inputs.get_property("name")
    adapters[name]["pin"] = option(inputs, "pin")
    return Output(message=f"Adapter {name} updated")


def unregister_adapter(inputs):
    name = inputs.get_property("name")
    del adapters[name]
    return Output(message=f"Adapter {name} unregistered")
'''


def _build_adapter(folder: Path, seed: int, rank: int, targets: list[str]) -> None:
    import torch

    torch.manual_seed(seed)
    base = transformers.AutoModelForCausalLM.from_pretrained(TINYLM)
    config = peft.LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets,
                             init_lora_weights=False)
    peft.get_peft_model(base, config).save_pretrained(folder)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    if not (TINYLM / "config.json").is_file():
        pytest.skip("examples/tinylm/model is not built: run make install")
    import shutil

    home = tmp_path_factory.mktemp("lora")
    model = home / "tinylm"
    shutil.copytree(TINYLM, model)
    (model / "serving.properties").write_text("option.enable_lora=true\noption.max_loras=2\n")
    paths = {}
    for name, (seed, rank, targets) in ADAPTERS.items():
        folder = model / "adapters" / name if name == "builtin" else home / "adapters" / name
        _build_adapter(folder, seed, rank, targets)
        paths[name] = folder
    pymodel = home / "pyada"
    pymodel.mkdir()
    (pymodel / "model.py").write_text(PYMODEL)
    (pymodel / "serving.properties").write_text("engine=Python\noption.enable_lora=true\n")
    return home, model, paths


@pytest.fixture(scope="module")
def server(folders):
    home, model, _ = folders
    try:
        with serving_process(home, "tinylm", model) as url:
            yield url
    finally:
        for pid in runtime_pids(str(model)):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def reference(folders):
    """PEFT's greedy ``generate`` for (adapter, prompt) in this process ("" the base)."""
    import torch

    _, _, paths = folders
    tokenizer = transformers.AutoTokenizer.from_pretrained(TINYLM)
    models = {}
    cache: dict[tuple[str, str], list[int]] = {}

    def greedy(adapter: str, prompt: str) -> list[int]:
        key = (adapter, prompt)
        if key not in cache:
            if adapter not in models:
                base = transformers.AutoModelForCausalLM.from_pretrained(TINYLM)
                models[adapter] = (peft.PeftModel.from_pretrained(base, paths[adapter])
                                   if adapter else base).eval()
            ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
            with torch.inference_mode():
                out = models[adapter].generate(**ids, max_new_tokens=TOKENS, do_sample=False)
            cache[key] = out[0, ids["input_ids"].shape[1]:].tolist()
        return cache[key]

    return greedy


@pytest.fixture(scope="module")
def registered(server, folders):
    """a1 and a2 registered through the API (a3 is left to the tests that register)."""
    _, _, paths = folders
    for name in ("a1", "a2"):
        r = httpx.post(f"{server}/models/tinylm/adapters",
                       params={"name": name, "src": str(paths[name])}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json() == {"status": f"Adapter {name} registered"}
    return paths


def client(server: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server, timeout=60)


def token_ids(answer: dict) -> list[int]:
    return [t["id"] for t in answer["details"]["tokens"]]


async def generate(c: httpx.AsyncClient, prompt: str, *, path: str = "/invocations",
                   params: dict | None = None, headers: dict | None = None,
                   **body) -> list[int]:
    r = await c.post(path, params=params, headers=headers, json={
        "inputs": prompt, "parameters": {"max_new_tokens": TOKENS, "details": True}, **body})
    assert r.status_code == 200, r.text
    return token_ids(r.json())


# -- selecting an adapter ------------------------------------------------------------------
async def test_built_in_adapter_is_registered_at_load(server, reference, folders):
    _, model, _ = folders
    async with client(server) as c:
        r = await c.get("/adapters")
        assert r.json() == {"adapters": [{
            "name": "builtin", "src": str((model / "adapters" / "builtin").resolve()),
            "preload": True, "pin": False}]}
        assert await generate(c, PROMPTS[0], adapters="builtin") == reference(
            "builtin", PROMPTS[0])


async def test_every_way_of_selecting_an_adapter(server, registered, reference):
    prompt = PROMPTS[1]
    want = {name: reference(name, prompt) for name in ("", "a1", "a2")}
    assert len({tuple(v) for v in want.values()}) == 3  # the adapters change the answer
    async with client(server) as c:
        assert await generate(c, prompt) == want[""]
        assert await generate(c, prompt, adapters="") == want[""]
        assert await generate(c, prompt, adapters="a1") == want["a1"]
        assert await generate(c, prompt, params={"adapter": "a2"}) == want["a2"]
        assert await generate(c, prompt, path="/predictions/tinylm",
                              headers={"X-Amzn-SageMaker-Adapter-Identifier": "a1"}
                              ) == want["a1"]
        assert await generate(c, prompt, headers={
            "X-Amzn-SageMaker-Custom-Attributes": "adapter=a2"}) == want["a2"]
        # A list of inputs, one adapter each.
        r = await c.post("/invocations", json={
            "inputs": [prompt, prompt, prompt], "adapters": ["a2", "", "a1"],
            "parameters": {"max_new_tokens": TOKENS, "details": True}})
        assert r.status_code == 200, r.text
        assert [token_ids(a) for a in r.json()] == [want["a2"], want[""], want["a1"]]
        # OpenAI: "model" names the adapter, and the answer echoes it.
        r = await c.post("/v1/completions", json={
            "model": "a1", "prompt": prompt, "max_tokens": TOKENS, "temperature": 0,
            "logprobs": 1})
        assert r.status_code == 200, r.text
        assert r.json()["model"] == "a1"
        tokenizer = transformers.AutoTokenizer.from_pretrained(TINYLM)
        assert r.json()["choices"][0]["text"] == tokenizer.decode(want["a1"])
        models = (await c.get("/v1/models")).json()["data"]
        adapters = {m["id"]: m.get("parent") for m in models}
        assert adapters["a1"] == adapters["a2"] == adapters["builtin"] == "tinylm"
        assert adapters["tinylm"] is None


async def test_an_unknown_adapter_is_424_naming_it(server, registered):
    async with client(server) as c:
        for kwargs in ({"params": {"adapter": "nope"}},
                       {"headers": {"X-Amzn-SageMaker-Adapter-Identifier": "nope"}},
                       {"headers": {"X-Amzn-SageMaker-Custom-Attributes": "adapter=nope"}},
                       {"json": {"inputs": "x", "adapters": "nope"}},
                       {"json": {"inputs": ["x", "y"], "adapters": ["a1", "nope"]}}):
            kwargs.setdefault("json", {"inputs": "x"})
            r = await c.post("/invocations", **kwargs)
            assert r.status_code == 424, (kwargs, r.text)
            assert r.json()["message"] == "The adapter nope has not been registered"
        r = await c.post("/invocations", json={"inputs": ["x", "y"], "adapters": ["a1"]})
        assert r.status_code == 400
        assert "adapters" in r.json()["message"]
        r = await c.post("/v1/completions", json={"model": "nope", "prompt": "x"})
        assert r.status_code == 404


async def test_mixed_concurrent_requests_each_get_their_adapter(server, registered,
                                                                reference, folders):
    """Base and four adapters (more than the two slots) at once: each answer is PEFT's."""
    _, model, paths = folders
    workers = runtime_pids(str(model))
    async with client(server) as c:
        r = await c.post("/adapters", params={"name": "a3", "src": str(paths["a3"])})
        assert r.status_code == 200, r.text
        jobs = [(a, p) for p in PROMPTS for a in ("", "a1", "a2", "a3", "builtin")]
        got: dict[tuple[str, str], list[int]] = {}

        async def one(adapter: str, prompt: str) -> None:
            got[adapter, prompt] = await generate(c, prompt, adapters=adapter)

        async with trio.open_nursery() as nursery:
            for adapter, prompt in jobs:
                nursery.start_soon(one, adapter, prompt)
        for key in jobs:
            assert got[key] == reference(*key), key
        r = await c.get("/server/metrics", params={"name[]": "AdapterRequests"})
        counts = {line.split('Adapter="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
                  for line in r.text.splitlines() if line.startswith("AdapterRequests_total")}
        assert counts["a3"] == len(PROMPTS)
        r = await c.delete("/adapters/a3")
        assert r.json() == {"status": "Adapter a3 unregistered"}
        assert await generate(c, PROMPTS[0], adapters="a1") == reference("a1", PROMPTS[0])
    assert runtime_pids(str(model)) == workers  # no worker died on the way


# -- the management API ----------------------------------------------------------------------
async def test_register_describe_list_update_unregister(server, folders, reference):
    _, model, paths = folders
    src = str(paths["a3"])
    workers = runtime_pids(str(model))
    async with client(server) as c:
        r = await c.post("/models/tinylm/adapters", params={"name": "life", "src": src},
                         headers={"X-Amzn-SageMaker-Adapter-Alias": "nick"})
        assert r.status_code == 200, r.text
        assert r.json() == {"status": "Adapter life registered"}
        r = await c.post("/models/tinylm/adapters", params={"name": "life", "src": src})
        assert r.status_code == 409
        assert r.json()["message"] == "The adapter life has already been registered"
        described = {"name": "life", "src": src, "preload": True, "pin": False}
        assert (await c.get("/models/tinylm/adapters/life")).json() == described
        assert (await c.get("/adapters/life")).json() == described
        # The alias header selects it too.
        assert await generate(c, PROMPTS[2], headers={
            "X-Amzn-SageMaker-Adapter-Alias": "nick"}) == reference("a3", PROMPTS[2])
        names = []
        token = None
        while True:
            params = {"limit": 1, **({"next_page_token": token} if token else {})}
            page = (await c.get("/adapters", params=params)).json()
            names += [a["name"] for a in page["adapters"]]
            token = page.get("nextPageToken")
            if token is None:
                break
        assert "life" in names and "builtin" in names and len(names) == len(set(names))
        # Update: src and pin change; a failed update leaves it as it was.
        r = await c.post("/adapters/life/UPDATE", params={"src": str(paths["a1"]),
                                                          "pin": "true"})
        assert r.json() == {"status": "Adapter life updated"}
        updated = {**described, "src": str(paths["a1"]), "pin": True}
        assert (await c.get("/adapters/life")).json() == updated
        assert await generate(c, PROMPTS[2], adapters="life") == reference("a1", PROMPTS[2])
        r = await c.post("/adapters/life/update", params={"src": str(paths["a1"]) + "-gone"})
        assert r.status_code == 400
        assert "does not exist" in r.json()["message"]
        assert (await c.get("/adapters/life")).json() == updated
        assert await generate(c, PROMPTS[2], adapters="life") == reference("a1", PROMPTS[2])
        r = await c.delete("/adapters/life")
        assert r.json() == {"status": "Adapter life unregistered"}
        r = await c.post("/invocations", json={"inputs": "x", "adapters": "life"})
        assert r.status_code == 424
        r = await c.get("/server/metrics", params={"name[]": "LoadAdapter"})
        assert 'LoadAdapter_count{Model="tinylm",Version=""}' in r.text
    assert runtime_pids(str(model)) == workers  # no worker died on the way


async def test_refusals(server, folders, tmp_path):
    _, _, paths = folders
    src = str(paths["a1"])
    async with client(server) as c:
        async def refused(method: str, path: str, code: int, message: str, **params) -> None:
            r = await c.request(method, path, params=params)
            assert r.status_code == code, (path, r.text)
            assert r.json()["message"] == message, path

        await refused("POST", "/adapters", 400, "The parameter name is required", src=src)
        await refused("POST", "/adapters", 400, "The parameter name is required", name="",
                      src=src)
        await refused("POST", "/adapters", 400, "The parameter src is required", name="x")
        await refused("POST", "/adapters", 409, "URL adapters are not currently supported",
                      name="x", src="https://example.com/a1")
        await refused("POST", "/models/nothere/adapters", 404, "The model nothere was not found",
                      name="x", src=src)
        await refused("GET", "/adapters/nothere", 404, "The adapter nothere was not found")
        await refused("DELETE", "/adapters/nothere", 404, "The adapter nothere was not found")
        await refused("POST", "/adapters/nothere/update", 404,
                      "The adapter nothere was not found")
        r = await c.put("/adapters")
        assert r.status_code == 405
        r = await c.get("/adapters/builtin/update")
        assert r.status_code == 405
        # A folder that is no adapter: the worker says why, nothing is registered.
        await refused("POST", "/adapters", 400, f"No adapter_config.json in {tmp_path}",
                      name="empty", src=str(tmp_path))
        assert (await c.get("/adapters/empty")).status_code == 404
        # A model without option.enable_lora=true.
        r = await c.post("/models", params={"url": f"file:{EXAMPLES / 'echo'}/",
                                            "model_name": "plain"})
        assert r.status_code == 200, r.text
        await refused("GET", "/models/plain/adapters", 400, "LoRA is not enabled.")
        await refused("POST", "/models/plain/adapters", 400, "LoRA is not enabled.",
                      name="x", src=src)
        # DJL's check runs for every model: an adapter it does not have is 424.
        r = await c.post("/predictions/plain", params={"adapter": "a1"}, content=b"x")
        assert r.status_code == 424
        await c.delete("/models/plain")


async def test_a_model_py_receives_the_adapter_calls(server, folders):
    home, _, paths = folders
    async with client(server) as c:
        r = await c.post("/models", params={"url": f"file:{home / 'pyada'}/",
                                            "model_name": "pyada"})
        assert r.status_code == 200, r.text
        r = await c.post("/models/pyada/adapters", params={"name": "mine", "src": str(paths["a1"])})
        assert r.json() == {"status": "Adapter mine registered"}
        r = await c.post("/models/pyada/adapters", params={"name": "refused",
                                                           "src": str(paths["a1"])})
        assert r.status_code == 424
        assert r.json()["message"] == "refused by model.py"
        assert (await c.get("/models/pyada/adapters/refused")).status_code == 404
        r = await c.post("/models/pyada/adapters/mine/update", params={"pin": "true"})
        assert r.json() == {"status": "Adapter mine updated"}
        r = await c.post("/predictions/pyada", params={"adapter": "mine"}, content=b"x")
        assert r.json() == {"adapter": "mine",
                            "known": {"mine": {"src": str(paths["a1"]), "pin": "true"}}}
        r = await c.delete("/models/pyada/adapters/mine")
        assert r.json() == {"status": "Adapter mine unregistered"}
        await c.delete("/models/pyada")


async def test_workers_started_later_know_every_adapter(server, registered, reference,
                                                         folders):
    """Scale up to two workers, then kill the first: the second (and the first's
    replacement) answer with the adapters registered before they started."""
    _, model, paths = folders
    prompt = PROMPTS[3]
    async with client(server) as c:
        before = set(runtime_pids(str(model)))
        r = await c.put("/models/tinylm", params={"min_worker": 2, "max_worker": 2})
        assert r.status_code == 200, r.text
        for _ in range(600):
            workers = (await c.get("/models/tinylm")).json()[0]["models"][0][
                "workerGroups"][0]["workers"]
            if len(workers) == 2 and all(w["status"] == "READY" for w in workers):
                break
            await trio.sleep(0.1)
        else:
            pytest.fail("the second worker did not start")
        # A registration reaches both live workers before it answers.
        r = await c.post("/adapters", params={"name": "both", "src": str(paths["a3"])})
        assert r.status_code == 200, r.text
        got = {}

        async def one(i: int) -> None:
            got[i] = await generate(c, PROMPTS[i % len(PROMPTS)], adapters="both")

        async with trio.open_nursery() as nursery:
            for i in range(8):
                nursery.start_soon(one, i)
        assert all(got[i] == reference("a3", PROMPTS[i % len(PROMPTS)]) for i in range(8))
        ids = {w["id"] for w in workers}
        for pid in before:
            os.kill(pid, signal.SIGKILL)
        for _ in range(600):  # until the pool has seen the death
            workers = (await c.get("/models/tinylm")).json()[0]["models"][0][
                "workerGroups"][0]["workers"]
            if {w["id"] for w in workers if w["status"] == "READY"} != ids:
                break
            await trio.sleep(0.05)
        for adapter in ("a1", "a2", "builtin", ""):
            assert await generate(c, prompt, adapters=adapter) == reference(adapter, prompt)
        await c.delete("/adapters/both")
        await c.put("/models/tinylm", params={"min_worker": 1, "max_worker": 1})


async def test_registering_while_serving_drops_nothing(server, registered, folders,
                                                       reference):
    """Registering while requests decode: every request is answered, and right."""
    _, _, paths = folders
    got: list[list[int]] = []
    inflight = [0]
    done = trio.Event()
    overlap = []

    async with client(server) as c:
        async def load() -> None:
            while not done.is_set():
                inflight[0] += 1
                got.append(await generate(c, PROMPTS[0], adapters="a1"))
                inflight[0] -= 1

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(load)
            await trio.sleep(0.2)
            overlap.append(inflight[0])
            r = await c.post("/adapters", params={"name": "hot", "src": str(paths["a3"])})
            overlap.append(inflight[0])
            done.set()
            assert r.status_code == 200, r.text
        assert await generate(c, PROMPTS[0], adapters="hot") == reference("a3", PROMPTS[0])
        await c.delete("/adapters/hot")
    assert overlap == [4, 4]  # requests were decoding as it registered
    assert got == [reference("a1", PROMPTS[0])] * len(got)


async def test_unregister_waits_for_the_requests_using_it(server, folders):
    """DELETE while a stream decodes with the adapter: the DELETE answers only once the
    stream's sequence is over (tokens keep coming while it waits), and new requests for
    the adapter are refused meanwhile."""
    _, _, paths = folders
    async with client(server) as c:
        r = await c.post("/adapters", params={"name": "busy", "src": str(paths["a2"])})
        assert r.status_code == 200, r.text
        first = trio.Event()
        deleted = trio.Event()
        lines = {"total": 0, "while_deleting": 0}
        refused = []

        async def stream() -> None:
            body = {"inputs": PROMPTS[1], "adapters": "busy", "stream": True,
                    "parameters": {"max_new_tokens": 200}}
            async with c.stream("POST", "/invocations", json=body) as r:
                assert r.status_code == 200
                async for line in r.aiter_lines():
                    if line:
                        lines["total"] += 1
                        if first.is_set() and not deleted.is_set():
                            lines["while_deleting"] += 1
                        first.set()

        async def delete() -> None:
            r = await c.delete("/adapters/busy")
            assert r.json() == {"status": "Adapter busy unregistered"}
            deleted.set()

        async def unregister() -> None:
            await first.wait()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(delete)
                # Once the name is gone (and the DELETE still waits), a new request for it
                # is refused.
                while (await c.get("/adapters/busy")).status_code != 404:
                    await trio.sleep(0.005)
                r = await c.post("/invocations", json={"inputs": "x", "adapters": "busy"})
                refused.append((r.status_code, deleted.is_set()))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream)
            nursery.start_soon(unregister)
    assert lines["total"] >= 100  # a long stream (the model's EOS did not end it early)
    # An unregister that did not wait answers within a token or two.
    assert lines["while_deleting"] >= lines["total"] // 2, lines
    assert refused == [(424, False)]
