"""WorkerPool: one model's job queue, its worker groups, batching and scaling (spec §5).

Nursery layout (docs/architecture.md)::

    WorkerPool.run          the model's nursery; cancelling it means "unregister"
     └─ _keep_worker × n    one per worker slot: run a Worker, replace it if it died

Workers pull batches with ``take_batch`` (the aggregation rule of §5.5); the pool is
their BatchSource (djl/wlm/worker.py), the only way a worker sees it. Requests enter
with ``submit`` (§5.2, §5.3); a queue that grows past twice the batch size adds a
temporary worker (§5.4), which retires after ``max_idle_time`` idle. A worker that dies
is replaced with back-off while the model's failures stay within ``retry_threshold``;
past it the model is FAILED (§6.9).

Recycling: a worker that has answered ``max_worker_requests`` requests, or
whose resident memory passed ``max_worker_rss_mb``, is replaced: the replacement loads
first (the old worker serves meanwhile), then the old one retires, finishing the batch
it holds. A group may so hold one process more than ``max_workers`` for a moment.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio

from djl import _batch
from djl.config import MIB, RAY_DEVICE, ModelConfig, parse_int
from djl.errors import (
    BadRequest,
    DjlError,
    IllegalArgument,
    ModelLoadError,
    RayPlacement,
    WlmError,
    WlmShutdown,
    exception_leaves,
)
from djl.io import Input
from djl.metrics import ModelMetrics
from djl.signature import Signature
from djl.status import ModelStatus
from djl.wlm.devices import Device
from djl.wlm.launch import LOCAL, Launcher
from djl.wlm.worker import ExitReason, Worker, WorkerCommand, WorkerState

log = logging.getLogger("djl.wlm")

#: Stopped workers stay listed (and count for health) this long (spec §5.7).
STOPPED_LISTED_S = 60.0
#: Restart back-off after a crash: BASE × 2^(n-1), capped.
RESTART_BACKOFF_BASE_S = 0.2
RESTART_BACKOFF_MAX_S = 10.0
#: Longest wait between scale-ups that fail to load while other workers serve: each try is
#: a whole model load (a GPU out of memory, say), and nothing is down meanwhile.
SCALE_UP_BACKOFF_MAX_S = 60.0
#: A worker that lived this long before dying resets the back-off.
BACKOFF_RESET_S = 60.0
#: After a recycling replacement failed to load, the old worker serves on this long before
#: another replacement is tried (each try is a whole model load).
RECYCLE_RETRY_S = 30.0
#: The memory watch reads every worker's RSS at most this often, whatever the model says.
MIN_RSS_CHECK_INTERVAL_S = 0.05


@dataclass
class WorkerGroup:
    """The workers of one model on one device, with the group's bounds."""

    device: Device
    min_workers: int
    max_workers: int
    workers: list[Worker]

    def running(self) -> list[Worker]:
        """Workers alive and not retiring: starting or serving (what health counts)."""
        return [w for w in self.workers if w.running and not w.retiring]

    def permanent(self) -> list[Worker]:
        return [w for w in self.running() if w.permanent]

    def occupied(self) -> list[Worker]:
        """Workers whose process may still exist: what ``max_workers`` bounds. A worker that
        died is STOPPED at once but holds its slot until its process is reaped; counting
        only running workers let a submit start a temporary worker in that window, and
        the permanent replacement then passed max_workers."""
        return [w for w in self.workers if not w.process_gone]

    def purge(self, now: float) -> None:
        self.workers = [
            w
            for w in self.workers
            if w.stopped_at is None or now - w.stopped_at <= STOPPED_LISTED_S
        ]


@dataclass(frozen=True, slots=True)
class WorkerStatistics:
    """One listed worker, as describe and the metrics show it."""

    id: int
    start_time: datetime.datetime
    #: STARTING, IDLE, BUSY, RETIRING (still running, asked to stop) or STOPPED.
    state: str
    pid: int | None
    #: Requests it has answered.
    requests: int
    #: Resident memory now; None unless asked for (``statistics(rss=True)``) or gone.
    rss_bytes: int | None
    #: Where it runs when not on this host: its Ray node and actor.
    node: dict[str, str] | None = None

    @property
    def alive(self) -> bool:
        """Starting or serving: describe's READY (every other state is UNLOADING)."""
        return self.state in ("STARTING", "IDLE", "BUSY")


@dataclass(frozen=True, slots=True)
class GroupStatistics:
    device: Device
    min_workers: int
    max_workers: int
    workers: tuple[WorkerStatistics, ...]


@dataclass(frozen=True)
class PoolStatistics:
    """A frozen snapshot of a pool for describe, the metrics and benchmarks."""

    status: ModelStatus
    #: Whether every group has ``min_workers`` alive (see WorkerPool.healthy).
    healthy: bool
    queued: int
    queue_capacity: int
    running_workers: int
    idle_workers: int
    failures: int
    #: Why the latest worker death or failed load happened (None: none yet).
    last_failure: str | None
    batches: int
    jobs: int
    #: Workers started to replace one that died or failed to load.
    restarts: int
    #: Workers replaced on reaching max_worker_requests or max_worker_rss_mb.
    recycles: int
    groups: tuple[GroupStatistics, ...]
    #: The model's inputs and outputs as its engine reported them (WorkerPool.signature).
    signature: Signature | None = None

    @property
    def workers(self) -> tuple[WorkerStatistics, ...]:
        return tuple(w for g in self.groups for w in g.workers)

    @property
    def health(self) -> str:
        """Describe's and ``/ping``'s word for it (spec §2.6, §3.2)."""
        if self.status is not ModelStatus.READY:
            return self.status.value
        return "Healthy" if self.healthy else "Unhealthy"


class WorkerPool:
    """Everything that runs one model version: queue, groups, workers, scaler."""

    def __init__(
        self,
        model_id: str,
        version: str | None,
        config: ModelConfig,
        command: WorkerCommand,
        devices: Iterable[Device],
        *,
        fail_fast: bool = False,
        health_check_override: bool = False,
        metrics: ModelMetrics | None = None,
        launchers: Mapping[str, Launcher] | None = None,
    ) -> None:
        self.model_id = model_id
        #: Device type → how its workers start (a Ray placement's RayLauncher); a local
        #: process for every other type.
        self.launchers = dict(launchers or {})
        self.version = version
        self.config = config
        self.command = command
        self.queue = _batch.JobQueue(config.job_queue_size, model_id)
        self.groups: dict[Device, WorkerGroup] = {}
        for device in devices:
            lo, hi = config.workers_for(device.device_type)
            self.groups[device] = WorkerGroup(device, lo, hi, [])
        self.status = ModelStatus.PENDING
        #: Worker deaths (crash, timeout, failed reload) since registration (spec §6.9).
        self.failures = 0
        #: Why the latest of them happened: what describe shows of a FAILED model.
        self.last_failure: str | None = None
        self.fail_fast = fail_fast
        self.health_check_override = health_check_override
        #: Workers parked in next_batch wait here; every put wakes one.
        self._lot = trio.lowlevel.ParkingLot()
        self._idle = 0
        #: Worker slots on their way that are not listed yet: a scale-up scheduled with
        #: start_soon, or a crashed permanent worker in its restart back-off. While > 0
        #: no further scale-up starts, so a burst of submits cannot overshoot max_workers.
        self._pending_workers = 0
        #: After a scale-up worker failed to load: no new one before this time, and the
        #: back-off that set it (doubles per failure, reset by a scale-up that loads).
        self._scale_up_after = 0.0
        self._scale_up_backoff_s = 0.0
        self._scale_up_timer = False
        #: Set when unregister begins: no new jobs are accepted.
        self._closing = False
        self._scale_lock = trio.Lock()
        self._nursery: trio.Nursery | None = None
        self._cancel_scope = trio.CancelScope()
        self.closed = trio.Event()
        #: Made by aclose while it waits for in-flight batches; set once none is left.
        self._drained: trio.Event | None = None
        self._batches = 0
        self._jobs = 0
        #: Workers started to replace a dead one / recycled ones replaced (statistics()).
        self.restarts = 0
        self.recycles = 0
        #: Workers whose recycling replacement is loading; no second one starts for them.
        self._recycling: set[Worker] = set()
        #: After a recycling replacement failed to load: no new try before this time.
        self._recycle_after = 0.0
        #: This model's metric children (djl.metrics), or None when metrics are off.
        self.metrics = metrics
        #: The model's inputs and outputs (names, datatypes, shapes) as the engine of its
        #: first loaded worker reported them; None until then, or when the engine knows
        #: nothing (a model.py handler). Every worker loads the same files, so one is kept.
        self.signature: Signature | None = None
        #: Its LoRA adapters (djl/adapters.py ModelAdapters) when option.enable_lora=true;
        #: each worker registers them all before it serves.
        self.adapters: Any = None

    # -- lifecycle ---------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[WorkerPool] = trio.TASK_STATUS_IGNORED):
        """Load ``min`` workers per group, report ready, then serve until cancelled.

        A worker that cannot load raises ModelLoadError out of ``nursery.start``.
        """
        started = False
        try:
            with self._cancel_scope:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    for group in self.groups.values():
                        for _ in range(group.min_workers):
                            await nursery.start(partial(self._keep_worker, group,
                                                        permanent=True))
                    self.status = ModelStatus.READY
                    started = True
                    if self.config.max_worker_rss_mb > 0:
                        nursery.start_soon(self._watch_memory)
                    task_status.started(self)
                    await trio.sleep_forever()
        except BaseExceptionGroup as group:
            if not started:
                raise first_error(group) from None
            # A pool fails at its own boundary: its errors become its status, never the
            # server's crash. Cancellation (and KeyboardInterrupt, SystemExit) go on up.
            failed, rest = group.split(Exception)
            if failed is not None:
                log.error("model %s failed: %r", self.model_id, exception_leaves(failed))
                self.status = ModelStatus.FAILED
            if rest is not None:
                raise rest from None
        finally:
            self._closing = True
            self.queue.fail_all(WlmError.shutting_down())
            for launcher in self.launchers.values():
                launcher.close()
            self.closed.set()

    async def aclose(self, grace_s: float = 0.0) -> None:
        """Unregister: refuse new jobs, answer queued ones, let in-flight ones finish for
        up to ``grace_s``, then stop every worker and wait for the processes to exit."""
        self._closing = True
        self.queue.fail_all(WlmError.shutting_down())
        try:
            if grace_s > 0:
                self._drained = trio.Event()
                self._check_drained()
                with trio.move_on_after(grace_s):
                    await self._drained.wait()
        finally:
            # Even when the caller is cancelled during the grace period (a client hanging
            # up on DELETE), the workers stop: nobody could reach this pool again.
            self._cancel_scope.cancel()
            with trio.CancelScope(shield=True):
                await self.closed.wait()

    # -- requests ----------------------------------------------------------------------
    def submit(self, inputs: Input, priority: int = _batch.DEFAULT_PRIORITY,
               done: Any = None) -> _batch.Job:
        """Queue a job (spec §5.2) or raise: not ready, shut down, queue full (503s).
        ``done``: what the job sets when answered (a ``trio.Event`` unless given)."""
        if self.status is not ModelStatus.READY or self._closing:
            raise WlmError.not_ready(self.model_id)
        max_total = sum(g.max_workers for g in self.groups.values())
        if max_total == 0:
            raise WlmShutdown.all_workers(self.model_id)
        job = _batch.Job(inputs, priority, trio.Event() if done is None else done)
        if self.metrics is not None:
            job.enqueued_at = trio.current_time()
        try:
            self.queue.put_nowait(job, worker_idle=self._idle > 0)
        except DjlError:
            self._maybe_scale_up(force=True)
            raise
        self._jobs += 1
        self._lot.unpark()
        self._maybe_scale_up()
        return job

    def _check_drained(self) -> None:
        """During aclose's grace: wake it once no worker holds a job any more."""
        if self._drained is not None and not any(w.inflight for w in self.all_workers()):
            self._drained.set()

    # -- BatchSource: what a Worker calls ------------------------------------------------
    def give_back(self, jobs: list[_batch.Job]) -> None:
        """Jobs a dead worker held but never started: first in line again."""
        jobs = [job for job in jobs if not job.cancelled and not job.finished()]
        if not jobs:
            return
        if self._closing or self.status is not ModelStatus.READY:
            for job in jobs:
                job.set_error(WlmError.shutting_down())
            return
        self.queue.put_front(jobs)
        self._lot.unpark_all()

    def post(self, worker: Worker, inputs: Input) -> _batch.Job:
        """A job for ``worker`` alone, ahead of the queue (an adapter change)."""
        job = _batch.Job(inputs, _batch.DEFAULT_PRIORITY, trio.Event())
        worker.post(job)
        self._lot.unpark_all()  # a worker parked in take_batch comes back for it
        return job

    def loaded_workers(self) -> list[Worker]:
        """The workers that have loaded and serve (a starting one registers the adapters
        itself)."""
        return [w for w in self.all_workers()
                if w.state in (WorkerState.IDLE, WorkerState.BUSY)]

    def worker_ready(self, worker: Worker) -> None:
        """A worker finished loading: a burst may still need another one (spec §5.4),
        and scale-up only looks while no worker is starting."""
        if self.signature is None:
            self.signature = worker.signature
        self._maybe_scale_up()

    async def take_batch(self, worker: Worker) -> list[_batch.Job] | None:
        """The batch a worker should run next, or None when it should exit (spec §5.5).

        First job: permanent workers wait forever; temporary ones retire once idle for
        ``max_idle_time``. Then whatever is queued, then more within the remaining
        ``max_batch_delay``. Jobs whose client has gone are dropped.
        """
        size = self.config.batch_size
        while True:
            if worker.retiring or self._closing:
                return None
            if getattr(worker, "control", None):
                return []  # its adapter jobs first (Worker.post)
            batch = self.queue.take(size)
            if batch:
                # The jobs are the worker's from here on: if it is killed while the batch
                # fills, Worker.run's finally answers them (503) instead of losing them, and
                # scale-down lets it finish rather than kill it (BUSY is never killed).
                worker.hold(batch)
                break
            self._idle += 1
            try:
                if worker.permanent:
                    await self._lot.park()
                else:
                    idle_s = self.config.max_idle_time_s
                    with trio.move_on_after(idle_s):
                        await self._lot.park()
                    if trio.current_time() - worker.last_active >= idle_s and not self.queue:
                        log.info("worker %s idle for %ss: scaling down", worker.label, idle_s)
                        return None
            finally:
                self._idle -= 1
        if len(batch) < size:
            deadline = trio.current_time() + self.config.max_batch_delay_ms / 1000
            while len(batch) < size:
                more = self.queue.take(size - len(batch))
                if more:
                    batch.extend(more)
                    continue
                with trio.move_on_at(deadline) as scope:
                    await self._lot.park()
                if scope.cancelled_caught:
                    batch.extend(self.queue.take(size - len(batch)))
                    break
        batch = [job for job in batch if not job.cancelled]
        worker.hold(batch)
        if self.metrics is not None and batch:
            self.metrics.batch_taken(trio.current_time(), [job.enqueued_at for job in batch])
        return batch

    def take_ready(self, worker: Worker, max_batches: int) -> list[list[_batch.Job]]:
        """Full batches already queued that ``worker`` may pipeline behind the one it holds.

        None while another worker is idle (it would serve them in parallel), and never a
        partial batch (that one is due the aggregation rule of spec §5.5).
        """
        if self._idle > 0 or worker.retiring or self._closing:
            return []
        size = self.config.batch_size
        batches: list[list[_batch.Job]] = []
        while len(batches) < max_batches and len(self.queue) >= size:
            batch = [job for job in self.queue.take(size) if not job.cancelled]
            if batch:
                batches.append(batch)
        if self.metrics is not None and batches:
            now = trio.current_time()
            for batch in batches:
                self.metrics.batch_taken(now, [job.enqueued_at for job in batch])
        return batches

    def batch_done(self, worker: Worker) -> None:
        """A worker answered a batch (counted for statistics()); recycle it once it has
        answered ``max_worker_requests``."""
        self._batches += 1
        limit = self.config.max_worker_requests
        if limit and worker.requests >= limit:
            self._recycle(worker, f"{worker.requests} requests answered")
        self._check_drained()

    def discard(self, job: _batch.Job) -> None:
        """The client went away: a queued job is dropped, an in-flight one is ignored."""
        job.cancelled = True
        self.queue.discard(job)

    # -- scaling -----------------------------------------------------------------------
    def all_workers(self) -> list[Worker]:
        return [w for g in self.groups.values() for w in g.workers]

    def running_workers(self) -> list[Worker]:
        return [w for g in self.groups.values() for w in g.running()]

    def _maybe_scale_up(self, force: bool = False) -> None:
        """Add one temporary worker when the queue outgrows the workers (spec §5.4)."""
        if self._nursery is None or self._closing or self.status is not ModelStatus.READY:
            return
        # Checked first because it is the common case on every submit: a short queue and
        # some worker up (the generator stops at the first one).
        if not force and len(self.queue) <= 2 * self.config.batch_size and any(
            w.running and not w.retiring for g in self.groups.values() for w in g.workers
        ):
            return
        running = self.running_workers()
        if self._pending_workers or any(w.state is WorkerState.STARTING for w in running):
            return  # one scale-up at a time; the starting worker will take the load
        if trio.current_time() < self._scale_up_after:
            self._retry_scale_up_later(force=force)
            return
        best = max(
            self.groups.values(),
            key=lambda g: g.max_workers - len(g.occupied()),
            default=None,
        )
        if best is None or len(best.occupied()) >= best.max_workers:
            return
        log.info("scaling up %s on %s: %d queued", self.model_id, best.device, len(self.queue))
        self._pending_workers += 1
        self._nursery.start_soon(partial(self._keep_worker, best, permanent=False,
                                         pending=True))

    def _retry_scale_up_later(self, *, force: bool) -> None:
        """Scale-up is backing off: look again when the back-off ends, so queued jobs
        with no worker to take them are not left waiting for the next request."""
        if self._scale_up_timer or self._nursery is None:
            return
        self._scale_up_timer = True

        async def retry() -> None:
            try:
                await trio.sleep_until(self._scale_up_after)
            finally:
                self._scale_up_timer = False
            if self.queue:
                # Forced only while nothing serves; otherwise the usual queue-length rule.
                self._maybe_scale_up(force and not self.running_workers())

        self._nursery.start_soon(retry)

    def _scale_up_failed(self) -> None:
        self._scale_up_backoff_s = min(
            SCALE_UP_BACKOFF_MAX_S, max(RESTART_BACKOFF_BASE_S, 2 * self._scale_up_backoff_s)
        )
        self._scale_up_after = trio.current_time() + self._scale_up_backoff_s
        log.warning("scale-up of %s failed to load: next attempt in %.1fs at the earliest",
                    self.model_id, self._scale_up_backoff_s)

    async def scale(self, min_workers: int | None, max_workers: int | None,
                    device: Device | None = None) -> None:
        """Set group bounds and adjust permanent workers synchronously (spec §2.7).

        Serialised per pool: a second request must not retire a worker the first one is
        still starting.
        """
        async with self._scale_lock:
            if self._closing:
                raise WlmError.not_ready(self.model_id)
            await self._scale(min_workers, max_workers, device)

    async def _scale(self, min_workers: int | None, max_workers: int | None,
                     device: Device | None) -> None:
        if device is not None and device not in self.groups:
            if (device.device_type == RAY_DEVICE) != (RAY_DEVICE in self.launchers):
                # A placement is chosen at registration, with the files it needs shipped.
                raise RayPlacement.mixed()
            lo, hi = self.config.workers_for(device.device_type)
            self.groups[device] = WorkerGroup(device, lo, hi, [])
        targets = [self.groups[device]] if device is not None else list(self.groups.values())
        for group in targets:
            if min_workers is not None and min_workers >= 0:
                group.min_workers = min_workers
            if max_workers is not None and max_workers >= 0:
                group.max_workers = max_workers
            permanent = group.permanent()
            surplus = len(permanent) - group.min_workers
            # Idle workers go first, newest first, so busy ones finish their batch.
            for worker in sorted(permanent, key=lambda w: (w.state is WorkerState.BUSY, -w.id)):
                if surplus <= 0:
                    break
                self._retire(worker)
                surplus -= 1
            temporary = [w for w in group.running() if not w.permanent]
            excess = len(group.running()) - group.max_workers
            for worker in sorted(temporary, key=lambda w: w.state is WorkerState.BUSY):
                if excess <= 0:
                    break
                self._retire(worker)
                excess -= 1
            for _ in range(group.min_workers - len(group.permanent())):
                if self._closing or self._nursery is None:
                    # Unregistered while an earlier worker started: none may start now.
                    raise WlmError.not_ready(self.model_id)
                await self._nursery.start(partial(self._keep_worker, group, permanent=True))
        if sum(g.max_workers for g in self.groups.values()) == 0:
            # No worker may ever run again: queued jobs must not wait for one forever.
            self.queue.fail_all(WlmShutdown.all_workers(self.model_id))
        self._lot.unpark_all()

    def _retire(self, worker: Worker) -> None:
        worker.retiring = True
        if worker.state is not WorkerState.BUSY:
            worker.kill()

    # -- recycling ---------------------------------------------------------------------
    def _recycle(self, worker: Worker, why: str) -> None:
        """Replace ``worker``: its replacement loads first, then it retires."""
        if (worker in self._recycling or worker.retiring or not worker.running
                or self._closing or self._nursery is None
                or self.status is not ModelStatus.READY
                or trio.current_time() < self._recycle_after):
            return
        self._recycling.add(worker)
        self._nursery.start_soon(self._replace, worker, why)

    async def _replace(self, worker: Worker, why: str) -> None:
        group = self.groups.get(worker.device)
        try:
            if group is None or self._nursery is None:
                return
            log.info("recycling worker %s (%s): starting its replacement", worker.label, why)
            try:
                await self._nursery.start(partial(self._keep_worker, group,
                                                  permanent=worker.permanent))
            except ModelLoadError as exc:
                # The old worker still serves: better a worker over its limit than none.
                self._recycle_after = trio.current_time() + RECYCLE_RETRY_S
                log.error("recycling %s: the replacement failed to load (%s); it serves on, "
                          "next try in %ss", worker.label, exc.message, RECYCLE_RETRY_S)
                return
            if worker.running:
                self.recycles += 1
                log.info("worker %s recycled: its replacement serves", worker.label)
                self._retire(worker)
            self._lot.unpark_all()
        finally:
            self._recycling.discard(worker)

    async def _watch_memory(self) -> None:
        """Recycle a worker whose resident memory passed ``max_worker_rss_mb``."""
        limit = self.config.max_worker_rss_mb * MIB
        interval = max(MIN_RSS_CHECK_INTERVAL_S, self.config.worker_rss_check_interval_s)
        while True:
            await trio.sleep(interval)
            for worker in self.running_workers():
                if worker.state is WorkerState.STARTING or worker in self._recycling:
                    continue
                rss = worker.rss_bytes()
                if rss is not None and rss > limit:
                    self._recycle(worker, f"resident memory {rss / MIB:.0f} MiB > "
                                          f"{self.config.max_worker_rss_mb} MiB")

    async def _keep_worker(
        self, group: WorkerGroup, *, permanent: bool, pending: bool = False,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run one worker slot: start a worker, and replace it while it keeps dying.

        The first start's load failure propagates to the caller of ``nursery.start``.
        ``pending``: the slot was counted in ``_pending_workers`` by ``_maybe_scale_up``.
        """
        # Only a caller waiting in nursery.start hears about a failed first load; a slot
        # started with start_soon (a scale-up) handles it in _run_slot (back-off, and a
        # failure count only while nothing else serves).
        waited = task_status is not trio.TASK_STATUS_IGNORED
        cancelled = False
        try:
            await self._run_slot(group, task_status, permanent=permanent, pending=pending,
                                 waited=waited)
        except trio.Cancelled:
            cancelled = True
            raise
        finally:
            self._check_drained()
            # Jobs may still be queued with no worker left to take them (a temporary worker
            # died, min_workers is 0): start one rather than let them wait forever. Not when
            # the pool is being cancelled: the new slot would die and start another, forever.
            if self.queue and not self._closing and not cancelled:
                self._maybe_scale_up(force=not self.running_workers())

    async def _run_slot(
        self, group: WorkerGroup, task_status: trio.TaskStatus[None], *, permanent: bool,
        pending: bool, waited: bool,
    ) -> None:
        started = False
        restarts = 0
        while True:
            worker = Worker(self, group.device, permanent=permanent,
                            launcher=self.launchers.get(group.device.device_type, LOCAL))
            born = trio.current_time()
            group.purge(born)
            group.workers.append(worker)
            if pending:
                self._pending_workers -= 1  # listed (STARTING) from now on
                pending = False
            try:
                if started:
                    await worker.run()
                else:
                    await worker.run(task_status=task_status)
                    started = True
            except ModelLoadError as exc:
                if waited and not started:
                    raise
                log.error("worker %s failed to load: %s", worker.label, exc)
            finally:
                self._check_drained()  # its jobs are answered: aclose may be waiting
            started = True
            if not permanent:
                if worker.exit_reason is not ExitReason.LOAD_FAILED:
                    self._scale_up_backoff_s = 0.0  # it loaded: scale-ups work again
                else:
                    self._scale_up_failed()
                    if any(w.state in (WorkerState.IDLE, WorkerState.BUSY)
                           for w in self.running_workers()):
                        # Other workers serve the model: an extra one that cannot load
                        # (e.g. no memory for a second copy) is no reason to fail it.
                        return
            if worker.exit_reason not in (ExitReason.DIED, ExitReason.LOAD_FAILED):
                return
            self.last_failure = worker.failure
            if not self._record_failure():
                return
            if not permanent or len(group.permanent()) >= group.min_workers:
                return
            # A worker that served a good while before dying starts the back-off afresh.
            restarts = 1 if trio.current_time() - born >= BACKOFF_RESET_S else restarts + 1
            delay = min(RESTART_BACKOFF_MAX_S, RESTART_BACKOFF_BASE_S * 2 ** (restarts - 1))
            log.warning("restarting worker for %s in %.1fs", self.model_id, delay)
            self._pending_workers += 1  # the replacement is on its way: no scale-up for it
            try:
                await trio.sleep(delay)
            finally:
                self._pending_workers -= 1
            if self._closing or len(group.permanent()) >= group.min_workers:
                return
            self.restarts += 1

    def _record_failure(self) -> bool:
        """Count a worker death; False once the model has turned FAILED (spec §6.9)."""
        self.failures += 1
        if self.health_check_override or self.failures <= self.config.retry_threshold:
            return True
        log.error(
            "model %s FAILED: %d worker failures exceed retry_threshold=%d",
            self.model_id, self.failures, self.config.retry_threshold,
        )
        if self.fail_fast:
            log.critical("SERVING_FAIL_FAST is set: exiting with status 137")
            os._exit(137)
        self.status = ModelStatus.FAILED
        self.queue.fail_all(WlmError.not_ready(self.model_id))
        for worker in self.running_workers():
            worker.retiring = True
        self._lot.unpark_all()
        return False

    # -- health and statistics ---------------------------------------------------------
    def healthy(self) -> bool:
        """Every group has at least ``min_workers`` workers alive, starting or serving
        (spec §3.2).

        Stopped and retiring workers stay listed for describe (spec §5.7) but never count:
        DJL counts them for 60 s, so a model whose replacements all failed to load kept
        reporting Healthy, and a load balancer kept sending it traffic.
        """
        return all(len(g.running()) >= g.min_workers for g in self.groups.values())

    def statistics(self, *, rss: bool = False) -> PoolStatistics:
        """The snapshot describe renders (stale stopped workers purged first, spec §5.7);
        ``rss``: also read each running worker's resident memory (the metrics)."""
        now = trio.current_time()
        groups = []
        for group in self.groups.values():
            group.purge(now)
            groups.append(GroupStatistics(
                group.device, group.min_workers, group.max_workers,
                tuple(_worker_statistics(w, rss) for w in group.workers),
            ))
        return PoolStatistics(
            status=self.status,
            healthy=self.healthy(),
            queued=len(self.queue),
            queue_capacity=self.queue.capacity,
            running_workers=len(self.running_workers()),
            idle_workers=self._idle,
            failures=self.failures,
            last_failure=self.last_failure,
            batches=self._batches,
            jobs=self._jobs,
            restarts=self.restarts,
            recycles=self.recycles,
            groups=tuple(groups),
            signature=self.signature,
        )


def _worker_statistics(worker: Worker, rss: bool) -> WorkerStatistics:
    state = worker.state.value
    if worker.running and worker.retiring:
        state = "RETIRING"
    return WorkerStatistics(
        worker.id, worker.start_time, state, worker.pid, worker.requests,
        worker.rss_bytes() if rss and worker.running else None, worker.node,
    )


def priority_of(inputs: Input) -> int:
    """The ``x-priority`` property (spec §3.4): an int, default DEFAULT_PRIORITY, lower runs
    first."""
    value = inputs.get_property("x-priority")
    try:
        return parse_int(value, _batch.DEFAULT_PRIORITY)  # type: ignore[return-value]
    except IllegalArgument:
        raise BadRequest(f"Invalid x-priority: {value}") from None


def first_error(group: BaseExceptionGroup) -> BaseException:
    """The error to report from a nursery's group: a DjlError if there is one.

    Cancellation is never hidden: a group holding trio.Cancelled is re-raised whole.
    """
    cancelled, rest = group.split(trio.Cancelled)
    if cancelled is not None:
        return group
    for exc in exception_leaves(group):
        if isinstance(exc, DjlError):
            return exc
    return group
