"""Where the server process spends its CPU under load, by layer (issue 10).

Starts one server (djl with the echo model, or a baseline of bench/bare_server.py),
drives ``POST /predictions/<model>`` with wrk at ``--concurrency`` and samples the
server process with py-spy (``--native``, so the cyclic GC shows) for ``--duration``
seconds. py-spy pauses the process per sample, so throughput during the profile is
lower than the bench's; the shares are what matter. Each sample counts for the layer
of its innermost Python frame ("self": h11, hypercorn, quart + quart-trio + werkzeug,
trio, trio's socket calls, djl's parts, the stdlib) and, in "owner", for the innermost
layer that is not trio or the stdlib (who asked for the work); "gc" whenever the
collector is on the stack. Prints the table and writes bench/results/profile_front.json
(and py-spy's collapsed stacks, profile_front.raw.txt).

py-spy is a bench requirement (``pip install py-spy``, bench/requirements.txt), needing
ptrace rights over the server (root, or kernel.yama.ptrace_scope 0).

    .venv/bin/python bench/profile_front.py                  # djl, echo, c64, 20 s
    .venv/bin/python bench/profile_front.py --main /work/main # main's djl, same settings
    .venv/bin/python bench/profile_front.py --server raw-trio
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    REPO,
    Client,
    LoadSpec,
    Processes,
    ensure_wrk,
    register,
    start_bare,
    start_djl,
    table,
    write_results,
)

ECHO_DIR = REPO / "examples" / "echo"

#: (layer, start of a frame's file as py-spy names it) in match order: first hit wins.
LAYERS = [
    ("h11", "(h11/"),
    ("hypercorn", "(hypercorn/"),
    ("quart+werkzeug", "(quart/"),
    ("quart+werkzeug", "(quart_trio/"),
    ("quart+werkzeug", "(werkzeug/"),
    ("trio sockets", "(trio/_socket.py"),
    ("trio sockets", "(trio/_highlevel_socket.py"),
    ("trio", "(trio/"),
    ("httptools", "(httptools/"),
    ("djl connection", "(djl/http/connection.py"),
    ("djl server", "(djl/http/h1.py"),
    ("djl server", "(djl/http/answer.py"),
    ("djl server", "(djl/http/asgi.py"),
    ("djl server", "(djl/http/server.py"),
    ("djl http", "(djl/http/"),
    ("djl app", "(djl/app.py"),
    ("djl wlm+pipe", "(djl/wlm/"),
    ("djl other", "(djl/"),
]
GC_MARKERS = ("gc_collect", "collect_generations", "gcmodule.c", "gc_collect_main")
#: Innermost native frames of a thread that waits (py-spy --native counts it as busy):
#: a worker thread parked on a lock, the loop in epoll_wait.
IDLE_MARKERS = ("PyThread_acquire_lock", "epoll_wait", "pthread_cond_wait", "sem_wait")
#: Layers that only do what their caller asked: "owner" charges them to that caller.
_SERVANTS = ("trio", "trio sockets", "stdlib+other")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=["djl", "bare", "raw-trio"], default="djl")
    parser.add_argument("--main", type=Path, help="profile this checkout's djl instead")
    parser.add_argument("--batch-size", type=int,
                        help="the echo model's (default: its serving.properties, 8)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--body", default="hello world")
    return parser.parse_args(argv)


def _layer(frame: str) -> str | None:
    if ".py:" not in frame and "(<frozen" not in frame:
        return None  # a native frame
    for layer, marker in LAYERS:
        if marker in frame:
            return layer
    return "stdlib+other"


def layers_of(stack: list[str]) -> tuple[str, str]:
    """(self, owner) of one sample; ``stack``: frames outermost first (py-spy raw).

    self: the layer of the innermost Python frame. owner: the innermost layer that is not
    trio or the stdlib, so trio's cancel scopes, tasks and socket calls are charged to
    whoever made them; trio's own loop only when nobody above asked (the run loop).
    """
    if any(marker in frame for frame in stack for marker in GC_MARKERS):
        return "gc", "gc"
    own = None
    owner = None
    for frame in reversed(stack):
        layer = _layer(frame)
        if layer is None:
            continue
        if own is None:
            own = layer
        if layer not in _SERVANTS:
            owner = layer
            break
        if "unrolled_run" in frame:  # reached the scheduler with no caller above
            owner = "trio"
            break
    return own or "native only", owner or own or "native only"


def breakdown(raw: str) -> tuple[dict[str, int], dict[str, int]]:
    own: collections.Counter[str] = collections.Counter()
    owner: collections.Counter[str] = collections.Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if any(m in frame for frame in frames[-4:] for m in IDLE_MARKERS):
            continue
        mine, whose = layers_of(frames)
        own[mine] += int(count)
        owner[whose] += int(count)
    return dict(own), dict(owner)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise SystemExit("py-spy is missing: pip install -r bench/requirements.txt")
    wrk = ensure_wrk(allow_install=True)
    if wrk is None:
        raise SystemExit("wrk is missing: sh bench/setup.sh wrk")
    body = args.body.encode()
    with Processes() as procs:
        if args.server == "djl":
            server = start_djl(procs, source=args.main or REPO)
            overrides = {} if args.batch_size is None else {"batch_size": args.batch_size}
            register(server, ECHO_DIR, "echo", **overrides)
            url = f"{server.base_url}/predictions/echo"
        else:
            server = start_bare(procs, body, app="quart" if args.server == "bare" else "raw",
                                name=args.server)
            url = f"{server.base_url}/predictions/x"
        client = Client(wrk, threads=1, tmp=procs.tmp)
        client.run(LoadSpec(url, body, "text/plain", args.concurrency, 2))  # warm-up
        out = procs.tmp / "spy.txt"
        spy_proc = subprocess.Popen(
            [spy, "record", "--pid", str(server.pid), "--duration", str(int(args.duration)),
             "--rate", str(args.rate), "--native", "--format", "raw",
             "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        result = client.run(LoadSpec(url, body, "text/plain", args.concurrency,
                                     args.duration))
        _, err = spy_proc.communicate(timeout=args.duration + 60)
        if not out.exists():
            raise SystemExit(f"py-spy wrote nothing: {err.decode(errors='replace')[-2000:]}")
        raw = out.read_text()
        (REPO / "bench" / "results" / "profile_front.raw.txt").write_text(raw)
        own, owner = breakdown(raw)
    total = max(sum(own.values()), 1)
    names = sorted(set(own) | set(owner), key=lambda k: -owner.get(k, 0))
    label = f"{args.server}{' (' + str(args.main) + ')' if args.main else ''}"
    print(f"\n{label}: c{args.concurrency}, {result['rps']:,.0f} req/s during the profile, "
          f"{total} samples")
    print(table(["layer", "self %", "owner %"],
                [[k, 100.0 * own.get(k, 0) / total, 100.0 * owner.get(k, 0) / total]
                 for k in names]))
    print("self: innermost Python frame; owner: trio and stdlib work charged to the layer "
          "that asked for it")
    summary: dict[str, Any] = {"server": label, "settings": vars(args) | {
        "main": str(args.main) if args.main else None}, "rps": result["rps"],
        "samples": total, "self": {k: v / total for k, v in own.items()},
        "owner": {k: v / total for k, v in owner.items()}}
    print(f"wrote {write_results('profile_front.json', summary)} and profile_front.raw.txt "
          "(py-spy's collapsed stacks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
