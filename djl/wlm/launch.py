"""Launchers: how a Worker gets its model process and a byte stream to it.

Starting the process is the one step that differs by placement; everything after it (the
init call, serving, relaying streams, answering jobs when it dies) is ``Worker``'s, one
code path. A ``Launcher`` starts a ``WorkerProcess``: a ``trio.SocketStream`` speaking
the frames of djl/_batch.pyx, plus what it takes to watch and stop the process.

``LocalLauncher`` (every device but ``ray``): ``python -m djl.runtime --fd N`` over a
socketpair, in its own session, its stdout/stderr forwarded to the log line by line.
Stopping is what ``trio.run_process`` does: close the channel (the runtime exits on EOF),
grace, SIGTERM, SIGKILL, wait. The Ray launcher (djl/wlm/ray_launcher.py, imported only
for a Ray placement) starts an actor that dials back over TCP instead.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import trio

from djl.config import ServerConfig
from djl.errors import ModelLoadError

log = logging.getLogger("djl.worker")

#: How long a process gets to exit by itself after its channel closes, then after SIGTERM.
STOP_GRACE_S = 2.0
#: A worker's output line longer than this is logged in pieces (bounded memory).
MAX_LOG_LINE = 64 * 1024


@dataclass(frozen=True)
class WorkerCommand:
    """How to start a model's worker process."""

    python: str
    model_dir: Path
    entry_point: str
    init_properties: dict[str, str]
    handler: str = "handle"
    env: dict[str, str] = field(default_factory=dict)
    log_level: str = "info"
    max_item_bytes: int = ServerConfig.max_worker_item_bytes
    #: Batches in flight at once for a fast model (ServerConfig.pipeline_depth).
    pipeline_depth: int = ServerConfig.pipeline_depth
    #: Longest a streamed chunk waits for the HTTP side to take it (chunked_read_timeout).
    stream_send_timeout_s: float = ServerConfig.chunked_read_timeout_s
    #: The runtime engine that serves the model: ``Python`` (model.py) or ``PyTorch``.
    engine: str = "Python"
    #: torch intra-op threads per worker (PyTorch engine; 0 leaves torch's default).
    num_threads: int = 0

    def argv(self, fd: int, device_id: int, max_frame: int) -> list[str]:
        """``max_frame``: the largest frame the server reads from this worker; the runtime
        refuses to write a larger one (it answers the batch with an ERROR frame instead)."""
        return [
            self.python or sys.executable, "-m", "djl.runtime",
            "--fd", str(fd),
            "--model-dir", str(self.model_dir),
            *self.runtime_args(self.entry_point, device_id, max_frame),
        ]

    def runtime_args(self, entry_point: str, device_id: int, max_frame: int) -> list[str]:
        """The runtime's arguments after its channel and model directory (a Ray actor adds
        its own: ``--connect`` and the node-local copy of the model)."""
        return [
            "--entry-point",
            entry_point,
            "--device-id",
            str(device_id),
            "--log-level",
            self.log_level,
            "--max-item-bytes",
            str(self.max_item_bytes),
            "--max-frame-bytes",
            str(max_frame),
            "--engine",
            self.engine,
            "--num-threads",
            str(self.num_threads),
        ]


@dataclass(frozen=True)
class LaunchSpec:
    """What a launcher needs to start one worker's process (a value: no launcher reads
    the Worker itself)."""

    command: WorkerCommand
    #: The device index the runtime uses (-1: the CPU).
    device_id: int
    #: The largest frame the server reads from this worker; the runtime refuses to write
    #: a larger one.
    max_frame: int
    #: The worker's name in log lines.
    label: str


class WorkerProcess(Protocol):
    """A started model process, as its Worker sees it."""

    #: The frames channel.
    stream: trio.SocketStream
    #: Its pid on this host (None when it runs elsewhere: no /proc to read).
    pid: int | None
    #: Where it runs, for describe (None for a local process).
    node: dict[str, str] | None
    #: Why it ended, when the launcher saw it die some other way than through the stream
    #: (a Ray actor's death); None otherwise.
    death: str | None

    @property
    def returncode(self) -> int | None:
        """Its exit status once known."""
        ...

    def supervise(self, nursery: trio.Nursery, died: Callable[[], None]) -> None:
        """Start what watches it (log forwarders, a death watch) in the Worker's nursery;
        they may outlive the serving, so the last lines of a crash still reach the log.
        ``died``: to call when it is seen dead other than through the stream (with
        ``death`` set); a local process is seen dead through its socket alone."""
        ...

    async def wait(self) -> None:
        """Until the process has ended (callers bound it)."""
        ...

    async def stop(self, *, kill: bool) -> None:
        """Close the channel and end the process; ``kill``: it is broken, no grace."""
        ...


class Launcher(Protocol):
    async def start(self, spec: LaunchSpec) -> WorkerProcess:
        """Start the process ``spec`` describes; ModelLoadError if it cannot be started. Whatever
        was started is stopped again if this fails or is cancelled."""
        ...

    def close(self) -> None:
        """Its model is gone (every worker has stopped): free what it holds."""
        ...


class LocalLauncher:
    """A subprocess on this host, over a socketpair."""

    async def start(self, spec: LaunchSpec) -> LocalProcess:
        command = spec.command
        try:
            # Out of file descriptors (EMFILE) lands here too: a load failure of this
            # worker, never an error that escapes the pool.
            channel, child = socket.socketpair()
        except OSError as exc:
            raise ModelLoadError(f"Cannot start the worker process: {exc}") from None
        try:
            process = await trio.lowlevel.open_process(
                command.argv(child.fileno(), spec.device_id, spec.max_frame),
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=-1,
                stderr=-1,
                cwd=str(command.model_dir),
                env=_environment(command),
                start_new_session=True,
            )
        except BaseException as exc:
            channel.close()
            if isinstance(exc, OSError):  # option.pythonExecutable missing, no fds
                raise ModelLoadError(f"Cannot start the worker process: {exc}") from None
            raise
        finally:
            child.close()
        return LocalProcess(spec.label, process,
                            trio.SocketStream(trio.socket.from_stdlib_socket(channel)))

    def close(self) -> None:
        pass


#: Stateless: every local worker shares it.
LOCAL = LocalLauncher()


def _environment(command: WorkerCommand) -> dict[str, str]:
    env = dict(os.environ)
    paths = [p for p in (env.get("PYTHONPATH"), str(command.model_dir)) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(command.env)
    return env


class LocalProcess:
    node = None
    death = None

    def __init__(self, label: str, process: trio.Process, stream: trio.SocketStream
                 ) -> None:
        self._label = label
        self._process = process
        self.pid: int | None = process.pid
        self.stream = stream

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    def supervise(self, nursery: trio.Nursery, died: Callable[[], None]) -> None:
        nursery.start_soon(self._forward_logs, self._process.stdout, logging.INFO)
        nursery.start_soon(self._forward_logs, self._process.stderr, logging.WARNING)

    async def wait(self) -> None:
        await self._process.wait()

    async def stop(self, *, kill: bool) -> None:
        try:
            await self.stream.aclose()
        except Exception:  # noqa: BLE001 — closing a dead socket may fail; the process matters
            pass
        process = self._process
        if kill and process.returncode is None:
            self._signal(signal.SIGKILL)
        with trio.move_on_after(STOP_GRACE_S):
            await process.wait()
            return
        self._signal(signal.SIGTERM)
        with trio.move_on_after(STOP_GRACE_S):
            await process.wait()
            return
        self._signal(signal.SIGKILL)
        await process.wait()

    def _signal(self, sig: int) -> None:
        # The process leads its own session: signal the group so its children go too.
        try:
            os.killpg(self._process.pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                self._process.send_signal(sig)
            except ProcessLookupError:
                pass

    async def _forward_logs(self, pipe: trio.abc.ReceiveStream | None, level: int) -> None:
        if pipe is None:
            return
        pending = b""
        try:
            async for data in pipe:
                # \r too: progress bars redraw one line forever without a newline.
                pending += data.replace(b"\r", b"\n")
                *lines, pending = pending.split(b"\n")
                if len(pending) > MAX_LOG_LINE:
                    lines.append(pending)
                    pending = b""
                for line in lines:
                    if line:
                        log.log(level, "[%s] %s", self._label, line.decode("utf-8", "replace"))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        if pending:
            log.log(level, "[%s] %s", self._label, pending.decode("utf-8", "replace"))
