"""Workers on a Ray cluster; the one module of djl that imports ``ray``.

A model registered with ``load_on_devices=ray`` gets a ``RayLauncher``: each of its workers
is a Ray actor (``RuntimeActor``) that runs the same runtime, ``djl.runtime``, in the
actor's own process, and speaks the same frames over a TCP connection it dials back to
this server. Ray places the actor (``option.ray_num_cpus``, ``ray_num_gpus``,
``ray_resources``; replicas spread over the nodes) and reports its death; djl keeps the
queue, the batcher and the API, and the Worker drives the connection exactly as it drives
a local socketpair (djl/wlm/worker.py).

Why frames over a dial-back and not one actor call per batch: bench/ray_datapath.py
measured both on one run (see README, "Ray"); the actor call costs several times more per
batch and cannot stream chunks or pipeline batches the way the runtime's frames do.

Starting a worker: open a one-shot listener, create the actor, ``prepare`` (the model's
files reach the node as one tar in Ray's object store, ``ray.put`` once per model, which
the actor extracts into its own temp dir with djl.archive's safe extraction and limits),
then ``serve``, which dials ``host:port`` and sends the worker's secret first; a
connection that does not send it is dropped. ``ray_placement_timeout`` bounds all of it.
The actor's ``serve`` ObjectRef is watched too: an actor (or its node) that dies without
the connection noticing still ends the worker at once.

Every blocking Ray call (``ray.init``, actor creation, ``ray.get``, ``ray.kill``) runs in
``trio.to_thread`` under a timeout, so the event loop never waits on the cluster.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import socket
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any, TypeVar

import ray
import trio

from djl.archive import Limits
from djl.config import RayResources, ServerConfig
from djl.errors import ModelLoadError
from djl.wlm.launch import STOP_GRACE_S, LaunchSpec
from djl.wlm.ray_files import ModelCopy, pack_model_dir

log = logging.getLogger("djl.ray")

T = TypeVar("T")

#: How long a dialled-back connection may take to send its secret.
SECRET_TIMEOUT_S = 5.0

_connect_lock = threading.Lock()
#: The address this process's ``ray.init`` connected to (Ray allows one per process).
_connected: str | None = None


async def _blocking(timeout_s: float, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn`` in a thread, given up after ``timeout_s`` (TooSlowError): a cluster that does
    not answer must not hold the event loop or the caller forever."""
    with trio.fail_after(timeout_s):
        return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs),
                                             abandon_on_cancel=True)


def _probe(address: str, timeout_s: float) -> None:
    """A TCP connect to the GCS ``host:port``: ``ray.init`` retries an address that
    refuses for a long while, this answers in one round trip."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ModelLoadError.ray_unreachable(address, "expected auto or host:port")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ModelLoadError.ray_unreachable(address, str(exc) or type(exc).__name__) from None


def _connect(address: str, timeout_s: float) -> None:
    global _connected
    with _connect_lock:
        if address != "auto":
            _probe(address, timeout_s)
        if ray.is_initialized():
            if _connected not in (None, address) and address != "auto":
                raise ModelLoadError.ray_unreachable(
                    address, f"this server is already connected to the Ray cluster at "
                             f"{_connected}")
            return
        try:
            ray.init(address=address, logging_level=logging.WARNING,
                     configure_logging=False, log_to_driver=True)
        except Exception as exc:  # noqa: BLE001 — ConnectionError, ValueError, RuntimeError...
            raise ModelLoadError.ray_unreachable(address, f"{type(exc).__name__}: {exc}") from None
        _connected = address


@dataclass(frozen=True)
class RayPlacementSettings:
    """What a RayLauncher needs of the server's configuration."""

    address: str
    callback_host: str
    connect_timeout_s: float
    placement_timeout_s: float
    limits: Limits

    @classmethod
    def of(cls, server: ServerConfig) -> RayPlacementSettings:
        return cls(server.ray_address, server.ray_callback_host, server.ray_connect_timeout_s,
                   server.ray_placement_timeout_s,
                   Limits(server.archive_max_bytes, server.archive_max_entries,
                          server.archive_max_ratio))


class RayLauncher:
    """Starts one model's workers as Ray actors (see the module docstring)."""

    def __init__(self, settings: RayPlacementSettings, resources: RayResources,
                 callback_host: str, archive: ray.ObjectRef) -> None:
        self.settings = settings
        self.resources = resources
        self.callback_host = callback_host
        #: The model's files in the object store, shared by all its actors.
        self._archive: ray.ObjectRef | None = archive

    @classmethod
    async def open(cls, settings: RayPlacementSettings, resources: RayResources,
                   model_dir: Path) -> RayLauncher:
        """Connect to the cluster (bounded), then put the model's files in its object store.
        ModelLoadError when the cluster cannot be reached within ray_connect_timeout."""
        timeout = settings.connect_timeout_s
        try:
            await _blocking(timeout, _connect, settings.address, timeout)
            host = settings.callback_host or await _blocking(
                timeout, ray.util.get_node_ip_address)
            archive = await trio.to_thread.run_sync(
                pack_model_dir, model_dir, settings.limits.max_bytes)
            ref = await _blocking(timeout, ray.put, archive)
        except trio.TooSlowError:
            raise ModelLoadError.ray_unreachable(
                settings.address, f"no answer within {timeout:g}s (ray_connect_timeout)"
            ) from None
        return cls(settings, resources, host, ref)

    def close(self) -> None:
        """The model is gone: its files may leave the object store."""
        self._archive = None

    async def start(self, spec: LaunchSpec) -> RayProcess:
        settings = self.settings
        family = socket.AF_INET6 if ":" in self.callback_host else socket.AF_INET
        listener = trio.socket.socket(family, socket.SOCK_STREAM)
        actor = None
        try:
            try:
                await listener.bind((self.callback_host, 0))
            except OSError as exc:
                raise ModelLoadError(f"Cannot listen on ray_callback_host "
                                     f"{self.callback_host} for the worker to dial back: "
                                     f"{exc}") from None
            listener.listen(4)
            port = listener.getsockname()[1]
            secret = secrets.token_hex(16)
            host = f"[{self.callback_host}]" if family == socket.AF_INET6 else self.callback_host
            args = self._runtime_args(spec) + [
                "--connect", f"{host}:{port}", "--secret", secret,
                "--connect-timeout", str(settings.connect_timeout_s)]
            with trio.fail_after(settings.placement_timeout_s):
                actor = await trio.to_thread.run_sync(self._create_actor)
                prepare = await trio.to_thread.run_sync(
                    lambda: actor.prepare.remote(self._archive, astuple(settings.limits)))
                node = await trio.to_thread.run_sync(
                    lambda: ray.get(prepare, timeout=settings.placement_timeout_s),
                    abandon_on_cancel=True)
                serve = await trio.to_thread.run_sync(
                    lambda: actor.serve.remote(args, dict(spec.command.env)))
                process = RayProcess(actor, serve, node, settings.connect_timeout_s)
                await process.connect(listener, secret)
            return process
        except trio.TooSlowError:
            await _kill(actor, settings.connect_timeout_s)
            raise ModelLoadError.ray_placement(str(self.resources),
                                               settings.placement_timeout_s) from None
        except ray.exceptions.RayError as exc:
            await _kill(actor, settings.connect_timeout_s)
            raise ModelLoadError(f"The Ray worker failed to start: {_first_line(exc)}"
                                 ) from None
        except BaseException:
            await _kill(actor, settings.connect_timeout_s)
            raise
        finally:
            listener.close()

    def _runtime_args(self, spec: LaunchSpec) -> list[str]:
        command = spec.command
        entry = command.entry_point
        if os.path.isabs(entry):  # a URL naming a .py file: the copy has it at the same place
            entry = os.path.relpath(entry, command.model_dir)
        device_id = 0 if self.resources.num_gpus > 0 else -1  # Ray sets CUDA_VISIBLE_DEVICES
        return command.runtime_args(entry, device_id, spec.max_frame)

    def _create_actor(self) -> Any:
        resources = self.resources
        return RuntimeActor.options(
            num_cpus=resources.num_cpus, num_gpus=resources.num_gpus,
            resources=dict(resources.custom) or None,
            # Replicas on different nodes: losing one node loses as few workers as can be.
            scheduling_strategy="SPREAD", max_restarts=0, max_task_retries=0,
        ).remote()


class RayProcess:
    """A worker's actor, as its Worker sees it (a WorkerProcess, djl/wlm/launch.py)."""

    pid = None

    def __init__(self, actor: Any, serve: ray.ObjectRef, node: dict[str, str],
                 timeout_s: float) -> None:
        self._actor = actor
        self._timeout_s = timeout_s
        self.node = {**node, "actorId": actor._actor_id.hex()}
        self.death: str | None = None
        self.stream: trio.SocketStream = None  # type: ignore[assignment] — set by connect
        self._returncode: int | None = None
        self._ended = trio.Event()
        token = trio.lowlevel.current_trio_token()
        # The serve call returns when the runtime exits; it fails when the actor dies (a
        # kill, a crash, its node gone), which a half-open connection might never show.
        future: Future = serve.future()

        def ended(done: Future) -> None:
            try:
                token.run_sync_soon(self._on_end, done)
            except trio.RunFinishedError:
                pass

        future.add_done_callback(ended)

    def _on_end(self, done: Future) -> None:
        try:
            self._returncode = done.result()
        except BaseException as exc:  # noqa: BLE001 — ActorDiedError and kin: why it died
            self.death = f"Ray actor died: {_first_line(exc)}"
        self._ended.set()

    async def connect(self, listener: trio.socket.SocketType, secret: str) -> None:
        """Accept the dial-back that sends ``secret``; ModelLoadError if the actor ended
        before it dialled."""
        async with trio.open_nursery() as nursery:
            async def watch() -> None:
                await self._ended.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            self.stream = await _accept(listener, secret)
            nursery.cancel_scope.cancel()
        if self.stream is None:
            raise ModelLoadError(
                f"The Ray worker ended before it connected back: "
                f"{self.death or f'exit code {self._returncode}'}")

    @property
    def returncode(self) -> int | None:
        return self._returncode

    def supervise(self, nursery: trio.Nursery, died: Callable[[], None]) -> None:
        nursery.start_soon(self._watch, died)

    async def _watch(self, died: Callable[[], None]) -> None:
        await self._ended.wait()
        if self.death is not None:
            # An idle worker reads nothing, and a connection to a node that vanished drops
            # only once TCP gives up: Ray's word ends the worker now.
            died()

    async def wait(self) -> None:
        await self._ended.wait()

    async def stop(self, *, kill: bool) -> None:
        try:
            await self.stream.aclose()
        except Exception:  # noqa: BLE001 — closing a dead socket may fail; the actor matters
            pass
        if not kill:  # the runtime exits on EOF and its actor removes the model's copy
            with trio.move_on_after(STOP_GRACE_S):
                await self._ended.wait()
        await _kill(self._actor, self._timeout_s)
        self._ended.set()  # nothing left to watch: the death watch ends with the worker


async def _accept(listener: trio.socket.SocketType, secret: str) -> trio.SocketStream:
    expected = secret.encode("ascii") + b"\n"
    while True:
        conn, peer = await listener.accept()
        stream = trio.SocketStream(conn)
        received = b""
        with trio.move_on_after(SECRET_TIMEOUT_S):
            while len(received) < len(expected) and b"\n" not in received:
                data = await stream.receive_some(len(expected) - len(received))
                if not data:
                    break
                received += data
        if hmac.compare_digest(received, expected):
            return stream
        log.warning("dropped a connection from %s: not the worker expected", peer)
        await stream.aclose()


async def _kill(actor: Any, timeout_s: float) -> None:
    """``ray.kill`` the actor, bounded and shielded: no actor may outlive its Worker."""
    if actor is None:
        return
    with trio.CancelScope(shield=True):
        try:
            await _blocking(timeout_s, ray.kill, actor, no_restart=True)
        except trio.TooSlowError:
            log.error("ray.kill of actor %s took over %gs", actor, timeout_s)
        except Exception as exc:  # noqa: BLE001 — already dead, or the cluster is gone
            log.debug("ray.kill: %r", exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]


# -- the actor (runs on the node) --------------------------------------------------------------


class _RuntimeActor:
    """One worker on a Ray node: the model's files in a temp dir it owns (``ModelCopy``),
    then the runtime."""

    def __init__(self) -> None:
        self._copy = ModelCopy()

    def prepare(self, archive: bytes, limits: tuple[int, int, int]) -> dict[str, str]:
        self._copy.unpack(archive, limits)
        context = ray.get_runtime_context()
        return {"nodeId": context.get_node_id(), "ip": ray.util.get_node_ip_address(),
                "pid": str(os.getpid())}

    def serve(self, args: list[str], env: dict[str, str]) -> int:
        """Run the runtime until the server closes the connection (or the model fails)."""
        from djl.runtime.__main__ import main

        assert self._copy.dir is not None, "prepare first"
        os.environ.update(env)
        try:
            return main([*args, "--model-dir", str(self._copy.dir / "model")])
        finally:
            os.chdir(tempfile.gettempdir())
            self._copy.remove()


RuntimeActor = ray.remote(_RuntimeActor)
