"""Text generation: djl's continuous batching against one stream at a time and static
batching with ``generate``, on the tiny example LM and a larger one built the same way.

For each model and each number of concurrent streams (1, 8, 32) the script runs that many
clients in a loop for ``--duration`` seconds; each sends a streamed LMI request
(``max_new_tokens`` tokens, greedy) and records when each token line arrives. Reported:
generated tokens/s (all streams), time to first token p50/p99, inter-token latency
p50/p99, and the CPU the server process and the worker process spent per generated token.

Baselines in the same run, in child processes (one torch thread count as the worker's):
``generate`` one prompt at a time (its per-token time is the floor for one stream's
inter-token latency) and static batching (``generate`` on 8 / 32 left-padded prompts at
once: tokens/s when every stream starts and ends together); and the two continuous-
batching schedulers side by side without a server (ours, djl/runtime/generation/
scheduler.py, against transformers' ``generate_batch`` manager, kept between calls) on 8
prompts of 16 tokens, the tiny model only: that manager's first call alone takes minutes
on a CPU.

    .venv/bin/python bench/llm.py            # ~4 min
    .venv/bin/python bench/llm.py --quick    # ~1 min: the tiny model only, short runs
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
import httpx  # noqa: E402
from _common import (  # noqa: E402
    PYTHON,
    REPO,
    Processes,
    machine_info,
    register,
    start_djl,
    table,
    wait_ready,
    write_results,
)

TINY = REPO / "examples" / "tinylm" / "model"
PROMPTS = ["The model server", "Once upon a time there was", "Hello! How are you",
           "The river runs past the old mill", "Numbers count things: one, two",
           "Tell me a story about the sea", "What is the capital of", "Write a poem"]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _load(url: str, model: str, streams: int, duration_s: float,
                max_new_tokens: int) -> dict[str, Any]:
    ttft: list[float] = []
    gaps: list[float] = []
    tokens = 0
    deadline = trio.current_time() + duration_s

    async def client(i: int) -> None:
        nonlocal tokens
        async with httpx.AsyncClient(base_url=url, timeout=300) as c:
            n = i
            while trio.current_time() < deadline:
                body = {"inputs": PROMPTS[n % len(PROMPTS)], "stream": True,
                        "parameters": {"max_new_tokens": max_new_tokens}}
                n += streams
                sent = last = trio.current_time()
                first = True
                async with c.stream("POST", f"/predictions/{model}", json=body) as r:
                    async for line in r.aiter_lines():
                        if not line:
                            continue
                        now = trio.current_time()
                        if first:
                            ttft.append(now - sent)
                            first = False
                        else:
                            gaps.append(now - last)
                        last = now
                        tokens += 1

    began = trio.current_time()
    async with trio.open_nursery() as nursery:
        for i in range(streams):
            nursery.start_soon(client, i)
    wall = trio.current_time() - began
    return {"tokens": tokens, "wall_s": wall, "tokens_per_s": tokens / wall,
            "ttft_p50_ms": pct(ttft, 0.5) * 1e3, "ttft_p99_ms": pct(ttft, 0.99) * 1e3,
            "itl_p50_ms": pct(gaps, 0.5) * 1e3, "itl_p99_ms": pct(gaps, 0.99) * 1e3}


def measure_djl(procs: Processes, model_dir: Path, name: str, streams: list[int],
                duration_s: float, max_new_tokens: int) -> list[dict[str, Any]]:
    server = start_djl(procs, name=f"djl-{name}")
    wait_ready(server, "/ping", 120)
    register(server, model_dir, name)
    trio.run(_load, server.base_url, name, 2, 2.0, 8)  # warm-up
    rows = []
    for n in streams:
        front0, workers0 = server.cpu()
        result = trio.run(_load, server.base_url, name, n, duration_s, max_new_tokens)
        front1, workers1 = server.cpu()
        tokens = max(1, result["tokens"])
        result.update(model=name, streams=n,
                      server_cpu_us_per_token=(front1 - front0) / tokens * 1e6,
                      worker_cpu_us_per_token=(workers1 - workers0) / tokens * 1e6)
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
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--streams", default="1,8,32")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the generate baselines (as djl's worker: one "
                             "unless option.num_threads)")
    args = parser.parse_args()
    streams = [int(s) for s in args.streams.split(",")]
    duration, tokens = args.duration, args.max_new_tokens
    if args.quick:
        duration, tokens = 5.0, 32
    models = [("tiny", TINY)]
    with Processes() as procs:
        if not args.quick:
            models.append(("l8h512", build_larger(procs.tmp / "l8h512", 8, 512)))
        djl_rows, generate_rows, scheduler_rows = [], [], []
        for name, folder in models:
            djl_rows += measure_djl(procs, folder, name, streams, duration, tokens)
            generate_rows += measure_generate(folder, name, [1, *[s for s in streams if s > 1]],
                                              tokens, args.threads)
            if name == "tiny":  # transformers' manager needs minutes per start on a CPU
                scheduler_rows += measure_schedulers(folder, name, 8, 16, args.threads)
    print(table(["model", "streams", "tok/s", "TTFT p50 ms", "TTFT p99 ms", "ITL p50 ms",
                 "ITL p99 ms", "server µs/tok", "worker µs/tok"],
                [[r["model"], r["streams"], r["tokens_per_s"], r["ttft_p50_ms"],
                  r["ttft_p99_ms"], r["itl_p50_ms"], r["itl_p99_ms"],
                  r["server_cpu_us_per_token"], r["worker_cpu_us_per_token"]]
                 for r in djl_rows]))
    print()
    print(table(["model", "generate batch", "tok/s", "ms per step"],
                [[r["model"], r["batch"], r["tokens_per_s"], r["per_token_ms"]]
                 for r in generate_rows]))
    print()
    print(table(["model", "scheduler", "prompts", "first call s", "tok/s", "equals generate"],
                [[r["model"], r["scheduler"], r["prompts"], r["first_call_s"],
                  r["tokens_per_s"], r["equals_generate"]] for r in scheduler_rows]))
    ratios = {}
    for name, _ in models:
        by_streams = {r["streams"]: r for r in djl_rows if r["model"] == name}
        bare = next(r for r in generate_rows if r["model"] == name and r["batch"] == 1)
        if 1 in by_streams and max(streams) in by_streams:
            top = by_streams[max(streams)]
            ratios[name] = {
                f"tokens_per_s_{max(streams)}_over_1": top["tokens_per_s"]
                / by_streams[1]["tokens_per_s"],
                "itl_p50_1_stream_over_bare_generate": by_streams[1]["itl_p50_ms"]
                / bare["per_token_ms"],
                "server_over_worker_cpu": statistics.fmean(
                    r["server_cpu_us_per_token"] / max(r["worker_cpu_us_per_token"], 1e-9)
                    for r in by_streams.values()),
            }
    print(json.dumps(ratios, indent=2))
    path = write_results("llm.json", {"machine": machine_info(), "djl": djl_rows,
                                      "generate": generate_rows, "schedulers": scheduler_rows,
                                      "ratios": ratios,
                                      "settings": {"duration_s": duration,
                                                   "max_new_tokens": tokens}})
    print(f"wrote {path}")


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"[{time.perf_counter() - started:.0f}s]")
