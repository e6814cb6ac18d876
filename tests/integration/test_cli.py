"""The ``djl-serving`` command as a user runs it: a real process, real signals (spec §8)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import trio
from serving import EXAMPLES

ENV = {k: v for k, v in os.environ.items() if not k.startswith("SERVING_")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def djl(args: list[str], tmp_path: Path, port: int, **env: str) -> subprocess.Popen:
    address = f"http://127.0.0.1:{port}"
    full_env = {**ENV, "DJL_CACHE_DIR": str(tmp_path / "cache"), "MODEL_SERVER_HOME":
                str(tmp_path), "SERVING_INFERENCE_ADDRESS": address,
                "SERVING_MANAGEMENT_ADDRESS": address, **env}
    return subprocess.Popen([sys.executable, "-m", "djl", *args], env=full_env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited: {proc.communicate()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    pytest.fail("server did not start")


def runtime_pids(marker: str) -> list[int]:
    """PIDs of worker processes whose command line mentions ``marker``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "djl.runtime" in cmdline and marker in cmdline:
                pids.append(int(entry.name))
    return pids


def _stop_everything(proc: subprocess.Popen, folder: Path) -> None:
    """After a test, whatever happened: the server, then the workers of ``folder`` (they
    run in their own sessions: killing the server does not take them along)."""
    if proc.poll() is None:
        proc.kill()
        proc.communicate()
    for pid in runtime_pids(str(folder)):
        os.kill(pid, signal.SIGKILL)


def assert_workers_gone(model: Path, timeout: float = 10) -> None:
    """No worker process of ``model`` is left (they may take a moment to be reaped)."""
    deadline = time.monotonic() + timeout
    while runtime_pids(str(model)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runtime_pids(str(model)) == []


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["-f", "missing.properties"], {}, "Configuration file not found: missing.properties"),
        ([], {"SERVING_INFERENCE_ADDRESS": "ftp://x"}, "Invalid binding address: ftp://x"),
        (["-m", "bad=file:/no/such/model/"], {}, "Invalid model url: file:/no/such/model/"),
        (["-m", "out=file:/srv/ok/%2e%2e/etc/"], {"SERVING_ALLOWED_URLS": "file:/srv/ok/.*"},
         "URL is not allowed by allowed_urls: file:/srv/ok/%2e%2e/etc/"),
        ([], {"SERVING_JOB_QUEUE_SIZE": "lots"}, "Invalid integer for job_queue_size"),
        ([], {"HF_MODEL_ID": "org/some-hub-model"},
         "HF_MODEL_ID=org/some-hub-model: only a local path or a URL is supported"),
    ],
)
def test_startup_failure_is_one_line_and_exit_1(tmp_path, args, env, message):
    proc = djl(args, tmp_path, free_port(), **env)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("djl-serving: ") and message in last


@pytest.mark.parametrize("args", [["--bogus"], ["-m"]])
def test_an_invalid_command_line_prints_the_help_and_exits_1(tmp_path, args):
    """Spec §8.1 (argparse's own habit is exit 2 and a usage line)."""
    proc = djl(args, tmp_path, free_port())
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "--model-store" in err and "djl-serving: error:" in err


def test_hf_model_id_naming_a_local_folder_is_a_startup_model(tmp_path):
    """Spec §4.5: HF_MODEL_ID adds one more start-up entry; a local path loads like a store
    folder, next to the -m models."""
    model = tmp_path / "my-hf-model"
    shutil.copytree(EXAMPLES / "echo", model)
    port = free_port()
    proc = djl(["-m", f"echo=file:{EXAMPLES / 'echo'}/"], tmp_path, port,
               HF_MODEL_ID=str(model))
    try:
        wait_ready(port, proc)
        rows = httpx.get(f"http://127.0.0.1:{port}/models").json()["models"]
        assert [r["modelName"] for r in rows] == ["echo", "my_hf_model"]
        r = httpx.post(f"http://127.0.0.1:{port}/predictions/my_hf_model", content=b"hf",
                       headers={"content-type": "text/plain"})
        assert r.status_code == 200 and r.text == "hf"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def test_port_in_use_fails_cleanly(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = djl(["-m", "NONE"], tmp_path, port)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in err.strip().splitlines()[-1]


def test_sigterm_stops_server_and_workers(tmp_path):
    model = tmp_path / "sigterm-echo"
    shutil.copytree(EXAMPLES / "echo", model)
    port = free_port()
    proc = djl(["-m", f"echo=file:{model}/"], tmp_path, port)
    try:
        wait_ready(port, proc)
        r = httpx.post(f"http://127.0.0.1:{port}/predictions/echo", content=b"hi",
                       headers={"content-type": "text/plain"})
        assert r.text == "hi"
        assert runtime_pids(str(model)), "a worker process should be running"
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
        assert proc.returncode == 0
        assert_workers_gone(model)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_model_store_loads_every_folder(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    shutil.copytree(EXAMPLES / "echo", store / "first-model")
    shutil.copytree(EXAMPLES / "echo", store / "second")
    (store / ".hidden").mkdir()
    port = free_port()
    proc = djl(["-s", str(store)], tmp_path, port)
    try:
        wait_ready(port, proc)
        rows = httpx.get(f"http://127.0.0.1:{port}/models").json()["models"]
        assert [r["modelName"] for r in rows] == ["first_model", "second"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def test_hypercorn_can_serve_the_app(tmp_path):
    port = free_port()
    env = {**ENV, "DJL_CACHE_DIR": str(tmp_path / "cache"), "MODEL_SERVER_HOME": str(tmp_path),
           "SERVING_LOAD_MODELS": f"echo=file:{EXAMPLES / 'echo'}/"}
    hypercorn = Path(sys.executable).with_name("hypercorn")
    proc = subprocess.Popen([str(hypercorn), "-k", "trio", "-b", f"127.0.0.1:{port}",
                             "djl.app:create_app()"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(port, proc)
        r = httpx.post(f"http://127.0.0.1:{port}/predictions/echo", content=b"via hypercorn",
                       headers={"content-type": "text/plain"})
        assert r.status_code == 200 and r.text == "via hypercorn"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def test_sigterm_while_a_startup_model_loads_stops_promptly(tmp_path):
    """The start-up load is aborted (not waited for) when SIGTERM comes: exit 0 at once,
    the loading worker process stopped."""
    model = tmp_path / "slow-startup"
    model.mkdir()
    (model / "model.py").write_text(
        "import time\n\n\ndef handle(inputs):\n"
        "    if inputs.is_empty():\n"
        "        time.sleep(60)\n"
        "    return None\n"
    )
    proc = djl(["-m", f"slow=file:{model}/"], tmp_path, free_port())
    try:
        deadline = time.monotonic() + 30
        while not runtime_pids(str(model)):  # the worker is loading the model
            if proc.poll() is not None:
                pytest.fail(f"server exited: {proc.communicate()}")
            assert time.monotonic() < deadline, "no worker process started"
            time.sleep(0.05)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        print(f"exited {time.monotonic() - sent:.2f}s after SIGTERM")
        assert proc.returncode == 0, err
        assert time.monotonic() - sent < 15
        assert_workers_gone(model)
    finally:
        _stop_everything(proc, model)


def test_sigterm_under_load_answers_every_request(tmp_path):
    """SIGTERM with one request inside the model and 19 queued: the in-flight one finishes
    (200, its own body), the queued ones get 503 "Worker shutting down" at once (within
    2 s, while the in-flight one still sleeps); no connection is just dropped, no worker
    process is left."""
    model = tmp_path / "slowecho"
    model.mkdir()
    mark = tmp_path / "in-model"
    (model / "model.py").write_text(
        "import time\n\nfrom djl_python import Output\n\n\ndef handle(inputs):\n"
        "    if inputs.is_empty():\n"
        "        return None\n"
        "    body = inputs.get_as_bytes()\n"
        f"    with open({str(mark)!r}, 'ab') as f:\n"
        "        f.write(body + b'\\n')\n"
        "    time.sleep(3.0)\n"
        "    return Output().add(body)\n"
    )
    (model / "serving.properties").write_text("minWorkers=1\nmaxWorkers=1\nbatch_size=1\n")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = djl(["-m", f"slowecho=file:{model}/"], tmp_path, port)
    answers: dict[int, tuple[object, float]] = {}
    sent: list[float] = []
    try:
        wait_ready(port, proc)

        async def load() -> None:
            async with httpx.AsyncClient(timeout=30) as client:

                async def one(i: int) -> None:
                    try:
                        r = await client.post(f"{base}/predictions/slowecho",
                                              content=str(i).encode())
                        answers[i] = ((r.status_code, r.text), time.monotonic())
                    except httpx.HTTPError as exc:
                        answers[i] = (repr(exc), time.monotonic())

                async def queued() -> int:
                    r = await client.get(f"{base}/models/slowecho")
                    return r.json()[0]["models"][0]["requestInQueue"]

                async with trio.open_nursery() as nursery:
                    for i in range(20):
                        nursery.start_soon(one, i)
                    with trio.fail_after(20):  # one inside handle(), the other 19 queued
                        while not mark.exists() or await queued() != 19:
                            await trio.sleep(0.02)
                    assert len(mark.read_bytes().splitlines()) == 1
                    sent.append(time.monotonic())
                    proc.send_signal(signal.SIGTERM)

        trio.run(load)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    [inside] = [int(line) for line in mark.read_bytes().splitlines()]
    assert sorted(answers) == list(range(20))
    assert answers[inside][0] == (200, str(inside)), answers[inside]
    for i, (answer, at) in answers.items():
        if i != inside:
            assert isinstance(answer, tuple) and answer[0] == 503, (i, answer)
            assert '"Worker shutting down"' in answer[1], answer
            assert at - sent[0] < 2.0, f"request {i} answered {at - sent[0]:.2f}s after SIGTERM"
    assert_workers_gone(model)


def test_hypercorn_sigterm_during_a_synchronous_registration_stops_promptly(tmp_path):
    """Under ``hypercorn 'djl.app:create_app()'`` too, shutdown aborts a synchronous
    registration still loading (issue 8, defect 1): it used to hold the process until
    model_loading_timeout."""
    model = tmp_path / "slow-register"
    model.mkdir()
    (model / "model.py").write_text(
        "import time\n\n\ndef handle(inputs):\n"
        "    if inputs.is_empty():\n"
        "        time.sleep(60)\n"
        "    return None\n"
    )
    port = free_port()
    env = {**ENV, "DJL_CACHE_DIR": str(tmp_path / "cache"), "MODEL_SERVER_HOME": str(tmp_path),
           "SERVING_LOAD_MODELS": "NONE"}
    hypercorn = Path(sys.executable).with_name("hypercorn")
    proc = subprocess.Popen([str(hypercorn), "-k", "trio", "-b", f"127.0.0.1:{port}",
                             "djl.app:create_app()"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    answers: list[object] = []
    sent: list[float] = []
    try:
        wait_ready(port, proc)

        async def register_then_stop() -> None:
            async with httpx.AsyncClient(timeout=60) as client:

                async def register() -> None:
                    try:
                        r = await client.post(f"http://127.0.0.1:{port}/models",
                                              params={"url": f"file:{model}/"})
                        answers.append(r.status_code)
                    except httpx.HTTPError as exc:
                        answers.append(repr(exc))

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(register)
                    with trio.fail_after(30):
                        while not runtime_pids(str(model)):  # the worker is loading
                            await trio.sleep(0.05)
                    sent.append(time.monotonic())
                    proc.send_signal(signal.SIGTERM)

        trio.run(register_then_stop)
        proc.communicate(timeout=30)
        print(f"exited {time.monotonic() - sent[0]:.2f}s after SIGTERM; answers {answers}")
        assert time.monotonic() - sent[0] < 20
        assert answers and answers[0] != 200
        assert_workers_gone(model)
    finally:
        _stop_everything(proc, model)


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (by parent links in /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rpartition(")")[2].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_sigterm_to_make_serve_stops_the_server(tmp_path):
    """``make serve`` execs the server, so a SIGTERM to make reaches it (issue 8, defect
    6): it used to kill only the recipe's shell and leave djl-serving and its worker."""
    repo = Path(__file__).resolve().parents[2]
    venv = Path(sys.executable).parent.parent
    port = free_port()
    env = {**ENV, "DJL_CACHE_DIR": str(tmp_path / "cache"), "MODEL_SERVER_HOME": str(tmp_path)}
    # -o: take the venv running this test as installed (never rebuild it from here).
    proc = subprocess.Popen(["make", "-s", "-C", str(repo), "-o", f"{venv}/.installed", "serve",
                             f"VENV={venv}", f"PORT={port}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    below: set[int] = set()
    try:
        wait_ready(port, proc)
        r = httpx.post(f"http://127.0.0.1:{port}/predictions/echo", content=b"made",
                       headers={"content-type": "text/plain"})
        assert r.status_code == 200 and r.text == "made"
        below = _descendants(proc.pid)
        assert below, "the server runs below make"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 20
        while any(_alive(pid) for pid in below) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [pid for pid in below if _alive(pid)] == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in below:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_fail_fast_exits_137_and_leaves_no_worker(tmp_path):
    """SERVING_FAIL_FAST: the first model to turn FAILED (a worker death past
    retry_threshold 0) ends the server with status 137, and no worker process outlives it:
    not the idle one of another model, nor one busy inside handle()."""
    crashy, busy, idle = (tmp_path / name for name in ("crashy", "busy", "idle"))
    for folder in (crashy, busy, idle):
        shutil.copytree(Path(__file__).parents[1] / "models" / "behave", folder)
    mark = tmp_path / "busy-in-handle"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = djl(["-m", f"crashy=file:{crashy}/", f"busy=file:{busy}/", f"idle=file:{idle}/"],
               tmp_path, port,
               SERVING_FAIL_FAST="true", SERVING_RETRY_THRESHOLD="0")
    try:
        wait_ready(port, proc)
        [idle_pid] = runtime_pids(str(idle))

        async def crash_while_busy() -> list[object]:
            answers: list[object] = []
            async with httpx.AsyncClient(timeout=30) as client:

                async def one(model: str, params: dict[str, str]) -> None:
                    try:
                        r = await client.post(f"{base}/predictions/{model}", params=params,
                                              files={"data": b"x"})
                        answers.append(r.status_code)
                    except httpx.HTTPError as exc:
                        answers.append(type(exc).__name__)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(one, "busy", {"action": "sleep", "seconds": "60",
                                                     "mark": str(mark)})
                    with trio.fail_after(20):
                        while not mark.exists():
                            await trio.sleep(0.02)
                    nursery.start_soon(one, "crashy", {"action": "exit"})
            return answers

        answers = trio.run(crash_while_busy)
        proc.communicate(timeout=30)
        assert proc.returncode == 137, answers
        busy_pid = int(mark.read_text())
        deadline = time.monotonic() + 10
        while (_alive(busy_pid) or _alive(idle_pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(idle_pid), "the other model's idle worker outlived the server"
        assert not _alive(busy_pid), "a worker busy in handle() outlived the server"
    finally:
        _stop_everything(proc, tmp_path)
