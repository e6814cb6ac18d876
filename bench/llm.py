"""Text generation: djl's continuous batching against ``transformers serve
--continuous-batching``, one stream at a time and static batching with ``generate``, on
the tiny example LM and a larger one built the same way (examples/tinylm/build.py
``--layers 8 --hidden 512``, into the run's temp folder).

For each model and each number of concurrent streams (1, 8, 32) the script runs that many
clients for ``--duration`` seconds; each sends streamed requests back to back
(``max_new_tokens`` tokens, greedy; djl's LMI route, transformers serve's OpenAI
/v1/completions) and records when each token arrives. The client is raw HTTP/1.1 over
trio sockets, one kept-alive connection per stream, so that it stays cheap next to what
it measures (its own CPU per token is reported). Reported: generated tokens/s (all
streams), time to first token p50/p99, inter-token latency p50/p99, and the CPU per
generated token of djl's server process and of its worker (transformers serve is one
process: its CPU per token is server and model together).

transformers serve runs from bench/.venv-hf, a venv of its own made on first use
(``transformers[serving]`` at the project's transformers version, torch through
constraints.txt so it stays the CPU pin); ``--no-hf-serve`` skips it. It and the
``generate`` baselines get ``--threads`` torch threads, as djl's worker gets one.

Baselines in the same run, in child processes: ``generate`` one prompt at a time (its
per-token time is the floor for one stream's inter-token latency) and static batching
(``generate`` on 8 / 32 left-padded prompts at once: tokens/s when every stream starts
and ends together); and the two continuous-batching schedulers side by side without a
server (ours, djl/runtime/generation/scheduler.py, against transformers'
``generate_batch`` manager, kept between calls) on 8 prompts of 16 tokens, the tiny model
only.

    .venv/bin/python bench/llm.py            # ~10 min
    .venv/bin/python bench/llm.py --quick    # the tiny model only, short runs
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    BENCH_DIR,
    PYTHON,
    REPO,
    Processes,
    free_port,
    machine_info,
    register,
    start_djl,
    table,
    wait_ready,
    write_results,
)

TINY = REPO / "examples" / "tinylm" / "model"
HF_VENV = BENCH_DIR / ".venv-hf"
PROMPTS = ["The model server", "Once upon a time there was", "Hello! How are you",
           "The river runs past the old mill", "Numbers count things: one, two",
           "Tell me a story about the sea", "What is the capital of", "Write a poem"]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass(frozen=True)
class Target:
    """Where the bench client sends its streamed requests and how it counts tokens."""

    address: tuple[str, int]
    path: str
    #: prompt, max_new_tokens → the JSON body.
    body: Callable[[str, int], dict[str, Any]]
    #: What each token's line or event holds once (LMI: a line's end; OpenAI SSE: an event
    #: whose text is not empty).
    marker: re.Pattern[bytes]
    #: The count the server reports in its last bytes (OpenAI usage), if any: it wins over
    #: the markers counted.
    usage: re.Pattern[bytes] | None = None


def lmi_target(address: tuple[str, int], model: str) -> Target:
    return Target(address, f"/predictions/{model}",
                  lambda prompt, n: {"inputs": prompt, "stream": True,
                                     "parameters": {"max_new_tokens": n}},
                  re.compile(rb"}\n"))


def openai_target(address: tuple[str, int], model: str) -> Target:
    return Target(address, "/v1/completions",
                  lambda prompt, n: {"model": model, "prompt": prompt, "max_tokens": n,
                                     "stream": True,
                                     "stream_options": {"include_usage": True}},
                  re.compile(rb'"text": ?"[^"]'),
                  re.compile(rb'"completion_tokens": ?(\d+)'))


async def _stream_once(stream: trio.SocketStream, target: Target, request: bytes,
                       ttft: list[float], gaps: list[float]) -> int:
    """One streamed request on a kept-alive connection, its tokens timed as they arrive
    (a read holding several counts gaps of 0 for the rest)."""
    sent = last = trio.current_time()
    await stream.send_all(request)
    seen = 0
    tail = b""
    marker = target.marker
    while True:
        data = await stream.receive_some(65536)
        if not data:
            raise ConnectionError("the server closed the connection mid-answer")
        now = trio.current_time()
        window = tail + data  # a marker may straddle two reads
        found = len(marker.findall(window)) - len(marker.findall(tail))
        if found > 0:
            if seen == 0:
                ttft.append(now - sent)
            else:
                gaps.append(now - last)
            gaps.extend([0.0] * (found - 1))
            seen += found
            last = now
        tail = window[-160:]
        if tail.endswith(b"\r\n0\r\n\r\n"):  # the chunked body's last chunk
            if target.usage is not None:
                counted = target.usage.findall(tail)
                if counted:
                    return int(counted[-1])
            return seen


async def _load(target: Target, streams: int, duration_s: float,
                max_new_tokens: int) -> dict[str, Any]:
    """``streams`` clients, each one kept-alive raw HTTP/1.1 connection sending streamed
    requests back to back until ``duration_s`` is over (cheap: no HTTP library, so the
    client's own CPU stays small next to what it measures; it is reported)."""
    ttft: list[float] = []
    gaps: list[float] = []
    tokens = 0
    deadline = trio.current_time() + duration_s

    async def client(i: int) -> None:
        nonlocal tokens
        stream = await trio.open_tcp_stream(*target.address)
        async with stream:
            n = i
            while trio.current_time() < deadline:
                body = json.dumps(target.body(PROMPTS[n % len(PROMPTS)],
                                              max_new_tokens)).encode()
                n += streams
                head = (f"POST {target.path} HTTP/1.1\r\nhost: bench\r\n"
                        f"content-type: application/json\r\n"
                        f"content-length: {len(body)}\r\n\r\n").encode()
                got = await _stream_once(stream, target, head + body, ttft, gaps)
                tokens += got  # not ``tokens += await``: that reads tokens before waiting

    cpu0 = time.process_time()
    began = trio.current_time()
    async with trio.open_nursery() as nursery:
        for i in range(streams):
            nursery.start_soon(client, i)
    wall = trio.current_time() - began
    cpu = time.process_time() - cpu0
    return {"tokens": tokens, "wall_s": wall, "tokens_per_s": tokens / wall,
            "ttft_p50_ms": pct(ttft, 0.5) * 1e3, "ttft_p99_ms": pct(ttft, 0.99) * 1e3,
            "itl_p50_ms": pct(gaps, 0.5) * 1e3, "itl_p99_ms": pct(gaps, 0.99) * 1e3,
            "client_cpu_us_per_token": cpu / max(1, tokens) * 1e6}


def _address(server: Any) -> tuple[str, int]:
    host, port = server.base_url.rsplit("/", 1)[-1].split(":")
    return host, int(port)


def measure_djl(procs: Processes, model_dir: Path, name: str, streams: list[int],
                duration_s: float, max_new_tokens: int) -> list[dict[str, Any]]:
    server = start_djl(procs, name=f"djl-{name}")
    wait_ready(server, "/ping", 120)
    register(server, model_dir, name)
    target = lmi_target(_address(server), name)
    trio.run(_load, target, 2, 2.0, 8)  # warm-up
    rows = []
    for n in streams:
        front0, workers0 = server.cpu()
        result = trio.run(_load, target, n, duration_s, max_new_tokens)
        front1, workers1 = server.cpu()
        tokens = max(1, result["tokens"])
        result.update(server="djl", model=name, streams=n,
                      server_cpu_us_per_token=(front1 - front0) / tokens * 1e6,
                      worker_cpu_us_per_token=(workers1 - workers0) / tokens * 1e6)
        rows.append(result)
        print(json.dumps(result), flush=True)
    procs.stop(server)
    return rows


def hf_serve_available() -> tuple[Path | None, str]:
    """bench/.venv-hf's python with ``transformers[serving]`` (created here on first use,
    torch through constraints.txt so it stays the CPU pin), or None and why not."""
    python = HF_VENV / "bin" / "python"
    if not python.is_file():
        made = subprocess.run([sys.executable, "-m", "venv", str(HF_VENV)],
                              capture_output=True, text=True)
        if made.returncode:
            return None, f"python -m venv failed: {made.stderr[-500:]}"
    check = [str(python), "-c", "import transformers.cli.serving.server, uvicorn, fastapi"]
    if subprocess.run(check, capture_output=True).returncode:
        spec = f"transformers[serving]=={_transformers_version()}"
        got = subprocess.run([str(python), "-m", "pip", "install", "-q", "-c",
                              str(REPO / "constraints.txt"), spec],
                             capture_output=True, text=True)
        if got.returncode:
            return None, f"pip install {spec} failed: {got.stderr[-800:]}"
    return python, ""


def _transformers_version() -> str:
    from importlib.metadata import version

    return version("transformers")


def measure_hf_serve(procs: Processes, python: Path, model_dir: Path, name: str,
                     streams: list[int], duration_s: float, max_new_tokens: int,
                     threads: int) -> list[dict[str, Any]]:
    """``transformers serve --continuous-batching`` on the same folder (one process: its
    CPU per token is server and model together), over its OpenAI /v1/completions stream."""
    port = free_port()
    server = procs.start(
        f"hf-{name}", [str(python), "-m", "transformers.cli.transformers", "serve",
                       str(model_dir), "--continuous-batching", "--device", "cpu",
                       "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        {"OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}, port=port,
        ping_path="/health", timeout_s=300)
    target = openai_target(_address(server), str(model_dir))
    trio.run(_load, target, 2, 4.0, 8)  # warm-up: the manager sizes its paged cache here
    rows = []
    for n in streams:
        cpu0 = sum(server.cpu())
        result = trio.run(_load, target, n, duration_s, max_new_tokens)
        cpu1 = sum(server.cpu())
        result.update(server="transformers serve --continuous-batching", model=name,
                      streams=n,
                      process_cpu_us_per_token=(cpu1 - cpu0) / max(1, result["tokens"]) * 1e6)
        rows.append(result)
        print(json.dumps(result), flush=True)
    procs.stop(server)
    return rows


def measure_generate(model_dir: Path, name: str, batches: list[int], max_new_tokens: int,
                     threads: int) -> list[dict[str, Any]]:
    """transformers' generate in a child process (its own torch threads, like a worker)."""
    code = f"""
import json, time, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
torch.set_num_threads({threads})
tok = AutoTokenizer.from_pretrained({str(model_dir)!r}); tok.padding_side = "left"
model = AutoModelForCausalLM.from_pretrained({str(model_dir)!r}).eval()
prompts = {PROMPTS!r}
out = []
for batch in {batches!r}:
    texts = [prompts[i % len(prompts)] for i in range(batch)]
    ids = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    kw = dict(max_new_tokens={max_new_tokens}, min_new_tokens={max_new_tokens},
              do_sample=False, pad_token_id=tok.pad_token_id)
    with torch.inference_mode():
        model.generate(**ids, **dict(kw, max_new_tokens=4, min_new_tokens=4))
        began = time.perf_counter()
        model.generate(**ids, **kw)
        wall = time.perf_counter() - began
    out.append({{"batch": batch, "tokens_per_s": batch * {max_new_tokens} / wall,
                 "per_token_ms": wall / {max_new_tokens} * 1e3}})
print(json.dumps(out))
"""
    done = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, check=True)
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    for row in rows:
        row["model"] = name
    return rows


def measure_schedulers(model_dir: Path, name: str, prompts: int, max_new_tokens: int,
                       threads: int) -> list[dict[str, Any]]:
    """Our scheduler (djl.runtime.generation.scheduler) against transformers' own
    continuous-batching manager (``generate_batch``: paged attention, its own thread), in
    a child process, on the same ``prompts`` greedy prompts: tokens/s, and whether the
    outputs equal ``generate``'s."""
    code = f"""
import json, time, torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
from djl.runtime.generation.params import SamplingParams
from djl.runtime.generation.scheduler import RollingBatch, Sequence
torch.set_num_threads({threads})
tok = AutoTokenizer.from_pretrained({str(model_dir)!r})
model = AutoModelForCausalLM.from_pretrained({str(model_dir)!r}).eval()
texts = {PROMPTS!r}
ids = [tok(texts[i % len(texts)], add_special_tokens=False)["input_ids"] for i in range({prompts})]
n = {max_new_tokens}
with torch.inference_mode():
    ref = [model.generate(torch.tensor([p]), max_new_tokens=n,
                          do_sample=False)[0, len(p):].tolist() for p in ids[:4]]
def ours():
    batch = RollingBatch(model, 32)
    seqs = [Sequence(p, SamplingParams(max_new_tokens=n)) for p in ids]
    for s in seqs:
        batch.add(s)
    while len(batch):
        batch.step()
        batch.remove([s for s in batch.running if len(s.ids) >= n])
    return [s.ids for s in seqs]
def theirs():
    config = GenerationConfig(max_new_tokens=n, do_sample=False,
                              eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    out = model.generate_batch(inputs=ids, generation_config=config, persistent_manager=True)
    return [out[k].generated_tokens for k in sorted(out, key=lambda k: int(k.split("_")[-1]))]
rows = []
for label, run in (("djl scheduler", ours), ("transformers generate_batch", theirs)):
    began = time.perf_counter()
    run()  # warm-up; transformers' manager sizes and allocates its paged cache here
    first = time.perf_counter() - began
    began = time.perf_counter()
    got = run()
    wall = time.perf_counter() - began
    rows.append({{"scheduler": label, "prompts": len(ids), "first_call_s": first,
                 "tokens_per_s": sum(map(len, got)) / wall,
                 "equals_generate": all(g[:len(r)] == r for g, r in zip(got, ref))}})
print(json.dumps(rows))
"""
    try:
        done = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True,
                              check=True, cwd=REPO)
    except subprocess.CalledProcessError as exc:
        print(f"scheduler comparison failed:\n{exc.stderr[-2000:]}", flush=True)
        return []
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    for row in rows:
        row["model"] = name
    return rows


def build_larger(target: Path, layers: int, hidden: int) -> Path:
    if not (target / "config.json").is_file():
        subprocess.run([PYTHON, str(REPO / "examples" / "tinylm" / "build.py"), "--out",
                        str(target), "--layers", str(layers), "--hidden", str(hidden)],
                       check=True, capture_output=True)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--streams", default="1,8,32")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the generate baselines and transformers serve "
                             "(as djl's worker: one unless option.num_threads)")
    parser.add_argument("--no-hf-serve", action="store_true",
                        help="skip transformers serve (its venv, bench/.venv-hf, is made on "
                             "first use)")
    parser.add_argument("--layers", type=int, default=8, help="the larger model's layers")
    parser.add_argument("--hidden", type=int, default=512, help="the larger model's width")
    args = parser.parse_args()
    streams = [int(s) for s in args.streams.split(",")]
    duration, tokens = args.duration, args.max_new_tokens
    if args.quick:
        duration, tokens = 5.0, 32
    load_before = uptime()
    models = [("tiny", TINY)]
    hf_python, hf_skipped = (None, "--no-hf-serve") if args.no_hf_serve else \
        hf_serve_available()
    if hf_python is None:
        print(f"transformers serve skipped: {hf_skipped}", flush=True)
    with Processes() as procs:
        if not args.quick:
            larger = f"l{args.layers}h{args.hidden}"
            models.append((larger, build_larger(procs.tmp / larger, args.layers, args.hidden)))
        djl_rows, hf_rows, generate_rows, scheduler_rows = [], [], [], []
        for name, folder in models:
            djl_rows += measure_djl(procs, folder, name, streams, duration, tokens)
            if hf_python is not None:
                hf_rows += measure_hf_serve(procs, hf_python, folder, name, streams, duration,
                                            tokens, args.threads)
            generate_rows += measure_generate(folder, name, [1, *[s for s in streams if s > 1]],
                                              tokens, args.threads)
            if name == "tiny":  # transformers' manager needs minutes per start on a CPU
                scheduler_rows += measure_schedulers(folder, name, 8, 16, args.threads)
    print(table(["server", "model", "streams", "tok/s", "TTFT p50 ms", "TTFT p99 ms",
                 "ITL p50 ms", "ITL p99 ms", "server µs/tok", "worker µs/tok",
                 "client µs/tok"],
                [[r["server"], r["model"], r["streams"], r["tokens_per_s"], r["ttft_p50_ms"],
                  r["ttft_p99_ms"], r["itl_p50_ms"], r["itl_p99_ms"],
                  r.get("server_cpu_us_per_token", r.get("process_cpu_us_per_token")),
                  r.get("worker_cpu_us_per_token", float("nan")),
                  r["client_cpu_us_per_token"]] for r in djl_rows + hf_rows]))
    print()
    print(table(["model", "generate batch", "tok/s", "ms per step"],
                [[r["model"], r["batch"], r["tokens_per_s"], r["per_token_ms"]]
                 for r in generate_rows]))
    print()
    print(table(["model", "scheduler", "prompts", "first call s", "tok/s", "equals generate"],
                [[r["model"], r["scheduler"], r["prompts"], r["first_call_s"],
                  r["tokens_per_s"], r["equals_generate"]] for r in scheduler_rows]))
    ratios = {name: _ratios(name, streams, djl_rows, hf_rows, generate_rows)
              for name, _ in models}
    print(json.dumps(ratios, indent=2))
    path = write_results("llm.json", {
        "machine": machine_info(), "load_before": load_before, "load_after": uptime(),
        "djl": djl_rows, "transformers_serve": hf_rows,
        "transformers_serve_skipped": hf_skipped, "generate": generate_rows,
        "schedulers": scheduler_rows, "ratios": ratios,
        "settings": {"duration_s": duration, "max_new_tokens": tokens,
                     "threads": args.threads, "greedy": True}})
    print(f"wrote {path}")


def _ratios(name: str, streams: list[int], djl_rows: list[dict[str, Any]],
            hf_rows: list[dict[str, Any]], generate_rows: list[dict[str, Any]]
            ) -> dict[str, float]:
    """The targets' same-run ratios for one model."""
    ours = {r["streams"]: r for r in djl_rows if r["model"] == name}
    theirs = {r["streams"]: r for r in hf_rows if r["model"] == name}
    static = {r["batch"]: r for r in generate_rows if r["model"] == name}
    top = max(streams)
    out: dict[str, float] = {
        "server_over_worker_cpu": statistics.fmean(
            r["server_cpu_us_per_token"] / max(r["worker_cpu_us_per_token"], 1e-9)
            for r in ours.values())}
    if 1 in ours and top in ours:
        out[f"tokens_per_s_{top}_over_1"] = ours[top]["tokens_per_s"] / ours[1]["tokens_per_s"]
    if 1 in ours and 1 in static:
        out["itl_p50_1_stream_over_bare_generate"] = (ours[1]["itl_p50_ms"]
                                                      / static[1]["per_token_ms"])
    if top in ours and top in theirs:
        out[f"tokens_per_s_{top}_over_transformers_serve"] = (
            ours[top]["tokens_per_s"] / theirs[top]["tokens_per_s"])
        out[f"ttft_p50_{top}_over_transformers_serve"] = (
            ours[top]["ttft_p50_ms"] / theirs[top]["ttft_p50_ms"])
    if top in ours and top in static:
        out[f"tokens_per_s_{top}_over_static_generate"] = (
            ours[top]["tokens_per_s"] / static[top]["tokens_per_s"])
    return out


def uptime() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return ""


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"[{time.perf_counter() - started:.0f}s]")
