"""Shared plumbing for the benchmarks: servers as subprocesses, the load generator, CPU time.

Every server runs as a real subprocess on 127.0.0.1 with a free port, in its own session.
``Processes`` stops them all (SIGTERM, then SIGKILL) together with every descendant seen
while they ran (djl's workers start their own sessions), whatever ends the script:
normal exit, an exception, Ctrl-C or SIGTERM.

The load generator is ``wrk`` with a Lua script (POST body, JSON summary with latency
percentiles); ``bench/setup.sh`` installs it. Without wrk, a multi-process asyncio client
(``python_load``) stands in, and the results say so.

TorchServe 0.12, for comparison rows, lives in its own venv (``bench/.venv-ts``, made by
``sh bench/setup.sh``): ``torchserve_available``, ``torchserve_archive`` (a .mar from a
handler file), ``start_torchserve``, ``torchserve_register``, ``torchserve_unregister``.
Its Java frontend counts as the "server" in CPU per request, its Python backends as the
"workers", like djl's server process and worker processes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import httpx

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
#: Where results go; DJL_BENCH_RESULTS moves them (the smoke runs in tests/ write to a
#: temporary folder, never over a measured result).
RESULTS_DIR = Path(os.environ.get("DJL_BENCH_RESULTS") or BENCH_DIR / "results")
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
T = TypeVar("T")


# -- machine ------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for dist in ("djl", "trio", "quart", "quart-trio", "hypercorn", "h11", "werkzeug",
                 "httpx", "torch", "numpy", "Cython"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    wrk = shutil.which("wrk")
    wrk_version = None
    if wrk:
        out = subprocess.run([wrk, "--version"], capture_output=True, text=True)
        wrk_version = (out.stdout or out.stderr).strip().splitlines()[0] if (
            out.stdout or out.stderr) else None
    return {
        "nproc": os.cpu_count(),
        "sched_affinity": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "loadavg_at_start": os.getloadavg(),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "versions": versions,
        "wrk": wrk_version,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **git_commit(),
    }


def git_commit() -> dict[str, Any]:
    """The checkout measured: its commit, and whether tracked files differ from it."""
    def git(*args: str) -> str:
        out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else ""

    return {"commit": git("rev-parse", "HEAD") or None,
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- /proc: CPU time and descendants --------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces: split after its closing parenthesis.
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """utime + stime of one live process (all its threads), 0.0 once it is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # After the name: state(3) ppid(4) ... utime(14) stime(15) → indexes 11 and 12 here.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (by parent pid), whatever its session."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is None:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


# -- processes ------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    #: Every descendant ever seen (worker processes), so that none outlives the bench.
    seen: set[int] = field(default_factory=set)
    #: Where the management API listens, when not at ``base_url`` (TorchServe).
    management_url: str = ""
    #: The command name (``/proc/<pid>/comm``) of the descendant that serves HTTP, when it
    #: is not the process started (TorchServe's launcher starts ``java``).
    front_comm: str = ""

    @property
    def pid(self) -> int:
        return self.process.pid

    def refresh(self) -> set[int]:
        now = descendants(self.pid)
        self.seen |= now
        return now

    def front_pid(self) -> int:
        """The process that serves HTTP: the one started, or its ``front_comm`` child."""
        if self.front_comm:
            for pid in sorted(self.refresh()):
                if _comm(pid) == self.front_comm:
                    return pid
        return self.pid

    def cpu(self) -> tuple[float, float]:
        """(HTTP front CPU s, CPU s of the front's live descendants): snapshot."""
        front = self.front_pid()
        self.refresh()
        kids = descendants(front)
        return cpu_seconds(front), sum(cpu_seconds(k) for k in kids)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Processes:
    """Owns the servers of one bench run; ``with Processes() as procs:`` stops them all."""

    def __init__(self) -> None:
        self.servers: list[Server] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="djl-bench-"))
        self._old_term: Any = None

    def __enter__(self) -> Processes:
        # SIGTERM → KeyboardInterrupt, so that ``finally`` blocks and __exit__ run.
        self._old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop_all()
        finally:
            signal.signal(signal.SIGTERM, self._old_term or signal.SIG_DFL)
            shutil.rmtree(self.tmp, ignore_errors=True)

    def start(self, name: str, argv: list[str], env: Mapping[str, str] | None = None,
              *, port: int, ping_path: str = "/ping", timeout_s: float = 60.0,
              cwd: Path = REPO) -> Server:
        log_path = self.tmp / f"{name}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=cwd, env={**os.environ, **(env or {})}, start_new_session=True,
            )
        server = Server(name, process, f"http://127.0.0.1:{port}", log_path)
        self.servers.append(server)
        wait_ready(server, ping_path, timeout_s)
        return server

    def stop(self, server: Server, timeout_s: float = 20.0) -> None:
        if server not in self.servers:
            return
        self.servers.remove(server)
        if server.process.poll() is None:
            server.refresh()
            _signal_group(server.pid, signal.SIGTERM)
            try:
                server.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                _signal_group(server.pid, signal.SIGKILL)
                server.process.wait(5)
        # Workers left behind (their own sessions): give them a moment, then kill them.
        deadline = time.monotonic() + 5
        leftovers = {p for p in server.seen if _alive(p)}
        while leftovers and time.monotonic() < deadline:
            time.sleep(0.1)
            leftovers = {p for p in leftovers if _alive(p)}
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop_all(self) -> None:
        # Shield the clean-up from a second Ctrl-C.
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for server in list(reversed(self.servers)):
                self.stop(server)
        finally:
            signal.signal(signal.SIGINT, old_int)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def wait_ready(server: Server, path: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    url = server.base_url + path
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.name} not ready after {timeout_s}s:\n{server.log_tail()}")
        time.sleep(0.1)


def start_bare(procs: Processes, body: bytes, *, app: str = "quart", worker: str = "trio",
               name: str = "bare") -> Server:
    """A baseline (bench/bare_server.py): a fixed body from a QuartTrio route (``app``
    "quart") or a plain ASGI app ("raw"), on hypercorn's ``worker`` ("trio", "asyncio")."""
    port = free_port()
    body_file = procs.tmp / "bare_body"
    body_file.write_bytes(body)
    return procs.start(name, [PYTHON, str(BENCH_DIR / "bare_server.py"), "--port", str(port),
                              "--body-file", str(body_file), "--app", app,
                              "--worker", worker], port=port)


def start_djl(procs: Processes, *, name: str = "djl", source: Path = REPO,
              extra_env: Mapping[str, str] | None = None,
              hypercorn_cli: bool = False) -> Server:
    """``python -m djl`` on a free port with no start-up models; ``source``: the checkout
    whose ``djl`` runs (e.g. main's, for a baseline in the same run); ``extra_env``:
    ``SERVING_*`` settings; ``hypercorn_cli``: ``hypercorn -k trio
    'djl.app:create_app()'`` instead."""
    port = free_port()
    address = f"http://127.0.0.1:{port}"
    env = {
        "SERVING_INFERENCE_ADDRESS": address,
        "SERVING_MANAGEMENT_ADDRESS": address,
        "SERVING_LOAD_MODELS": "NONE",
        "MODEL_SERVER_HOME": str(procs.tmp),
        "DJL_CACHE_DIR": str(procs.tmp / "cache"),
    }
    # The workers too: they must not pick up another checkout's installed djl.
    env["PYTHONPATH"] = str(source)
    env.update(extra_env or {})
    argv = [PYTHON, "-m", "djl"]
    if hypercorn_cli:
        # The app as hypercorn's own CLI serves it (djl-serving not involved); -w 0 serves
        # in the process started (the same worker_serve as its default one spawned
        # worker), so its CPU is the process's.
        argv = [PYTHON, "-m", "hypercorn", "-k", "trio", "-w", "0", "-b",
                f"127.0.0.1:{port}", "djl.app:create_app()"]
    return procs.start(name, argv, env, port=port, cwd=source)


def register(server: Server, model_dir: Path, name: str, **params: Any) -> dict[str, Any]:
    """POST /models (synchronous: returns once the workers are up)."""
    query = {"url": f"file:{model_dir.resolve()}/", "model_name": name, **params}
    response = httpx.post(server.base_url + "/models", params=query, timeout=300)
    if response.status_code != 200:
        raise RuntimeError(f"register {name}: {response.status_code} {response.text}\n"
                           f"{server.log_tail()}")
    server.refresh()
    return response.json()


def unregister(server: Server, name: str) -> None:
    response = httpx.delete(f"{server.base_url}/models/{name}", timeout=60)
    if response.status_code != 200:
        raise RuntimeError(f"unregister {name}: {response.status_code} {response.text}")


# -- TorchServe 0.12 (comparison rows) ----------------------------------------------------

TS_VENV = BENCH_DIR / ".venv-ts"


def torchserve_available(allow_install: bool = True) -> Path | None:
    """The ``torchserve`` launcher of bench/.venv-ts, running setup.sh when it is missing;
    None when it cannot be had (the bench then reports the row as skipped)."""
    launcher = TS_VENV / "bin" / "torchserve"
    if launcher.is_file() or not allow_install:
        return launcher if launcher.is_file() else None
    print("TorchServe not found: running bench/setup.sh", flush=True)
    try:
        subprocess.run(["sh", str(BENCH_DIR / "setup.sh")], check=True, timeout=1800)
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"could not install TorchServe ({exc}): its rows are skipped", flush=True)
        return None
    return launcher if launcher.is_file() else None


def torchserve_archive(store: Path, name: str, handler: Path, *,
                       serialized_file: Path | None = None,
                       extra_files: list[Path] | None = None) -> Path:
    """``torch-model-archiver``: ``<store>/<name>.mar`` from a handler file (and model)."""
    store.mkdir(parents=True, exist_ok=True)
    argv = [str(TS_VENV / "bin" / "torch-model-archiver"), "--model-name", name,
            "--version", "1.0", "--handler", str(handler), "--export-path", str(store),
            "--force"]
    if serialized_file is not None:
        argv += ["--serialized-file", str(serialized_file)]
    if extra_files:
        argv += ["--extra-files", ",".join(str(f) for f in extra_files)]
    subprocess.run(argv, check=True, capture_output=True, timeout=120)
    return store / f"{name}.mar"


def start_torchserve(procs: Processes, store: Path, *, name: str = "torchserve",
                     netty_threads: int = 0, timeout_s: float = 120.0) -> Server:
    """TorchServe in the foreground on free ports (inference, management, metrics), token
    auth off, model API on, no models; stopped with the other servers by ``Processes``.

    ``netty_threads`` 0 keeps TorchServe's default (one per core)."""
    launcher = torchserve_available(allow_install=False)
    if launcher is None:
        raise RuntimeError("TorchServe is not installed: run sh bench/setup.sh")
    port, management, metrics = free_port(), free_port(), free_port()
    home = procs.tmp / name
    home.mkdir(parents=True, exist_ok=True)
    lines = [
        f"inference_address=http://127.0.0.1:{port}",
        f"management_address=http://127.0.0.1:{management}",
        f"metrics_address=http://127.0.0.1:{metrics}",
        f"model_store={store}",
        "default_workers_per_model=1",
        "disable_system_metrics=true",
        "install_py_dep_per_model=false",
        "enable_envvars_config=false",
        "default_response_timeout=120",
    ]
    if netty_threads > 0:
        lines.append(f"number_of_netty_threads={netty_threads}")
    config = home / "config.properties"
    config.write_text("\n".join(lines) + "\n")
    env = torchserve_environment(home, launcher)
    argv = [str(launcher), "--start", "--foreground", "--ncs", "--disable-token-auth",
            "--enable-model-api", "--model-store", str(store), "--ts-config", str(config)]
    server = procs.start(name, argv, env, port=port, timeout_s=timeout_s)
    server.management_url = f"http://127.0.0.1:{management}"
    server.front_comm = "java"
    return server


def torchserve_environment(home: Path, launcher: Path) -> dict[str, str]:
    """The environment of one TorchServe run, everything it writes kept under ``home``.

    TorchServe's launcher keeps its pid file at ``$TMPDIR/.model_server.pid`` and refuses
    to start while the pid in it lives, and its Java front unpacks archives under
    ``java.io.tmpdir``: with the shared /tmp, two benches at once would see each other's
    server. Each run gets a temporary folder of its own."""
    tmp = home / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    java_options = os.environ.get("JAVA_TOOL_OPTIONS", "")
    return {
        "PATH": f"{launcher.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "TMPDIR": str(tmp),
        "JAVA_TOOL_OPTIONS": f"{java_options} -Djava.io.tmpdir={tmp}".strip(),
        "LOG_LOCATION": str(home / "logs"),
        "METRICS_LOCATION": str(home / "logs"),
        "TS_DISABLE_TOKEN_AUTHORIZATION": "true",
        "TS_ENABLE_MODEL_API": "true",
    }


def torchserve_register(server: Server, mar: str, *, batch_size: int = 1,
                        max_batch_delay_ms: int = 100, workers: int = 1) -> None:
    """``POST /models`` on TorchServe's management API; returns once the workers are up."""
    query = {"url": mar, "batch_size": batch_size, "max_batch_delay": max_batch_delay_ms,
             "initial_workers": workers, "synchronous": "true"}
    response = httpx.post(server.management_url + "/models", params=query, timeout=300)
    if response.status_code != 200:
        raise RuntimeError(f"torchserve register {mar}: {response.status_code} "
                           f"{response.text}\n{server.log_tail()}")
    server.refresh()


def torchserve_unregister(server: Server, name: str) -> None:
    response = httpx.delete(f"{server.management_url}/models/{name}", timeout=60)
    if response.status_code != 200:
        raise RuntimeError(f"torchserve unregister {name}: {response.status_code} "
                           f"{response.text}")


# -- load generation ------------------------------------------------------------------------

LUA = r"""
local f = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE")

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, ' ..
    '"read": %d, "write": %d, "status": %d, "timeout": %d, "p50_us": %d, ' ..
    '"p90_us": %d, "p99_us": %d, "mean_us": %.1f, "max_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, latency.max))
end
"""


def ensure_wrk(allow_install: bool = True) -> str | None:
    """Path of wrk, running bench/setup.sh to install it when missing; None if impossible."""
    path = shutil.which("wrk")
    if path or not allow_install:
        return path
    print("wrk not found: running bench/setup.sh", flush=True)
    try:
        subprocess.run(["sh", str(BENCH_DIR / "setup.sh")], check=True, timeout=600)
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"could not install wrk ({exc}): falling back to the Python client", flush=True)
        return None
    return shutil.which("wrk")


@dataclass
class LoadSpec:
    url: str
    body: bytes
    content_type: str
    concurrency: int
    duration_s: float
    #: Further request headers, (name, value) (e.g. Inference-Header-Content-Length).
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class Client:
    """Which load generator runs: ``wrk`` (path given) or the Python fallback."""

    wrk: str | None
    threads: int = 1
    tmp: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))

    @property
    def name(self) -> str:
        return "wrk" if self.wrk else "python-multiprocess (wrk unavailable)"

    def run(self, spec: LoadSpec) -> dict[str, Any]:
        if self.wrk:
            return self._wrk(spec)
        return python_load(spec)

    def _wrk(self, spec: LoadSpec) -> dict[str, Any]:
        script = self.tmp / "bench.lua"
        script.write_text(LUA)
        body_file = self.tmp / "wrk_body"
        body_file.write_bytes(spec.body)
        threads = max(1, min(self.threads, spec.concurrency))
        duration = max(1, round(spec.duration_s))
        argv = [self.wrk, "-t", str(threads), "-c", str(spec.concurrency), "-d", f"{duration}s",
                "--timeout", "30s", "--latency", "-s", str(script), spec.url]
        for name, value in spec.headers:
            argv[1:1] = ["-H", f"{name}: {value}"]
        env = {**os.environ, "BENCH_BODY_FILE": str(body_file),
               "BENCH_CONTENT_TYPE": spec.content_type}
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   env=env)
        try:
            out, err = process.communicate(timeout=duration + 60)
        except BaseException:
            process.kill()
            process.wait()
            raise
        # communicate() reaped it: the client's own CPU comes from our children's rusage.
        line = next((x for x in out.decode().splitlines() if x.startswith("BENCHJSON ")), None)
        if process.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed ({process.returncode}): {err.decode()}{out.decode()}")
        raw = json.loads(line[len("BENCHJSON "):])
        seconds = raw["duration_us"] / 1e6
        errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
        return {
            "requests": raw["requests"],
            "seconds": seconds,
            "rps": raw["requests"] / seconds if seconds else 0.0,
            "errors": errors,
            "non_2xx": raw["status"],
            "p50_ms": raw["p50_us"] / 1000,
            "p90_ms": raw["p90_us"] / 1000,
            "p99_ms": raw["p99_us"] / 1000,
            "mean_ms": raw["mean_us"] / 1000,
            "max_ms": raw["max_us"] / 1000,
        }


def children_cpu() -> float:
    usage = os.times()
    return usage.children_user + usage.children_system


def system_busy() -> float:
    """CPU seconds all cores spent busy since boot (everything but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLK_TCK


def measure(client: Client, server: Server, spec: LoadSpec, warmup_s: float) -> dict[str, Any]:
    """Warm up, then one measured run; adds CPU per request of server, workers and client."""
    if warmup_s > 0:
        client.run(LoadSpec(spec.url, spec.body, spec.content_type, spec.concurrency, warmup_s,
                            spec.headers))
    server_cpu0, workers_cpu0 = server.cpu()
    client_cpu0 = children_cpu()
    busy0 = system_busy()
    result = client.run(spec)
    busy1 = system_busy()
    server_cpu1, workers_cpu1 = server.cpu()
    client_cpu1 = children_cpu()
    n = max(result["requests"], 1)
    result["server_cpu_us_per_req"] = (server_cpu1 - server_cpu0) / n * 1e6
    result["workers_cpu_us_per_req"] = max(workers_cpu1 - workers_cpu0, 0.0) / n * 1e6
    result["client_cpu_us_per_req"] = (client_cpu1 - client_cpu0) / n * 1e6
    result["server_cpu_util"] = (server_cpu1 - server_cpu0) / max(result["seconds"], 1e-9)
    result["client_cpu_util"] = (client_cpu1 - client_cpu0) / max(result["seconds"], 1e-9)
    # Cores kept busy by everything else on the machine (other users' work): noise gauge.
    ours = (server_cpu1 - server_cpu0) + max(workers_cpu1 - workers_cpu0, 0.0) + (
        client_cpu1 - client_cpu0)
    result["other_busy_cores"] = max(busy1 - busy0 - ours, 0.0) / max(result["seconds"], 1e-9)
    result["concurrency"] = spec.concurrency
    result["client"] = client.name
    return result


# -- the Python fallback client -------------------------------------------------------------


def python_load(spec: LoadSpec, processes: int | None = None) -> dict[str, Any]:
    """Closed-loop keep-alive HTTP/1.1 load from several processes (asyncio in each)."""
    processes = processes or max(1, min(spec.concurrency, os.cpu_count() or 1))
    shares = [spec.concurrency // processes + (1 if i < spec.concurrency % processes else 0)
              for i in range(processes)]
    shares = [s for s in shares if s]
    ctx = multiprocessing.get_context("fork")
    start = time.perf_counter()
    with ctx.Pool(len(shares)) as pool:
        parts = pool.starmap(_python_worker, [(spec, share) for share in shares])
    seconds = time.perf_counter() - start
    latencies = sorted(x for part in parts for x in part[0])
    ok = sum(part[1] for part in parts)
    non_2xx = sum(part[2] for part in parts)
    errors = sum(part[3] for part in parts)
    requests = ok + non_2xx
    measured = max(part[4] for part in parts) if parts else seconds

    def pct(q: float) -> float:
        if not latencies:
            return 0.0
        return latencies[min(len(latencies) - 1, int(q / 100 * len(latencies)))] * 1000

    return {
        "requests": requests,
        "seconds": measured,
        "rps": requests / measured if measured else 0.0,
        "errors": errors,
        "non_2xx": non_2xx,
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "mean_ms": (sum(latencies) / len(latencies) * 1000) if latencies else 0.0,
        "max_ms": (latencies[-1] * 1000) if latencies else 0.0,
    }


def _python_worker(spec: LoadSpec, connections: int) -> tuple[list[float], int, int, int, float]:
    return asyncio.run(_python_main(spec, connections))


async def _python_main(spec: LoadSpec, connections: int
                       ) -> tuple[list[float], int, int, int, float]:
    url = httpx.URL(spec.url)
    host, port = url.host, url.port or 80
    target = url.raw_path.decode()
    request = (f"POST {target} HTTP/1.1\r\nHost: {host}:{port}\r\n"
               f"Content-Type: {spec.content_type}\r\nContent-Length: {len(spec.body)}\r\n"
               + "".join(f"{name}: {value}\r\n" for name, value in spec.headers)
               + "\r\n").encode() + spec.body
    counts = [0, 0, 0]  # ok, non-2xx, errors
    latencies: list[float] = []
    start = time.perf_counter()
    deadline = start + spec.duration_s
    await asyncio.gather(*(_python_conn(host, port, request, deadline, latencies, counts)
                           for _ in range(connections)))
    return latencies, counts[0], counts[1], counts[2], time.perf_counter() - start


async def _python_conn(host: str, port: int, request: bytes, deadline: float,
                       latencies: list[float], counts: list[int]) -> None:
    writer = None
    try:
        while time.perf_counter() < deadline:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            headers = {}
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip().lower()
            if b"content-length" in headers:
                await reader.readexactly(int(headers[b"content-length"]))
            elif headers.get(b"transfer-encoding") == b"chunked":
                while True:
                    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    await reader.readexactly(size + 2)
                    if size == 0:
                        break
            latencies.append(time.perf_counter() - t0)
            counts[0 if 200 <= status < 400 else 1] += 1
            if headers.get(b"connection") == b"close":
                writer.close()
                writer = None
    except (OSError, asyncio.IncompleteReadError, ValueError):
        counts[2] += 1
    finally:
        if writer is not None:
            writer.close()


# -- output ---------------------------------------------------------------------------------


def import_ray() -> Any:
    """``ray`` with the local ``Cluster`` the Ray benches start: imported only by them, since
    ray is an optional extra."""
    import ray
    import ray.cluster_utils  # noqa: F401 — the Cluster the Ray benches start

    return ray


def write_results(name: str, data: dict[str, Any]) -> Path:
    """``data`` as RESULTS_DIR/name; its ``machine`` gains the load at the end."""
    if isinstance(data.get("machine"), dict):
        data["machine"].setdefault("loadavg_at_end", os.getloadavg())
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / name
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def table(headers: list[str], rows: list[list[Any]]) -> str:
    def fmt(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"
        return str(value)

    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    lines = [" | ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)),
             "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


@contextmanager
def timer(label: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    print(f"[{label}: {time.perf_counter() - start:.1f}s]", flush=True)


# -- what every load bench script shares ----------------------------------------------------

#: examples/mlp's model as the MLP benches serve it (torch_mlp, v2, ray): one worker, batch
#: 32, max_batch_delay 10 ms, one intra-op thread.
MLP_SETTINGS = """batch_size=32
max_batch_delay=10
minWorkers=1
maxWorkers=1
option.num_threads=1
"""
MLP_DESCRIPTION = "TorchScript Linear(128,256)-ReLU-Linear(256,10), seed 0 (examples/mlp)"


def load_parser(doc: str | None, *, duration: float, warmup: float, concurrency: list[int],
                rounds: int | None, quick: str, client: bool = False) -> argparse.ArgumentParser:
    """The options every load bench takes: seconds per point and of warm-up, the
    concurrency levels, interleaved rounds (``rounds`` None: the script has none), the
    load generator and its threads, ``--quick``. The script adds its own."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--duration", type=float, default=duration, help="seconds per point")
    parser.add_argument("--warmup", type=float, default=warmup,
                        help="warm-up seconds per point")
    parser.add_argument("--concurrency", type=int, nargs="+", default=concurrency)
    if rounds is not None:
        parser.add_argument("--rounds", type=int, default=rounds,
                            help="interleaved rounds (median)")
    if client:
        parser.add_argument("--client", choices=["auto", "wrk", "python"], default="auto",
                            help="load generator (auto: wrk, installed if missing, else Python)")
    parser.add_argument("--wrk-threads", type=int, default=1,
                        help="wrk threads (1 leaves the second core to the server)")
    parser.add_argument("--quick", action="store_true", help=quick)
    return parser


def parse_load_args(parser: argparse.ArgumentParser, argv: list[str] | None,
                    **quick: Any) -> argparse.Namespace:
    """``parser``'s arguments, ``--quick`` replacing the named settings by ``quick``'s."""
    args = parser.parse_args(argv)
    if args.quick:
        for name, value in quick.items():
            setattr(args, name, value)
    return args


def load_client(args: argparse.Namespace, procs: Processes, notes: list[str]) -> Client:
    """The load generator ``args`` asks for (``--client``, default auto): wrk, installed
    if missing, else the Python fallback, which ``notes`` then records."""
    choice = getattr(args, "client", "auto")
    wrk = None if choice == "python" else ensure_wrk(allow_install=True)
    if choice == "wrk" and wrk is None:
        raise SystemExit("wrk is not available and could not be installed")
    if wrk is None:
        notes.append("wrk unavailable: the multi-process Python client measured (slower; "
                     "its numbers are a lower bound)")
        print(f"NOTE: {notes[-1]}", flush=True)
    return Client(wrk, threads=args.wrk_threads, tmp=procs.tmp)


def interleaved(rounds: int, concurrency: list[int], targets: list[T]
                ) -> Iterator[tuple[int, int, T]]:
    """(round, c, target) in the order the benches measure: each round every concurrency,
    each concurrency every target, the order flipping each round so a drift in the
    machine's other load hits the first target and the last alike."""
    for round_no in range(rounds):
        for c in concurrency:
            yield from ((round_no, c, t) for t in (targets if round_no % 2 == 0
                                                   else targets[::-1]))


def point_line(name: str, point: dict[str, Any], width: int = 22) -> str:
    """One measured point as the benches print it while they run."""
    return (f"{name:<{width}} c={point['concurrency']:<3} {point['rps']:>8,.0f} req/s  "
            f"p50 {point['p50_ms']:.2f} ms  p99 {point['p99_ms']:.2f} ms  "
            f"front {point['server_cpu_us_per_req']:,.0f} µs/req  "
            f"worker {point['workers_cpu_us_per_req']:,.0f} µs/req  "
            f"other load {point['other_busy_cores']:.2f}  "
            f"errors {point['errors'] + point['non_2xx']}")


def mlp_folder(root: Path, name: str, *, file: str = "model.pt", engine: str = "PyTorch",
               extra: str = "") -> Path:
    """``root/name``: examples/mlp's model (same layers, same seed) saved as ``file``
    (.pt, .pt2 or .onnx: make install's copy when there is one, the export being slow) and
    a serving.properties of ``engine``, MLP_SETTINGS and ``extra``."""
    sys.path.insert(0, str(REPO / "examples" / "mlp"))
    from build import save  # examples/mlp/build.py

    folder = root / name
    folder.mkdir(parents=True)
    built = REPO / "examples" / "mlp" / file
    if file == "model.onnx" and built.is_file():
        (folder / file).write_bytes(built.read_bytes())
    else:
        save(folder / file)
    (folder / "serving.properties").write_text(f"engine={engine}\n" + MLP_SETTINGS + extra)
    return folder


def mlp_request_body(seed: int = 0, size: int = 128) -> bytes:
    """A JSON array of ``size`` floats in [-1, 1], the same for every run of a seed."""
    rng = random.Random(seed)
    return json.dumps([round(rng.uniform(-1, 1), 4) for _ in range(size)]).encode()


def predictions(url: str, body: bytes) -> list[float]:
    r = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=60)
    r.raise_for_status()
    return r.json()["predictions"]


def report(ratios: dict[str, Any], notes: list[str]) -> None:
    for key, value in ratios.items():
        print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
    for note in notes:
        print(f"NOTE: {note}")


def save_results(name: str, data: dict[str, Any]) -> Path:
    """write_results, and say where."""
    path = write_results(name, data)
    print(f"wrote {path}")
    return path


def run_main(main: Callable[[], int | None]) -> None:
    """The script's ``main``, its exit status the process's; Ctrl-C (or SIGTERM) stops
    it after ``Processes`` has stopped every server it started."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: every process this bench started has been stopped", file=sys.stderr)
        sys.exit(130)
