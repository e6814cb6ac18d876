"""Worker: one model process, its socket, and the batches it serves.

A Worker has its Launcher (djl/wlm/launch.py) start ``python -m djl.runtime`` — a local
subprocess over a socketpair, or a Ray actor that dials back — sends the init request,
then loops: take a batch from its pool, send one frame, read the answer, hand each job
its Output. Whatever ends the loop — the process dying, a predict timeout, a corrupt
frame, scale-down, unregister — the ``finally`` answers every job still in flight and
stops the process (close the channel, grace, then kill), shielded, so no process
outlives its Worker. Only the start differs by placement; this is the one code path.
"""

from __future__ import annotations

import datetime
import itertools
import json
import logging
import math
import os
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

import trio

from djl import _batch
from djl.config import ModelConfig
from djl.errors import (
    ERROR_BAD_MODEL,
    ERROR_OOM,
    ERROR_OUTPUT,
    ITEM_ERROR_KINDS,
    DjlError,
    FrameError,
    ModelLoadError,
    OutputTooLarge,
    TranslateError,
    WlmError,
    WorkerDied,
)
from djl.io import Output, PairList
from djl.signature import SIGNATURE_PROPERTY, Signature
from djl.wlm import adapter_jobs
from djl.wlm.chunk_stream import ChunkStream
from djl.wlm.devices import Device
from djl.wlm.launch import LOCAL, STOP_GRACE_S, Launcher, LaunchSpec, WorkerCommand, WorkerProcess
from djl.wlm.states import ExitReason, WorkerState

log = logging.getLogger("djl.worker")

#: Only models answering faster than this pipeline: there the round trip matters.
PIPELINE_MAX_SERVICE_S = 0.005
#: How long the log forwarders may keep reading after the process has exited.
LOG_DRAIN_S = 1.0
#: Bound on a streamed response's chunks waiting for a slow HTTP client.
STREAM_BUFFER = 64
#: /proc/<pid>/statm counts pages.
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

_worker_ids = itertools.count(1)


class BatchSource(Protocol):
    """What a Worker needs from whoever feeds it: a WorkerPool, or a fake in tests.

    The worker takes batches, gives back the ones it could not start, and reports when it
    is ready and when it has answered a batch; it never reaches into the pool otherwise,
    and the source changes the worker only through ``Worker.hold``. Another kind of worker
    (a remote one) needs only this to be fed by the same pool.
    """

    model_id: str
    config: ModelConfig
    command: WorkerCommand

    async def take_batch(self, worker: Worker) -> list[_batch.Job] | None:
        """The next batch (maybe empty: ask again), or None when the worker should stop.
        Jobs are handed over with ``worker.hold`` as soon as they are taken."""
        ...

    def take_ready(self, worker: Worker, max_batches: int) -> list[list[_batch.Job]]:
        """Full batches to pipeline behind the one the worker holds (maybe none)."""
        ...

    def give_back(self, jobs: list[_batch.Job]) -> None:
        """Jobs the worker took and never started (it died): first in line again."""
        ...

    def worker_ready(self, worker: Worker) -> None:
        """The worker has loaded the model and serves."""
        ...

    def batch_done(self, worker: Worker) -> None:
        """The worker has answered a batch."""
        ...


def _init_detail(values: Sequence[bytes] | None) -> str:
    """What the failed init call said: the ``error`` of the runtime's JSON error body (the
    exception text) rather than the whole body, else the body as text."""
    text = b"".join(values or []).decode("utf-8", "replace")
    try:
        body = json.loads(text)
    except ValueError:
        return text
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"]
    return text


class Worker:
    """One model process, fed by a BatchSource (its WorkerPool); ``run`` is its whole life."""

    def __init__(self, source: BatchSource, device: Device, *, permanent: bool,
                 launcher: Launcher = LOCAL) -> None:
        self.id = next(_worker_ids)
        #: Starts its process: a local subprocess, or a Ray actor (djl/wlm/launch.py).
        self.launcher = launcher
        #: Where its batches come from (its WorkerPool); see BatchSource.
        self.source = source
        self.device = device
        #: Permanent workers make up the group's minimum; temporary ones retire when idle.
        self.permanent = permanent
        self.start_time = datetime.datetime.now(datetime.UTC)
        self.state = WorkerState.STARTING
        #: Set by the pool to ask this worker to stop after its current batch.
        self.retiring = False
        self.exit_reason: ExitReason | None = None
        #: Why it died or failed to load (None: it ended normally, or has not ended).
        self.failure: str | None = None
        self.stopped_at: float | None = None
        #: trio.current_time() of the last finished batch (or start): idle scale-down.
        self.last_active = trio.current_time()
        #: The jobs sent to the process and not yet answered.
        self.inflight: list[_batch.Job] = []
        #: How many jobs at the head of ``inflight`` the process is answering now; the
        #: rest are pipelined batches it has not started (0: all of them are current).
        self._answering = 0
        self.pid: int | None = None
        #: Where its process runs when not on this host (a Ray node), for describe.
        self.node: dict[str, str] | None = None
        #: What its engine reported of the model's inputs and outputs once loaded (None:
        #: nothing, e.g. a model.py handler).
        self.signature: Signature | None = None
        #: Requests answered (a job of a batch answered, with a result or an error).
        self.requests = 0
        #: True once the process has been reaped and its logs drained. Until then the
        #: worker occupies a slot of its group's max_workers even when STOPPED (see
        #: WorkerGroup.occupied).
        self.process_gone = False
        #: Moving average of seconds per batch in the process; unknown until measured.
        self._service_s = math.inf
        self._cancel_scope = trio.CancelScope()
        #: Around loading and serving: the launcher cancels it when the process died.
        self._serving = trio.CancelScope()
        #: Adapter jobs for this worker alone (djl/wlm/adapter_jobs.py), before any queued
        #: one; ``wake`` tells a rolling session's feeder that one came.
        self.control: deque[_batch.Job] = deque()
        self.wake: Callable[[], None] | None = None

    def post(self, job: _batch.Job) -> None:
        self.control.append(job)
        if self.wake is not None:
            self.wake()

    @property
    def running(self) -> bool:
        return self.state is not WorkerState.STOPPED

    @property
    def label(self) -> str:
        return f"{self.source.model_id}/{self.id}"

    def kill(self) -> None:
        """Stop now: in-flight jobs are answered with ``Worker shutting down``."""
        self._cancel_scope.cancel()

    def rss_bytes(self) -> int | None:
        """The process's resident memory now, from ``/proc/<pid>/statm`` (a read of a
        few bytes; no library needed). None before it starts, once it is gone, or where
        there is no procfs."""
        if self.pid is None or self.process_gone:
            return None
        try:
            with open(f"/proc/{self.pid}/statm", "rb") as statm:
                resident = statm.read().split()[1]
        except (OSError, IndexError):
            return None
        return int(resident) * PAGE_SIZE

    def hold(self, jobs: list[_batch.Job]) -> None:
        """The source hands over the jobs it took for this worker (BUSY from now on): if
        the worker stops while its batch still fills, ``run`` answers them."""
        self.inflight = jobs
        self.state = WorkerState.BUSY

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the process, load the model, serve until told to stop or the process dies.

        Raises ModelLoadError before ``task_status.started()`` if the model cannot load.
        Afterwards never raises: how it ended is in ``exit_reason``.
        """
        process: WorkerProcess | None = None
        failure: BaseException | None = None
        stopped = False
        try:
            with self._cancel_scope:
                try:
                    process = await self.launcher.start(LaunchSpec(
                        self.source.command, self.device.device_id, self.max_frame(),
                        self.label))
                except ModelLoadError as exc:
                    failure = exc
                    raise
                except Exception as exc:  # a launcher's bug: this worker fails to load
                    log.exception("worker %s could not be started", self.label)
                    failure = ModelLoadError(f"Cannot start the worker: {exc}")
                    raise failure from None
                self.pid, self.node = process.pid, process.node
                stream = process.stream
                decoder = _batch.FrameDecoder(max_frame=self.max_frame())
                # The log forwarders outlive the serving below, so the last lines a
                # crashing process writes (its traceback) still reach the log.
                async with trio.open_nursery() as logs:
                    process.supervise(logs, self._serving.cancel)
                    # Failures are caught inside the nursery body: trio would wrap them in
                    # an ExceptionGroup on the way out.
                    try:
                        # Cancelled when the launcher sees the process die by other means
                        # than the stream (a Ray actor's death): even an idle worker, which
                        # reads nothing, then ends at once and is replaced.
                        with self._serving:
                            await self._initialise(stream, decoder, process)
                            await adapter_jobs.sync(self, stream, decoder)
                            self.state = WorkerState.IDLE
                            self.last_active = trio.current_time()
                            task_status.started()
                            self.source.worker_ready(self)
                            await self._serve(stream, decoder)
                        if self._serving.cancelled_caught:
                            death = process.death or "the worker process died"
                            if self.state is WorkerState.STARTING:
                                raise ModelLoadError(f"Failed to initialize model: {death}")
                            raise WorkerDied(death)
                    except (ModelLoadError, WorkerDied, FrameError, trio.BrokenResourceError,
                            trio.ClosedResourceError) as exc:
                        failure = exc
                        if process.death is not None and not isinstance(exc, ModelLoadError):
                            failure = WorkerDied(process.death)  # the launcher knows better
                    except Exception as exc:  # a bug of ours: lose this worker, not the model
                        log.exception("worker %s failed unexpectedly", self.label)
                        failure = WorkerDied(f"Worker failed: {type(exc).__name__}: {exc}")
                    finally:
                        self._end(failure)
                        with trio.CancelScope(shield=True):
                            await process.stop(kill=self._broken)
                        stopped = True
                        logs.cancel_scope.deadline = trio.current_time() + LOG_DRAIN_S
        finally:
            if not stopped:  # the start itself failed or was cancelled
                self._end(failure)
                if process is not None:
                    with trio.CancelScope(shield=True):
                        await process.stop(kill=True)
            # The slot is freed only here, with no checkpoint left before the pool decides
            # on a restart (WorkerPool._run_slot): freed while the log forwarders drained,
            # it let a queued request start a scale-up beside the restart — one worker
            # over max_workers.
            self.process_gone = True
        if isinstance(failure, ModelLoadError):
            raise failure

    @property
    def _broken(self) -> bool:
        return self.exit_reason in (ExitReason.DIED, ExitReason.LOAD_FAILED)

    def _end(self, failure: BaseException | None) -> None:
        """Record how the worker ended and answer every job it still holds."""
        if failure is not None:
            self.failure = getattr(failure, "message", None) or str(failure) or type(
                failure).__name__
        if isinstance(failure, ModelLoadError):
            self.exit_reason = ExitReason.LOAD_FAILED
        elif failure is not None:
            self.exit_reason = ExitReason.DIED
            log.error("worker %s died: %s", self.label, failure)
            # Only the batch it was answering is lost with it (spec §5.6); pipelined batches
            # it never started go back to the head of the queue for another worker.
            answering = self._answering or len(self.inflight)
            unstarted, self.inflight = self.inflight[answering:], self.inflight[:answering]
            self.source.give_back(unstarted)
            self._fail_inflight(
                failure if isinstance(failure, DjlError) else WorkerDied(str(failure))
            )
        elif self.exit_reason is None:
            self.exit_reason = ExitReason.CANCELLED
        self.state = WorkerState.STOPPED
        self.stopped_at = trio.current_time()
        self._fail_inflight(WlmError.shutting_down())

    # -- start-up ----------------------------------------------------------------------
    def max_frame(self) -> int:
        """The largest frame the server reads from this worker's process."""
        batch = max(1, self.source.config.batch_size)
        return min(_batch.MAX_FRAME, self.source.command.max_item_bytes * batch + (1 << 20))

    async def _initialise(
        self, stream: trio.SocketStream, decoder: _batch.FrameDecoder, process: WorkerProcess
    ) -> None:
        command = self.source.command
        props = dict(command.init_properties)
        props["handler"] = command.handler
        try:
            await stream.send_all(_batch.encode_request(props, [], []))
            with trio.fail_after(self.source.config.model_loading_timeout_s):
                kind, payload = await self._next_frame(stream, decoder)
        except trio.TooSlowError:
            raise ModelLoadError(
                f"Model loading timed out after {self.source.config.model_loading_timeout_s:g}s"
            ) from None
        except FrameError as exc:
            raise ModelLoadError(f"Failed to initialize model: {exc.message}") from None
        except (WorkerDied, trio.BrokenResourceError, trio.ClosedResourceError):
            with trio.move_on_after(STOP_GRACE_S):
                await process.wait()
            why = f": {process.death}" if process.death else ""
            raise ModelLoadError(
                f"Python stream closed unexpectedly, exit code: {process.returncode}{why}"
            ) from None
        if kind == _batch.ERROR:
            error_kind, message = _batch.decode_error(payload)
            if error_kind == ERROR_OOM:
                raise ModelLoadError.out_of_memory()
            if error_kind == ERROR_BAD_MODEL:
                raise ModelLoadError.bad_model(message)
            raise ModelLoadError(f"Failed to initialize model: {message}")
        code, message, props, keys, values = _batch.decode_response(payload)
        if code == ModelLoadError.out_of_memory().status:
            raise ModelLoadError.out_of_memory()
        if code >= 300:
            raise ModelLoadError(
                f"Failed to initialize model: {message}: {_init_detail(values)}".rstrip(": ")
            )
        if SIGNATURE_PROPERTY in props:
            self.signature = Signature.decode(props[SIGNATURE_PROPERTY])

    # -- serving -----------------------------------------------------------------------
    async def _next_frame(
        self, stream: trio.SocketStream, decoder: _batch.FrameDecoder
    ) -> tuple[int, bytes]:
        while True:
            for frame in decoder:
                return frame
            data = await stream.receive_some(_batch.RECV_SIZE)
            if not data:
                raise WorkerDied("Python worker disconnected.")
            decoder.feed(data)

    async def _serve(self, stream: trio.SocketStream, decoder: _batch.FrameDecoder) -> None:
        """Take batches and answer them, until retired, cancelled or the process fails.

        Pipelining: for a fast model (mean service time under PIPELINE_MAX_SERVICE_S) the
        worker also sends up to ``pipeline_depth - 1`` full batches that are already queued,
        in the same write. The runtime answers strictly in order, so the process never
        waits for a round trip and the server makes fewer system calls per request; each
        request is still handled exactly as if sent alone. Slow models never pipeline, so
        a queued job is not held behind one while another worker frees up.
        """
        source = self.source
        if source.command.rolling_batch_size > 0:
            from djl.wlm.rolling import RollingSession  # it builds on this module

            await RollingSession(self, stream, decoder, source.command.rolling_batch_size).run()
            self.exit_reason = ExitReason.RETIRED
            return
        extra = {"handler": source.command.handler}
        timeout = source.config.predict_timeout_s
        while True:
            if self.control:
                await self._adapter_job(stream, decoder)
                continue
            batch = await source.take_batch(self)
            if batch is None:
                self.exit_reason = ExitReason.RETIRED
                return
            if not batch:  # every job's client left while it filled
                self.state = WorkerState.IDLE
                continue
            batches = [batch]
            depth = source.command.pipeline_depth
            if depth > 1 and self._service_s < PIPELINE_MAX_SERVICE_S:
                batches += source.take_ready(self, depth - 1)
            self.hold([job for b in batches for job in b])
            frames = _batch.encode_batch([job.input for job in batch], extra)
            for more in batches[1:]:
                frames += _batch.encode_batch([job.input for job in more], extra)
            started = trio.current_time()
            # The first batch is the one the process is on, from the moment it is sent: if
            # the write finds the process dead, the pipelined ones behind it are requeued.
            self._answering = len(batch)
            await stream.send_all(frames)
            for current in batches:
                self._answering = len(current)
                with trio.move_on_after(timeout) as scope:
                    kind, payload = await self._next_frame(stream, decoder)
                if scope.cancelled_caught:
                    raise WorkerDied(f"Prediction timed out after {timeout:g}s")
                if kind == _batch.RESPONSE:
                    await self._deliver(current, payload, stream, decoder)
                elif kind == _batch.RESULTS:
                    self._deliver_each(current, payload)
                else:
                    self._refused(current, kind, payload)
                del self.inflight[: len(current)]
                self.requests += len(current)
                now = trio.current_time()
                self._observe_service(now - started)
                started = now
                source.batch_done(self)
            self._answering = 0
            self.state = WorkerState.IDLE
            self.last_active = trio.current_time()

    async def _adapter_job(self, stream: trio.SocketStream,
                           decoder: _batch.FrameDecoder) -> None:
        job = self.control.popleft()
        self.hold([job])
        output = await adapter_jobs.call(self, stream, decoder, job.input,
                                         rolling_channel=False)
        job.set_result(output)
        self.inflight = []
        self.state = WorkerState.IDLE

    def _observe_service(self, seconds: float) -> None:
        """Moving average of the time the process takes per batch."""
        if self._service_s == math.inf:
            self._service_s = seconds
        else:
            self._service_s += 0.2 * (seconds - self._service_s)

    @staticmethod
    def _refused(batch: Sequence[_batch.Job], kind: int, payload: bytes) -> None:
        """The runtime answered a batch with an ERROR frame it recovers from (an output
        over the item limit): that batch fails, the worker serves on."""
        if kind != _batch.ERROR:
            raise FrameError(f"unexpected frame kind {kind} from worker")
        error_kind, message = _batch.decode_error(payload)
        if error_kind != ERROR_OUTPUT:
            raise FrameError(f"unexpected {error_kind} error from worker: {message}")
        error = OutputTooLarge(message)
        for job in batch:
            job.set_error(error)

    async def _deliver(
        self,
        batch: Sequence[_batch.Job],
        payload: bytes,
        stream: trio.SocketStream,
        decoder: _batch.FrameDecoder,
    ) -> None:
        code, message, props, keys, values = _batch.decode_response(payload)
        if keys is None:
            await self._relay_stream(batch, code, message, props, stream, decoder)
            return
        n = len(batch)
        if n == 1 or code >= 300:
            for job in batch:
                job.set_result(_output(code, message, props, keys, values))
            return
        try:
            items = _batch.split_batch(n, keys, values)
        except DjlError as exc:
            for job in batch:
                job.set_error(exc)
            return
        for job, (key, value) in zip(batch, items, strict=True):
            job.set_result(_output(code, message, props, [key], [value]))

    @staticmethod
    def _deliver_each(batch: Sequence[_batch.Job], payload: bytes) -> None:
        """A RESULTS frame: the engine answered each job on its own (its own code and
        headers, or an error such as a bad input), so one request's fault is its alone."""
        results = _batch.decode_results(payload)
        if len(results) != len(batch):
            error = TranslateError.batch_size_mismatch(len(batch), len(results))
            for job in batch:
                job.set_error(error)
            return
        for job, (kind, item) in zip(batch, results, strict=True):
            if kind == _batch.ERROR:
                error_kind, message = _batch.decode_error(item)
                job.set_error(ITEM_ERROR_KINDS.get(error_kind, WorkerDied)(message))
                continue
            code, message, props, keys, values = _batch.decode_response(item)
            if keys is None:
                job.set_error(WorkerDied("A streamed response cannot be batched"))
            else:
                job.set_result(_output(code, message, props, keys, values))

    async def _relay_stream(
        self,
        batch: Sequence[_batch.Job],
        code: int,
        message: str,
        props: dict[str, str],
        stream: trio.SocketStream,
        decoder: _batch.FrameDecoder,
    ) -> None:
        """Forward CHUNK frames to the job until the last one; a gone client is skipped."""
        send, receive = trio.open_memory_channel[bytes](STREAM_BUFFER)
        chunks = ChunkStream(receive)
        output = Output(code, message)
        output.properties.update(props)
        output.stream = chunks  # type: ignore[assignment]
        batch[0].set_result(output)
        for job in batch[1:]:
            job.set_error(WorkerDied("A streamed response cannot be batched"))
        timeout = self.source.config.predict_timeout_s
        # Its client may have left while the model ran: then nobody will ever read or close
        # the stream, so it is drained here instead of held for stream_send_timeout_s.
        abandoned = batch[0].cancelled
        async with send:
            try:
                while True:
                    with trio.move_on_after(timeout) as scope:
                        kind, payload = await self._next_frame(stream, decoder)
                    if scope.cancelled_caught:
                        raise WorkerDied(f"Stream chunk timed out after {timeout:g}s")
                    if kind != _batch.CHUNK:
                        raise FrameError(f"expected a stream chunk, got frame kind {kind}")
                    more, data = _batch.decode_chunk(payload)
                    if data and not abandoned:
                        abandoned = not await self._offer(send, chunks, data)
                    if not more:
                        return
            except BaseException as exc:
                chunks.cut_reason = getattr(exc, "message", None) or "Worker shutting down"
                raise

    async def _offer(self, send: trio.MemorySendChannel[bytes], chunks: ChunkStream,
                     data: bytes) -> bool:
        """Hand a chunk to the HTTP side. False once the client is gone, or when it has not
        taken a chunk within the stream timeout: then its stream is cut, so a client that
        stops reading cannot hold this worker."""
        with trio.move_on_after(self.source.command.stream_send_timeout_s):
            try:
                await send.send(data)
                return True
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return False
        log.warning("worker %s: the stream's reader stalled; dropping the rest", self.label)
        chunks.cut_reason = "The client did not read the stream in time"
        await send.aclose()
        return False

    def _fail_inflight(self, error: DjlError) -> None:
        jobs, self.inflight = self.inflight + list(self.control), []
        self.control.clear()
        for job in jobs:
            job.set_error(error)


def _output(
    code: int, message: str, props: dict[str, str], keys: list[str | None], values: list[bytes]
) -> Output:
    output = Output(code, message)
    output.properties = dict(props)
    output.content = PairList(zip(keys, values, strict=True))
    return output
