"""Worker: one model process, its socket, and the batches it serves.

A Worker has its Launcher (djl/wlm/launch.py) start ``python -m djl.runtime`` — a local
subprocess over a socketpair, or a Ray actor that dials back — sends the init request
(djl/wlm/handshake.py), then serves: a BatchSession (djl/wlm/batches.py) takes batches
from its pool, sends them and hands each job its Output, or a RollingSession
(djl/wlm/rolling.py) for a text-generation model. Whatever ends the serving — the process
dying, a predict timeout, a corrupt frame, scale-down, unregister — the ``finally``
answers every job still in flight and stops the process (close the channel, grace, then
kill), shielded, so no process outlives its Worker. Only the start differs by placement;
this is the one code path.

The pool sees a Worker as a PooledWorker and feeds it as a BatchSource
(djl/wlm/seams.py); the class itself is the pool's default WorkerFactory.
"""

from __future__ import annotations

import datetime
import itertools
import logging
import math
import os
from collections import deque
from collections.abc import Callable

import trio

from djl import _batch
from djl.errors import DjlError, FrameError, ModelLoadError, WlmError, WorkerDied
from djl.signature import Signature
from djl.wlm import adapter_jobs
from djl.wlm.batches import BatchSession
from djl.wlm.devices import Device
from djl.wlm.frame_reader import next_frame
from djl.wlm.handshake import initialise
from djl.wlm.launch import LOCAL, Launcher, LaunchSpec, WorkerCommand, WorkerProcess
from djl.wlm.rolling import RollingSession
from djl.wlm.seams import BatchSource
from djl.wlm.states import ExitReason, WorkerState
from djl.wlm.statistics import WorkerStatistics

log = logging.getLogger("djl.worker")

#: How long the log forwarders may keep reading after the process has exited.
LOG_DRAIN_S = 1.0
#: /proc/<pid>/statm counts pages.
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

_worker_ids = itertools.count(1)


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
        #: Adapter jobs for this worker alone (djl/wlm/adapter_jobs.py), before any queued
        #: one; ``wake`` tells a rolling session's feeder that one came.
        self.control: deque[_batch.Job] = deque()
        self.wake: Callable[[], None] | None = None
        self.inflight: list[_batch.Job] = []
        #: How many jobs at the head of ``inflight`` the process is answering now; the
        #: rest are pipelined batches it has not started (0: all of them are current).
        self.answering = 0
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
        self.service_s = math.inf
        self._cancel_scope = trio.CancelScope()
        #: Around loading and serving: the launcher cancels it when the process died.
        self._serving = trio.CancelScope()

    @property
    def running(self) -> bool:
        return self.state is not WorkerState.STOPPED

    @property
    def label(self) -> str:
        return f"{self.source.model_id}/{self.id}"

    def post(self, job: _batch.Job) -> None:
        """An adapter job for this worker alone: sent before any queued job."""
        self.control.append(job)
        if self.wake is not None:
            self.wake()

    def kill(self) -> None:
        """Stop now: in-flight jobs are answered with ``Worker shutting down``."""
        self._cancel_scope.cancel()

    def retire(self) -> None:
        """Stop after the batch it holds (a BUSY worker is never killed), at once if none."""
        self.retiring = True
        if self.state is not WorkerState.BUSY:
            self.kill()

    def snapshot(self, *, rss: bool) -> WorkerStatistics:
        """What describe lists; ``rss``: with its resident memory (the metrics)."""
        state = "RETIRING" if self.running and self.retiring else self.state.value
        return WorkerStatistics(
            self.id, self.start_time, state, self.pid, self.requests,
            self.rss_bytes() if rss and self.running else None, self.node,
        )

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
                            self.signature = await initialise(
                                stream, decoder, process, self.source.command,
                                self.source.config)
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
            answering = self.answering or len(self.inflight)
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

    def max_frame(self) -> int:
        """The largest frame the server reads from this worker's process."""
        batch = max(1, self.source.config.batch_size)
        return min(_batch.MAX_FRAME, self.source.command.max_item_bytes * batch + (1 << 20))

    @staticmethod
    async def _next_frame(stream: trio.SocketStream, decoder: _batch.FrameDecoder
                          ) -> tuple[int, bytes]:
        """The rolling-batch session reads its frames through its worker (RollingWorker)."""
        return await next_frame(stream, decoder)

    async def _serve(self, stream: trio.SocketStream, decoder: _batch.FrameDecoder) -> None:
        command = self.source.command
        if command.rolling_batch_size > 0:
            await RollingSession(self, stream, decoder, command.rolling_batch_size).run()
        else:
            await BatchSession(self, stream, decoder).run()
        self.exit_reason = ExitReason.RETIRED

    def _fail_inflight(self, error: DjlError) -> None:
        jobs, self.inflight = self.inflight + list(self.control), []
        self.control.clear()
        for job in jobs:
            job.set_error(error)


__all__ = ["BatchSource", "ExitReason", "Worker", "WorkerCommand", "WorkerState"]
