"""LoRA adapters: tokens/s at 32 streams with the base model only, one adapter, and four
adapters mixed in the same rolling batch; and how long registering an adapter takes on the
loaded model while those streams run (every request must still be answered).

The model is the example LM (examples/tinylm), served with option.enable_lora=true; the
adapters are PEFT folders built here (rank 8 on q/k/v/o, ``init_lora_weights=False``). The
three modes run in the same server, one after another, in rotating order for ``--rounds``
rounds, each for ``--duration`` seconds (short windows, many rounds: a shared machine's
load drifts, and each round's ratios compare modes measured seconds apart); each stream
loops on LMI requests of ``--max-new-tokens`` greedy tokens (the model's EOS is switched
off, so every request generates that many) and counts what the answers' details report.

    .venv/bin/python bench/lora.py            # ~2 min
    .venv/bin/python bench/lora.py --quick    # ~30 s: short runs, one round
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


async def load(url: str, streams: int, adapters: list[str], duration_s: float,
               max_new_tokens: int, statuses: list[int]) -> dict[str, Any]:
    tokens = 0
    deadline = trio.current_time() + duration_s

    async def client(i: int) -> None:
        nonlocal tokens
        adapter = adapters[i % len(adapters)]
        async with httpx.AsyncClient(base_url=url, timeout=300) as c:
            n = i
            while trio.current_time() < deadline:
                body = {"inputs": PROMPTS[n % len(PROMPTS)], "adapters": adapter,
                        "parameters": {"max_new_tokens": max_new_tokens, "details": True}}
                n += streams
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


async def register_under_load(url: str, src: Path, streams: int, duration_s: float,
                              max_new_tokens: int) -> dict[str, Any]:
    """Register (and then unregister) an adapter while ``streams`` mixed streams run."""
    statuses: list[int] = []
    timing: dict[str, Any] = {}

    async def register_late() -> None:
        await trio.sleep(duration_s / 3)
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
        result = await load(url, streams, ADAPTERS, duration_s, max_new_tokens, statuses)
    timing.update(requests=len(statuses), failed=sum(s != 200 for s in statuses),
                  tokens_per_s=result["tokens_per_s"])
    return timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    duration, rounds, tokens = args.duration, args.rounds, args.max_new_tokens
    if args.quick:
        duration, rounds, tokens = 3.0, 1, 16
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
        trio.run(load, server.base_url, 4, ADAPTERS, 2.0, 8, warm)
        rows: list[dict[str, Any]] = []
        names = list(MODES)
        for round_ in range(rounds):
            for mode in names[round_ % len(names):] + names[:round_ % len(names)]:
                statuses: list[int] = []
                result = trio.run(load, server.base_url, args.streams, MODES[mode], duration,
                                  tokens, statuses)
                result.update(mode=mode, round=round_, streams=args.streams,
                              requests=len(statuses),
                              failed=sum(s != 200 for s in statuses))
                rows.append(result)
                print(json.dumps(result), flush=True)
        registration = trio.run(register_under_load, server.base_url, folders["late"],
                                args.streams, max(duration, 3.0), tokens)
        print(json.dumps(registration), flush=True)
        procs.stop(server)
    means = {mode: statistics.fmean(r["tokens_per_s"] for r in rows if r["mode"] == mode)
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
                  per_round("4 adapters mixed"))}
    print(table(["mode", "streams", "tok/s (mean of rounds)"],
                [[mode, args.streams, value] for mode, value in means.items()]))
    print(table(["register s", "unregister s", "requests during it", "failed"],
                [[registration["register_s"], registration["unregister_s"],
                  registration["requests"], registration["failed"]]]))
    print(json.dumps(ratios, indent=2))
    path = write_results("lora.json", {
        "machine": machine_info(), "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(), "rows": rows, "tokens_per_s": means,
        "ratios": ratios, "registration_under_load": registration,
        "settings": {"duration_s": duration, "rounds": rounds, "max_new_tokens": tokens,
                     "streams": args.streams, "adapter_rank": 8,
                     "targets": "q_proj,k_proj,v_proj,o_proj"}})
    print(f"wrote {path}")


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"[{time.perf_counter() - started:.0f}s]")
