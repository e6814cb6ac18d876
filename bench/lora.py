"""LoRA adapters: tokens/s at 32 streams with the base model only, one adapter, and four
adapters mixed in the same rolling batch; and how long registering an adapter takes on the
loaded model while those streams run (every request must still be answered).

The model is the example LM (examples/tinylm), served with option.enable_lora=true; the
adapters are PEFT folders built here (rank 8 on q/k/v/o, ``init_lora_weights=False``). The
three modes run in the same server, one after another, in rotating order for ``--rounds``
rounds; in each, every stream sends ``--requests`` LMI requests of ``--max-new-tokens``
greedy tokens back to back (the model's EOS is switched off, so every request generates
that many). Reported per mode: tokens/s, and tokens per CPU-second of the server and its
worker, which a shared machine's load (how much CPU the run gets) disturbs far less; the
ratios to the base model compare modes of the same run.

    .venv/bin/python bench/lora.py            # ~3 min
    .venv/bin/python bench/lora.py --quick    # ~40 s: one short round
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
import httpx  # noqa: E402
from _common import (  # noqa: E402
    Processes,
    machine_info,
    register,
    start_djl,
    table,
    wait_ready,
    write_results,
)
from llm import PROMPTS, TINY  # noqa: E402

ADAPTERS = ["a1", "a2", "a3", "a4"]
MODES = {"base": [""], "1 adapter": ["a1"], "4 adapters mixed": ADAPTERS}


def build_adapters(model: Path, target: Path) -> dict[str, Path]:
    import peft
    import torch
    from transformers import AutoModelForCausalLM

    folders = {}
    for seed, name in enumerate(ADAPTERS + ["late"], 1):
        torch.manual_seed(seed)
        base = AutoModelForCausalLM.from_pretrained(model)
        config = peft.LoraConfig(r=8, lora_alpha=16, init_lora_weights=False,
                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
        peft.get_peft_model(base, config).save_pretrained(target / name)
        folders[name] = target / name
    return folders


async def load(url: str, streams: int, adapters: list[str], requests: int,
               max_new_tokens: int, statuses: list[int]) -> dict[str, Any]:
    """``streams`` clients, each sending ``requests`` requests back to back: tokens/s over
    the whole run (its wall time covers whole requests, so no window cuts one)."""
    tokens = 0

    async def client(i: int) -> None:
        nonlocal tokens
        adapter = adapters[i % len(adapters)]
        async with httpx.AsyncClient(base_url=url, timeout=300) as c:
            for n in range(i, i + requests * streams, streams):
                body = {"inputs": PROMPTS[n % len(PROMPTS)], "adapters": adapter,
                        "parameters": {"max_new_tokens": max_new_tokens, "details": True}}
                r = await c.post("/predictions/tiny", json=body)
                statuses.append(r.status_code)
                if r.status_code == 200:
                    tokens += r.json()["details"]["generated_tokens"]

    began = trio.current_time()
    async with trio.open_nursery() as nursery:
        for i in range(streams):
            nursery.start_soon(client, i)
    wall = trio.current_time() - began
    return {"tokens": tokens, "wall_s": wall, "tokens_per_s": tokens / wall}


async def register_under_load(url: str, src: Path, streams: int, requests: int,
                              max_new_tokens: int) -> dict[str, Any]:
    """Register (and then unregister) an adapter while ``streams`` mixed streams run."""
    statuses: list[int] = []
    timing: dict[str, Any] = {}

    async def register_late() -> None:
        with trio.move_on_after(120):
            while not statuses:  # once the first answers are out, the rest still decoding
                await trio.sleep(0.01)
        async with httpx.AsyncClient(base_url=url, timeout=60) as c:
            began = time.perf_counter()
            r = await c.post("/models/tiny/adapters", params={"name": "late", "src": str(src)})
            timing["register_s"] = time.perf_counter() - began
            timing["register_status"] = r.status_code
            began = time.perf_counter()
            r = await c.delete("/models/tiny/adapters/late")
            timing["unregister_s"] = time.perf_counter() - began
            timing["unregister_status"] = r.status_code

    async with trio.open_nursery() as nursery:
        nursery.start_soon(register_late)
        result = await load(url, streams, ADAPTERS, requests, max_new_tokens, statuses)
    timing.update(requests=len(statuses), failed=sum(s != 200 for s in statuses),
                  tokens_per_s=result["tokens_per_s"])
    return timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--requests", type=int, default=2,
                        help="requests per stream and round, back to back")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    requests, rounds, tokens = args.requests, args.rounds, args.max_new_tokens
    if args.quick:
        requests, rounds, tokens = 1, 1, 16
    load_before = os.getloadavg()
    with Processes() as procs:
        model = procs.tmp / "tiny"
        shutil.copytree(TINY, model)
        (model / "serving.properties").write_text("option.enable_lora=true\n")
        # No end-of-sequence token: every request generates max_new_tokens, so the modes do
        # the same work (the random model's EOS comes at a different step per adapter).
        config = json.loads((model / "generation_config.json").read_text())
        (model / "generation_config.json").write_text(json.dumps({**config,
                                                                  "eos_token_id": []}))
        folders = build_adapters(TINY, procs.tmp / "adapters")
        server = start_djl(procs, name="djl-lora")
        wait_ready(server, "/ping", 120)
        register(server, model, "tiny")
        for name in ADAPTERS:
            r = httpx.post(f"{server.base_url}/models/tiny/adapters",
                           params={"name": name, "src": str(folders[name])}, timeout=60)
            r.raise_for_status()
        warm: list[int] = []
        trio.run(load, server.base_url, 4, ADAPTERS, 2, 8, warm)
        rows: list[dict[str, Any]] = []
        names = list(MODES)
        for round_ in range(rounds):
            for mode in names[round_ % len(names):] + names[:round_ % len(names)]:
                statuses: list[int] = []
                front0, workers0 = server.cpu()
                result = trio.run(load, server.base_url, args.streams, MODES[mode], requests,
                                  tokens, statuses)
                front1, workers1 = server.cpu()
                cpu_s = (front1 - front0) + (workers1 - workers0)
                result.update(mode=mode, round=round_, streams=args.streams,
                              requests=len(statuses),
                              failed=sum(s != 200 for s in statuses),
                              worker_cpu_us_per_token=(workers1 - workers0)
                              / max(1, result["tokens"]) * 1e6,
                              tokens_per_cpu_s=result["tokens"] / max(cpu_s, 1e-9))
                rows.append(result)
                print(json.dumps(result), flush=True)
        registration = trio.run(register_under_load, server.base_url, folders["late"],
                                args.streams, max(requests, 2), tokens)
        print(json.dumps(registration), flush=True)
        procs.stop(server)
    means = {mode: statistics.fmean(r["tokens_per_s"] for r in rows if r["mode"] == mode)
             for mode in MODES}
    # Tokens per CPU-second of the server and its workers: what a mode costs, which a
    # shared machine's load (how much CPU the run gets) disturbs far less than tokens/s.
    per_cpu = {mode: sum(r["tokens"] for r in rows if r["mode"] == mode)
               / sum(r["tokens"] / r["tokens_per_cpu_s"] for r in rows if r["mode"] == mode)
               for mode in MODES}
    def per_round(mode: str) -> list[float]:
        return [next(r["tokens_per_s"] for r in rows if r["round"] == i and r["mode"] == mode)
                / next(r["tokens_per_s"] for r in rows if r["round"] == i
                       and r["mode"] == "base") for i in range(rounds)]

    ratios = {"one_adapter_over_base": means["1 adapter"] / means["base"],
              "four_mixed_over_base": means["4 adapters mixed"] / means["base"],
              "one_adapter_over_base_median_of_rounds": statistics.median(
                  per_round("1 adapter")),
              "four_mixed_over_base_median_of_rounds": statistics.median(
                  per_round("4 adapters mixed")),
              "one_adapter_over_base_per_cpu_s": per_cpu["1 adapter"] / per_cpu["base"],
              "four_mixed_over_base_per_cpu_s": per_cpu["4 adapters mixed"] / per_cpu["base"]}
    print(table(["mode", "streams", "tok/s (mean of rounds)", "tok per CPU-s"],
                [[mode, args.streams, value, per_cpu[mode]] for mode, value in means.items()]))
    print(table(["register s", "unregister s", "requests during it", "failed"],
                [[registration["register_s"], registration["unregister_s"],
                  registration["requests"], registration["failed"]]]))
    print(json.dumps(ratios, indent=2))
    path = write_results("lora.json", {
        "machine": machine_info(), "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(), "rows": rows, "tokens_per_s": means,
        "tokens_per_cpu_s": per_cpu, "ratios": ratios,
        "registration_under_load": registration,
        "settings": {"requests_per_stream": requests, "rounds": rounds,
                     "max_new_tokens": tokens,
                     "streams": args.streams, "adapter_rank": 8,
                     "targets": "q_proj,k_proj,v_proj,o_proj"}})
    print(f"wrote {path}")


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"[{time.perf_counter() - started:.0f}s]")
