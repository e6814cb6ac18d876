"""Start the real server (``run_server``, real worker processes) inside a test.

    async with running_server(tmp_path, batch_size="4") as server:
        r = await server.client.get("/ping")

The server binds 127.0.0.1 on a free port; ``overrides`` are config.properties keys.
Leaving the block shuts it down the way SIGTERM does and asserts that no worker process
it started is left, so every test also proves that shutdown stops its workers.

Which HTTP server serves (``http_server``): djl's own unless the test names one, or its
module is marked ``pytest.mark.both_servers``: then each test runs once per server
(``djl``, ``hypercorn``), through the ``http_server`` fixture of tests/conftest.py.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx
import trio

from djl.__main__ import run_server
from djl.config import ServerConfig, load_server_config

MODELS = Path(__file__).parent / "models"
EXAMPLES = Path(__file__).parent.parent / "examples"


@dataclass
class Server:
    url: str
    client: httpx.AsyncClient
    config: ServerConfig
    #: Every bound URL: the management listener's first when there are two.
    binds: list[str] = field(default_factory=list)


def model_url(name: str) -> str:
    """``file:`` URL of a test model folder (tests/models/<name>/) or an example."""
    path = MODELS / name if (MODELS / name).exists() else EXAMPLES / name
    return f"file:{path.resolve()}/"


#: Every HTTP server ``djl-serving`` can run (config key ``http_server``).
HTTP_SERVERS = ("djl", "hypercorn")
#: The one ``running_server`` starts when a test names none (the fixture sets it).
default_http_server = "djl"


@asynccontextmanager
async def running_server(tmp_path: Path, env: dict[str, str] | None = None,
                         **overrides: str) -> AsyncIterator[Server]:
    settings = {
        "inference_address": "http://127.0.0.1:0",
        "management_address": "http://127.0.0.1:0",
        "load_models": "NONE",
        "http_server": default_http_server,
    }
    settings.update(overrides)
    base_env = {"DJL_CACHE_DIR": str(tmp_path / "cache"), "MODEL_SERVER_HOME": str(tmp_path)}
    base_env.update(env or {})
    config = load_server_config(env=base_env, overrides=settings)
    before = worker_pids()
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(run_server, config, shutdown=stop))
        url = binds[0]
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            try:
                yield Server(url, client, config, binds)
            finally:
                stop.set()
    left = worker_pids() - before
    assert not left, f"worker processes left after shutdown: {sorted(left)}"


def worker_pids() -> set[int]:
    """Live ``python -m djl.runtime`` children of this (the test's) process: the local
    workers of every server the test runs in-process."""
    me = str(os.getpid())
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError):
            continue
        if ppid == me and state != "Z" and b"djl.runtime" in argv:
            found.add(int(entry.name))
    return found


async def register(server: Server, name: str, model: str | None = None, **params: str) -> None:
    """Register a test model synchronously and assert it worked."""
    query = {"url": model_url(model or name), "model_name": name, **params}
    r = await server.client.post("/models", params=query)
    assert r.status_code == 200, r.text


def runtime_pids(marker: Path) -> set[int]:
    """Live ``python -m djl.runtime`` processes whose command line names ``marker``."""
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            args = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        argv = args.split("\0")
        if "djl.runtime" in argv and any(str(marker) in a for a in argv):
            pids.add(int(entry))
    return pids


@contextmanager
def serving_process(home: Path, name: str, model_dir: Path,
                    env: dict[str, str] | None = None) -> Iterator[str]:
    """``python -m djl --models <name>=file:<model_dir>/`` as a process of its own (the
    text-generation tests: one per module), until ``name`` is Healthy; yields its URL and
    stops it with SIGTERM afterwards."""
    import signal
    import socket
    import subprocess
    import sys
    import time

    import pytest

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    base = {k: v for k, v in os.environ.items() if not k.startswith("SERVING_")}
    env = {**base, "DJL_CACHE_DIR": str(home / "cache"), "MODEL_SERVER_HOME": str(home),
           "SERVING_INFERENCE_ADDRESS": url, "SERVING_MANAGEMENT_ADDRESS": url,
           "SERVING_PROMETHEUS": "true", **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "djl", "--models",
                             f"{name}=file:{model_dir}/"], env=env, cwd=home,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited: {proc.communicate()[1][-3000:]}")
            try:
                r = httpx.get(f"{url}/models/{name}", timeout=2)
                if r.status_code == 200 and r.json()[0]["models"][0]["status"] == "Healthy":
                    break
            except (httpx.HTTPError, KeyError, IndexError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{name} did not load")
            time.sleep(0.2)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
