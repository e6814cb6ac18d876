"""Text generation through the real server: the example causal LM (examples/tinylm) served
by djl's text-generation engine, with continuous batching, streams, chat and the OpenAI
routes, checked against transformers' own ``generate``.

One server process for the module (``djl-serving`` with the tiny model as its start-up
model); each test talks to it over HTTP, the OpenAI tests with the official client.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import httpx
import pytest
import trio
from serving import EXAMPLES, serving_process
from test_cli import runtime_pids

openai = pytest.importorskip("openai")
transformers = pytest.importorskip("transformers")

TINYLM = EXAMPLES / "tinylm" / "model"
PROMPTS = ["The model server", "Once upon a time there was", "Hello! How are you",
           "The river runs past the old mill, under the stone bridge and into",
           "red", "Numbers count things: one, two", "Tell me a story", "What is"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not (TINYLM / "config.json").is_file():
        pytest.skip("examples/tinylm/model is not built: run make install")
    home = tmp_path_factory.mktemp("gen")
    with serving_process(home, "tinylm", TINYLM, {"SERVING_RETRY_THRESHOLD": "10"}) as url:
        yield url


def tinylm_copy(folder: Path, properties: str = "") -> Path:
    """The tiny LM in a folder of its own (its workers are found by its path), with
    ``properties`` as its serving.properties."""
    shutil.copytree(TINYLM, folder)
    (folder / "serving.properties").write_text(properties)
    return folder


@pytest.fixture(scope="module")
def one_place(server, tmp_path_factory):
    """A second copy of the model with one place per worker (max_rolling_batch_size=1)."""
    folder = tinylm_copy(tmp_path_factory.mktemp("one") / "tiny1",
                         "option.max_rolling_batch_size=1\n")
    r = httpx.post(f"{server}/models", params={"url": f"file:{folder}/",
                                               "model_name": "tiny1"}, timeout=120)
    assert r.status_code == 200, r.text
    return folder


@pytest.fixture(scope="module")
def reference():
    """transformers' own greedy ``generate`` on the same folder, in this process."""
    import torch

    tokenizer = transformers.AutoTokenizer.from_pretrained(TINYLM)
    model = transformers.AutoModelForCausalLM.from_pretrained(TINYLM).eval()

    def greedy(prompt: str, max_new_tokens: int) -> list[int]:
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
        return out[0, ids["input_ids"].shape[1]:].tolist()

    def scored(prompt: str, max_new_tokens: int) -> tuple[list[int], list[float]]:
        """Greedy ``generate``'s tokens and each one's log probability."""
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                 output_scores=True, return_dict_in_generate=True)
        tokens = out.sequences[0, ids["input_ids"].shape[1]:].tolist()
        return tokens, [float(torch.log_softmax(score[0].float(), dim=-1)[token])
                        for score, token in zip(out.scores, tokens, strict=True)]

    greedy.tokenizer = tokenizer
    greedy.scored = scored
    return greedy


def client(server: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server, timeout=60)


async def generate(c: httpx.AsyncClient, prompt: str, **parameters) -> dict:
    r = await c.post("/predictions/tinylm", json={"inputs": prompt, "parameters": parameters})
    assert r.status_code == 200, r.text
    return r.json()


async def stream_lines(c: httpx.AsyncClient, body: dict, path: str = "/predictions/tinylm",
                       stamps: list | None = None) -> list[dict]:
    lines = []
    async with c.stream("POST", path, json={**body, "stream": True}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/jsonlines")
        async for line in r.aiter_lines():
            if line:
                lines.append(json.loads(line))
                if stamps is not None:
                    stamps.append(trio.current_time())
    return lines


async def metric(c: httpx.AsyncClient, name: str, model: str = "tinylm") -> float:
    text = (await c.get("/server/metrics")).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and f'Model="{model}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


# -- the LMI schema ---------------------------------------------------------------------
async def test_greedy_decoding_equals_transformers_generate(server, reference):
    async with client(server) as c:
        answer = await generate(c, PROMPTS[0], max_new_tokens=24, details=True)
    details = answer["details"]
    assert [t["id"] for t in details["tokens"]] == reference(PROMPTS[0], 24)
    assert details["finish_reason"] == "length"
    assert details["generated_tokens"] == 24
    assert details["inputs"] == PROMPTS[0]
    assert answer["generated_text"] == "".join(t["text"] for t in details["tokens"])


async def test_concurrent_streams_overlap_and_each_equals_generate(server, reference):
    """Eight streams at once decode in one rolling batch (RollingBatchSize > 1), overlap
    in time, and each still equals generate alone, token for token."""
    results: dict[int, list[dict]] = {}
    stamps: dict[int, list[float]] = {}
    async with client(server) as c:
        before = await metric(c, "RollingBatchSize_bucket{le=\"1.0\"")
        steps_before = await metric(c, "RollingBatchSize_count")

        async def one(i: int) -> None:
            stamps[i] = []
            results[i] = await stream_lines(
                c, {"inputs": PROMPTS[i], "parameters": {"max_new_tokens": 16 + i}},
                stamps=stamps[i])

        async with trio.open_nursery() as nursery:
            for i in range(len(PROMPTS)):
                nursery.start_soon(one, i)
        single = await metric(c, "RollingBatchSize_bucket{le=\"1.0\"") - before
        steps = await metric(c, "RollingBatchSize_count") - steps_before
    for i, lines in results.items():
        assert [line["token"]["id"] for line in lines] == reference(PROMPTS[i], 16 + i)
        assert lines[-1]["generated_text"] == "".join(line["token"]["text"] for line in lines)
    first_ends = min(s[-1] for s in stamps.values())
    assert all(s[0] < first_ends for s in stamps.values()), "the streams did not overlap"
    assert steps - single > 0, "no decode step held more than one sequence"


async def test_rows_of_different_padding_decode_at_their_own_positions(server, reference):
    """Prompts of 2 to ~50 tokens decode in one batch, left-padded to a common width, the
    long ones joining a batch already running: each row's tokens and their log
    probabilities equal ``generate`` alone on its prompt. (The tiny model's random weights
    barely care where a token sits, so greedy tokens alone would hide wrong position ids;
    the log probabilities do not.)"""
    long_prompt = " ".join([PROMPTS[3]] * 3)
    first = {"inputs": "red", "parameters": {"max_new_tokens": 60}}
    joiners = {"long": (long_prompt, 40), "medium": (PROMPTS[1], 50)}
    details: dict[str, list[dict]] = {}
    async with client(server) as c:
        steps_before = await metric(c, "RollingBatchSize_count")
        single_before = await metric(c, "RollingBatchSize_bucket{le=\"1.0\"")

        async def join(key: str) -> None:
            prompt, n = joiners[key]
            answer = await generate(c, prompt, max_new_tokens=n, details=True)
            details[key] = answer["details"]["tokens"]

        async with trio.open_nursery() as nursery:
            async with c.stream("POST", "/predictions/tinylm",
                                json={**first, "stream": True}) as r:
                lines = []
                async for line in r.aiter_lines():
                    if line:
                        lines.append(json.loads(line)["token"])
                        if len(lines) == 2:  # the short one is decoding: the others join
                            for key in joiners:
                                nursery.start_soon(join, key)
        steps = await metric(c, "RollingBatchSize_count") - steps_before
        single = await metric(c, "RollingBatchSize_bucket{le=\"1.0\"") - single_before
    assert steps - single > 0, "no decode step held more than one sequence"
    got = {"short": lines, **details}
    prompts = {"short": ("red", 60), **joiners}
    for key, (prompt, n) in prompts.items():
        tokens, logprobs = reference.scored(prompt, n)
        assert [t["id"] for t in got[key]] == tokens, key
        worst = max(abs(t["log_prob"] - lp) for t, lp in zip(got[key], logprobs, strict=True))
        assert worst < 1e-4, (key, worst)


async def test_a_short_request_finishes_while_long_ones_run(server):
    """A short request that joins two long streams already decoding is answered while
    both are still streaming: it does not wait for the batch it joined."""
    async with client(server) as c:
        stamps: dict[int, list[float]] = {1: [], 2: []}
        short_done: list[float] = []

        async def long_one(i: int) -> None:
            await stream_lines(c, {"inputs": PROMPTS[i],
                                   "parameters": {"max_new_tokens": 300}}, stamps=stamps[i])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(long_one, 1)
            nursery.start_soon(long_one, 2)
            with trio.fail_after(60):  # the long ones have their first tokens out
                while not (stamps[1] and stamps[2]):
                    await trio.sleep(0.005)
            await generate(c, "red", max_new_tokens=3)
            short_done.append(trio.current_time())
    # The race happened: both long streams had started before the short one was sent, and
    # each went on streaming after it was answered.
    assert max(stamps[1][-1], stamps[2][-1]) > min(stamps[1][-1], stamps[2][-1]) > short_done[0]


async def test_list_inputs_stop_sequences_full_text_and_bad_input(server, reference):
    async with client(server) as c:
        r = await c.post("/invocations", params={"model_name": "tinylm"}, json={
            "inputs": [PROMPTS[0], PROMPTS[4]], "parameters": {"max_new_tokens": 5}})
        assert r.status_code == 200
        answers = r.json()
        assert isinstance(answers, list) and len(answers) == 2
        full = await generate(c, PROMPTS[0], max_new_tokens=5, return_full_text=True)
        assert full["generated_text"] == PROMPTS[0] + answers[0]["generated_text"]
        # A stop text taken from the greedy continuation ends it just before that text.
        text = answers[0]["generated_text"]
        stop = text[2:4]
        stopped = await generate(c, PROMPTS[0], max_new_tokens=5, stop_sequences=[stop],
                                 details=True)
        assert stopped["generated_text"] == text[:text.index(stop)]
        assert stopped["details"]["finish_reason"] == "stop_sequence"
        for body, word in [
            ({"inputs": 7}, "inputs"),
            ({"inputs": "x", "parameters": {"max_new_tokens": 0}}, "max_new_tokens"),
            ({"inputs": "x", "parameters": {"temperature": "hot", "do_sample": True}},
             "temperature"),
            ({"inputs": "x", "parameters": {"top_p": 2}}, "top_p"),
            ({"inputs": "word " * 600}, "context"),
            ({"messages": [{"role": "user"}]}, "content"),
            ({"messages": "hi"}, "messages"),
        ]:
            r = await c.post("/predictions/tinylm", json=body)
            assert r.status_code == 400, (body, r.text)
            assert word in r.json()["message"], r.text


async def test_bad_input_leaves_running_streams_alone(server, reference):
    async with client(server) as c:
        async with trio.open_nursery() as nursery:
            lines: list[dict] = []

            async def streaming() -> None:
                lines.extend(await stream_lines(c, {"inputs": PROMPTS[3],
                                                    "parameters": {"max_new_tokens": 40}}))

            nursery.start_soon(streaming)
            for _ in range(3):
                r = await c.post("/predictions/tinylm", json={"inputs": ["x", 3]})
                assert r.status_code == 400
    assert [line["token"]["id"] for line in lines] == reference(PROMPTS[3], 40)


async def test_a_seed_reproduces_a_sample_whatever_shares_the_batch(server):
    params = {"do_sample": True, "temperature": 1.5, "top_k": 50, "top_p": 0.95,
              "repetition_penalty": 1.2, "seed": 1234, "max_new_tokens": 20}
    async with client(server) as c:
        alone = await generate(c, PROMPTS[5], **params)
        together: dict[str, dict] = {}

        async def sampled(key: str, prompt: str, p: dict) -> None:
            together[key] = await generate(c, prompt, **p)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sampled, "same", PROMPTS[5], params)
            nursery.start_soon(sampled, "other", PROMPTS[6], {**params, "seed": 99})
            nursery.start_soon(sampled, "greedy", PROMPTS[7], {"max_new_tokens": 30})
        other_seed = await generate(c, PROMPTS[5], **{**params, "seed": 4321})
    assert together["same"]["generated_text"] == alone["generated_text"]
    assert other_seed["generated_text"] != alone["generated_text"]


async def test_sse_output_formatter_and_stream_details(server):
    """option.output_formatter is the model's; the default stream is JSON lines with the
    last line carrying generated_text and details."""
    async with client(server) as c:
        lines = await stream_lines(c, {"inputs": PROMPTS[0],
                                       "parameters": {"max_new_tokens": 6, "details": True}})
    assert len(lines) == 6
    assert all(set(line["token"]) == {"id", "text", "log_prob"} for line in lines)
    assert "generated_text" not in lines[0]
    assert lines[-1]["details"]["finish_reason"] == "length"
    assert lines[-1]["details"]["generated_tokens"] == 6


# -- chat and OpenAI --------------------------------------------------------------------
async def test_chat_messages_answer_a_chat_completion(server, reference):
    messages = [{"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Hello!"}]
    prompt = reference.tokenizer.apply_chat_template(messages, tokenize=False,
                                                     add_generation_prompt=True)
    async with client(server) as c:
        r = await c.post("/predictions/tinylm", json={
            "messages": messages, "parameters": {"max_new_tokens": 8}})
        assert r.status_code == 200, r.text
        chat = r.json()
        lines = await stream_lines(c, {"messages": messages,
                                       "parameters": {"max_new_tokens": 8}})
    assert chat["object"] == "chat.completion"
    message = chat["choices"][0]["message"]
    assert message["role"] == "assistant"
    expected = reference.tokenizer.decode(reference(prompt, 8), skip_special_tokens=True)
    assert message["content"] == expected
    assert chat["choices"][0]["finish_reason"] == "length"
    prompt_tokens = len(reference.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert chat["usage"] == {"prompt_tokens": prompt_tokens, "completion_tokens": 8,
                             "total_tokens": prompt_tokens + 8}
    assert all(line["object"] == "chat.completion.chunk" for line in lines)
    assert "".join(line["choices"][0]["delta"]["content"] for line in lines) == expected
    assert lines[-1]["usage"]["completion_tokens"] == 8


async def test_openai_client_completions_chat_and_streams(server, reference):
    def run() -> dict:
        api = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
        out: dict = {"models": [m.id for m in api.models.list()]}
        out["completion"] = api.completions.create(
            model="tinylm", prompt=PROMPTS[0], max_tokens=10, temperature=0)
        out["chat"] = api.chat.completions.create(
            model="tinylm", messages=[{"role": "user", "content": "Hello!"}], max_tokens=6,
            temperature=0)
        chunks = list(api.chat.completions.create(
            model="tinylm", messages=[{"role": "user", "content": "Hello!"}], max_tokens=6,
            temperature=0, stream=True, stream_options={"include_usage": True}))
        out["chunks"] = chunks
        out["completion_chunks"] = list(api.completions.create(
            model="tinylm", prompt=PROMPTS[0], max_tokens=10, temperature=0, stream=True))
        for key, call in [
            ("missing", lambda: api.completions.create(model="nope", prompt="x")),
            ("n", lambda: api.completions.create(model="tinylm", prompt="x", n=2)),
            ("max_tokens", lambda: api.chat.completions.create(
                model="tinylm", messages=[{"role": "user", "content": "x"}], max_tokens=-1)),
        ]:
            try:
                call()
            except openai.APIStatusError as exc:
                out[key] = exc
        return out

    out = await trio.to_thread.run_sync(run)
    assert "tinylm" in out["models"]
    expected = reference.tokenizer.decode(reference(PROMPTS[0], 10), skip_special_tokens=True)
    completion = out["completion"]
    assert completion.choices[0].text == expected
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 10
    assert out["chat"].choices[0].message.role == "assistant"
    assert out["chat"].usage.completion_tokens == 6
    chunks = out["chunks"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks[:-1])
    assert text == out["chat"].choices[0].message.content
    assert chunks[-2].choices[0].finish_reason == out["chat"].choices[0].finish_reason
    assert "".join(ch.choices[0].text for ch in out["completion_chunks"]) == expected
    assert out["missing"].status_code == 404
    assert out["missing"].body["message"] == "The model nope does not exist"
    assert out["missing"].body["code"] == "model_not_found"
    assert out["n"].status_code == 400 and '"n"' in out["n"].body["message"]
    assert out["max_tokens"].status_code == 400
    assert "max_tokens" in out["max_tokens"].body["message"]


# -- places, cancellation, failures -----------------------------------------------------
async def test_a_disconnect_frees_its_place_within_a_step(server, one_place):
    """With one place per worker, a second request can only run once the first one's
    client has left and its sequence stopped: it does, and the tokens counted show the
    first stopped long before its 400."""
    async with client(server) as c:
        async with c.stream("POST", "/predictions/tiny1", json={
                "inputs": PROMPTS[0], "stream": True,
                "parameters": {"max_new_tokens": 400}}) as stream:
            async for line in stream.aiter_lines():
                if line:
                    break  # the first token is out: hang up
        r = await c.post("/predictions/tiny1", json={
            "inputs": PROMPTS[1], "parameters": {"max_new_tokens": 5}})
        assert r.status_code == 200, r.text
        generated = await metric(c, "GeneratedTokens_total", "tiny1")
    assert 5 < generated < 100, generated


async def test_a_request_with_no_place_times_out_in_the_queue(server, tmp_path):
    """One place and predict_timeout=1: a request sent while a long stream holds the
    place waits in the queue, then gets DJL's 400 ``Time out in: 1`` while that stream
    goes on to its end untouched."""
    folder = tinylm_copy(tmp_path / "tiny1t", "option.max_rolling_batch_size=1\n"
                         "option.predict_timeout=1\n")
    config = json.loads((folder / "config.json").read_text())
    config["max_position_embeddings"] = 4096  # room for a stream that outlasts 1 s
    (folder / "config.json").write_text(json.dumps(config))
    async with client(server) as c:
        r = await c.post("/models", params={"url": f"file:{folder}/", "model_name": "tiny1t"})
        assert r.status_code == 200, r.text
        try:
            lines: list[dict] = []
            late: list[tuple[httpx.Response, int]] = []

            async def behind() -> None:
                answer = await c.post("/predictions/tiny1t", json={"inputs": "red"})
                late.append((answer, len(lines)))

            async with trio.open_nursery() as nursery:
                async with c.stream("POST", "/predictions/tiny1t", json={
                        "inputs": PROMPTS[2], "stream": True,  # greedy: no EOS for long
                        "parameters": {"max_new_tokens": 3000, "details": True}}) as stream:
                    async for line in stream.aiter_lines():
                        if line:
                            lines.append(json.loads(line))
                            if len(lines) == 1:
                                nursery.start_soon(behind)
        finally:
            await c.delete("/models/tiny1t")
    (answer, streamed), = late
    assert answer.status_code == 400, answer.text
    assert answer.json()["message"] == "Time out in: 1"
    assert answer.json()["code"] == 400 and answer.json()["type"] == "TranslateException"
    # The race happened: the refusal came while the stream was still going, and the
    # stream was not cut for it.
    assert 1 <= streamed < len(lines)
    assert lines[-1]["details"]["finish_reason"] in ("length", "eos_token")
    assert lines[-1]["details"]["generated_tokens"] == len(lines)


async def test_a_worker_dying_mid_stream_ends_it_with_an_error_line(server, one_place):
    """Runs after the disconnect test: it kills the one-place model's worker. The started
    stream ends with LMI's error line; the request queued behind it (no place) is served
    by the replacement."""
    (pid,) = runtime_pids(str(one_place))
    lines: list[dict] = []
    queued: list[httpx.Response] = []
    async with client(server) as c:
        async def behind() -> None:
            queued.append(await c.post("/predictions/tiny1", json={
                "inputs": "red", "parameters": {"max_new_tokens": 2}}))

        async with trio.open_nursery() as nursery:
            async with c.stream("POST", "/predictions/tiny1", json={
                    "inputs": PROMPTS[0], "stream": True,
                    "parameters": {"max_new_tokens": 400}}) as stream:
                async for line in stream.aiter_lines():
                    if line:
                        lines.append(json.loads(line))
                        if len(lines) == 1:
                            nursery.start_soon(behind)
                            await wait_queued(c, "tiny1")
                            os.kill(pid, signal.SIGKILL)
    assert lines[-1]["details"]["finish_reason"] == "error"
    assert lines[-1]["error"]
    assert len(lines) < 400
    assert queued[0].status_code == 200, queued[0].text


async def wait_queued(c: httpx.AsyncClient, model: str) -> None:
    with trio.fail_after(30):
        while (await c.get(f"/models/{model}")).json()[0]["models"][0][
                "requestInQueue"] == 0:
            await trio.sleep(0.02)


async def test_generation_metrics_are_exposed(server):
    async with client(server) as c:
        await generate(c, PROMPTS[0], max_new_tokens=3)
        text = (await c.get("/server/metrics")).text
    for family in ("TimeToFirstToken_bucket", "InterTokenLatency_bucket",
                   "GeneratedTokens_total", "PromptTokens_total", "RollingBatchSize_bucket"):
        assert any(line.startswith(family) and 'Model="tinylm"' in line
                   for line in text.splitlines()), family


# -- folders that are not loadable ------------------------------------------------------
@pytest.mark.parametrize(("files", "properties", "words"), [
    ({"config.json": '{"architectures": ["LlamaForCausalLM"]}'}, "", "no weights"),
    ({"config.json": "{not json"}, "", "config.json"),
    ({"config.json": '{"architectures": ["BertModel"]}'}, "", "causal-LM"),
    ({"config.json": '{"architectures": ["XForCausalLM"], "auto_map": {"A": "x.X"}}'}, "",
     "trust_remote_code"),
    (None, "option.rolling_batch=lmi-dist", "lmi-dist"),
    (None, "option.rolling_batch=vllm", "vllm"),
    (None, "option.dtype=int3", "int3"),
])
async def test_a_folder_that_cannot_load_answers_400_with_the_reason(
        server, tmp_path: Path, files, properties, words):
    if files is None:
        folder = tinylm_copy(tmp_path / "bad", properties)
    else:
        folder = tmp_path / "bad"
        folder.mkdir()
        for name, text in files.items():
            (folder / name).write_text(text)
    async with client(server) as c:
        r = await c.post("/models", params={"url": f"file:{folder}/", "model_name": "bad"})
        try:
            assert r.status_code == 400, r.text
            assert words in r.json()["message"], r.text
        finally:
            await c.delete("/models/bad")
