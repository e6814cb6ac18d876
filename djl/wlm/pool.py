"""WorkerPool: one model's job queue, its worker groups, batching and scaling (spec §5).

Nursery layout (docs/architecture.md)::

    WorkerPool.run          the model's nursery; cancelling it means "unregister"
     └─ _keep_worker × n    one per worker slot: run a worker, replace it if it died

The pool is the composition of one job per module:

* djl/wlm/dispatch.py — the queue and the batching rule (``take_batch``, spec §5.5);
* djl/wlm/slots.py — worker slots: start, restart with back-off, failures (§6.9);
* djl/wlm/scaling.py — group bounds (§2.7) and scale-up with the queue (§5.4);
* djl/wlm/recycling.py — replacing workers past their request or memory limit;
* djl/wlm/groups.py, statistics.py — the groups, and the snapshots describe reads.

Workers are made by the pool's WorkerFactory (``Worker`` unless given another) and seen
only as PooledWorkers; the pool is their BatchSource (djl/wlm/seams.py), the only way a
worker sees it. Requests enter with ``submit`` (§5.2, §5.3); a queue that grows past twice
the batch size adds a temporary worker, which retires after ``max_idle_time`` idle.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from functools import partial
from typing import Any

import trio

from djl import _batch
from djl.config import ModelConfig, parse_int
from djl.errors import (
    BadRequest,
    DjlError,
    IllegalArgument,
    WlmError,
    WlmShutdown,
    exception_leaves,
)
from djl.io import Input
from djl.metrics import ModelMetrics
from djl.signature import Signature
from djl.status import ModelStatus
from djl.wlm.devices import Device
from djl.wlm.dispatch import JobDispatch
from djl.wlm.groups import WorkerGroup
from djl.wlm.launch import Launcher, WorkerCommand
from djl.wlm.recycling import Recycling
from djl.wlm.scaling import Scaling
from djl.wlm.seams import PooledWorker, WorkerFactory
from djl.wlm.slots import WorkerSlots
from djl.wlm.states import WorkerState
from djl.wlm.statistics import GroupStatistics, PoolStatistics, WorkerStatistics
from djl.wlm.worker import Worker

log = logging.getLogger("djl.wlm")


class WorkerPool(WorkerSlots, Scaling, Recycling):
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
        worker_factory: WorkerFactory = Worker,
    ) -> None:
        self.model_id = model_id
        #: Device type → how its workers start (a Ray placement's RayLauncher); a local
        #: process for every other type.
        self.launchers = dict(launchers or {})
        #: Makes each worker (a test passes a simulated one).
        self.worker_factory = worker_factory
        self.version = version
        self.config = config
        self.command = command
        #: This model's metric children (djl.metrics), or None when metrics are off.
        self.metrics = metrics
        self.dispatch = JobDispatch(model_id, config, metrics)
        self.queue = self.dispatch.queue
        self.groups: dict[Device, WorkerGroup] = {}
        for device in devices:
            lo, hi = config.workers_for(device.device_type)
            self.groups[device] = WorkerGroup(device, lo, hi, [])
        self.status = ModelStatus.PENDING
        self.fail_fast = fail_fast
        self.health_check_override = health_check_override
        self._nursery: trio.Nursery | None = None
        self._cancel_scope = trio.CancelScope()
        self.closed = trio.Event()
        #: Made by aclose while it waits for in-flight batches; set once none is left.
        self._drained: trio.Event | None = None
        self._batches = 0
        self._jobs = 0
        #: The model's inputs and outputs (names, datatypes, shapes) as the engine of its
        #: first loaded worker reported them; None until then, or when the engine knows
        #: nothing (a model.py handler). Every worker loads the same files, so one is kept.
        self.signature: Signature | None = None
        #: Its LoRA adapters (djl/adapters.py ModelAdapters) when option.enable_lora=true;
        #: each worker registers them all before it serves.
        self.adapters: Any = None
        self._init_slots()
        self._init_scaling()
        self._init_recycling()

    @property
    def closing(self) -> bool:
        """Unregister has begun: no new jobs are accepted, no worker takes another."""
        return self.dispatch.closing

    def _close(self) -> None:
        self.dispatch.closing = True
        self.queue.fail_all(WlmError.shutting_down())

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
            self._close()
            for launcher in self.launchers.values():
                launcher.close()
            self.closed.set()

    async def aclose(self, grace_s: float = 0.0) -> None:
        """Unregister: refuse new jobs, answer queued ones, let in-flight ones finish for
        up to ``grace_s``, then stop every worker and wait for the processes to exit."""
        self._close()
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
        if self.status is not ModelStatus.READY or self.closing:
            raise WlmError.not_ready(self.model_id)
        max_total = sum(g.max_workers for g in self.groups.values())
        if max_total == 0:
            raise WlmShutdown.all_workers(self.model_id)
        job = _batch.Job(inputs, priority, trio.Event() if done is None else done)
        if self.metrics is not None:
            job.enqueued_at = trio.current_time()
        try:
            self.dispatch.put(job)
        except DjlError:
            self._maybe_scale_up(force=True)
            raise
        self._jobs += 1
        self._maybe_scale_up()
        return job

    def discard(self, job: _batch.Job) -> None:
        """The client went away: a queued job is dropped, an in-flight one is ignored."""
        self.dispatch.discard(job)

    def _check_drained(self) -> None:
        """During aclose's grace: wake it once no worker holds a job any more."""
        if self._drained is not None and not any(w.inflight for w in self.all_workers()):
            self._drained.set()

    # -- BatchSource: what a worker calls ----------------------------------------------
    async def take_batch(self, worker: PooledWorker) -> list[_batch.Job] | None:
        """The batch a worker should run next, or None when it should exit (spec §5.5)."""
        return await self.dispatch.take_batch(worker)

    def take_ready(self, worker: PooledWorker, max_batches: int) -> list[list[_batch.Job]]:
        """Full batches already queued that ``worker`` may pipeline behind its own."""
        return self.dispatch.take_ready(worker, max_batches)

    def give_back(self, jobs: list[_batch.Job]) -> None:
        """Jobs a dead worker held but never started: first in line again."""
        jobs = [job for job in jobs if not job.cancelled and not job.finished()]
        if not jobs:
            return
        if self.closing or self.status is not ModelStatus.READY:
            for job in jobs:
                job.set_error(WlmError.shutting_down())
            return
        self.dispatch.requeue(jobs)

    def post(self, worker: PooledWorker, inputs: Input) -> _batch.Job:
        """A job for ``worker`` alone, ahead of the queue (an adapter change)."""
        job = _batch.Job(inputs, _batch.DEFAULT_PRIORITY, trio.Event())
        worker.post(job)
        self.dispatch.wake_all()  # a worker parked in take_batch comes back for it
        return job

    def loaded_workers(self) -> list[PooledWorker]:
        """The workers that have loaded and serve (a starting one registers the adapters
        itself, djl/wlm/adapter_jobs.py)."""
        return [w for w in self.all_workers()
                if w.state in (WorkerState.IDLE, WorkerState.BUSY)]

    def worker_ready(self, worker: PooledWorker) -> None:
        """A worker finished loading: a burst may still need another one (spec §5.4),
        and scale-up only looks while no worker is starting."""
        if self.signature is None:
            self.signature = worker.signature
        self._maybe_scale_up()

    def batch_done(self, worker: PooledWorker) -> None:
        """A worker answered a batch (counted for statistics()); recycle it once it has
        answered ``max_worker_requests``."""
        self._batches += 1
        limit = self.config.max_worker_requests
        if limit and worker.requests >= limit:
            self._recycle(worker, f"{worker.requests} requests answered")
        self._check_drained()

    # -- health and statistics ---------------------------------------------------------
    def all_workers(self) -> list[PooledWorker]:
        return [w for g in self.groups.values() for w in g.workers]

    def running_workers(self) -> list[PooledWorker]:
        return [w for g in self.groups.values() for w in g.running()]

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
                tuple(w.snapshot(rss=rss) for w in group.workers),
            ))
        return PoolStatistics(
            status=self.status,
            healthy=self.healthy(),
            queued=len(self.queue),
            queue_capacity=self.queue.capacity,
            running_workers=len(self.running_workers()),
            idle_workers=self.dispatch.idle,
            failures=self.failures,
            last_failure=self.last_failure,
            batches=self._batches,
            jobs=self._jobs,
            restarts=self.restarts,
            recycles=self.recycles,
            groups=tuple(groups),
            signature=self.signature,
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


__all__ = ["GroupStatistics", "ModelStatus", "PoolStatistics", "WorkerGroup", "WorkerPool",
           "WorkerStatistics", "first_error", "priority_of"]
