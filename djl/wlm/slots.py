"""Worker slots: each keeps one worker of a pool running, and replaces it while it dies.

A slot builds its worker with the pool's WorkerFactory, runs it, and decides what its end
means: a retirement ends the slot; a death or a failed load counts against the model's
``retry_threshold`` (spec §6.9) and a permanent worker is restarted with back-off; past the
threshold the model is FAILED. A temporary (scale-up) worker that cannot load is no
failure of the model while other workers serve it.

A part of WorkerPool (djl/wlm/pool.py), mixed into it: it uses the pool's groups, queue,
dispatch, factory, launchers and counters, and the scale-up hooks of djl/wlm/scaling.py.
"""

from __future__ import annotations

import logging
import os

import trio

from djl.errors import ModelLoadError, WlmError
from djl.status import ModelStatus
from djl.wlm.groups import WorkerGroup
from djl.wlm.launch import LOCAL
from djl.wlm.states import ExitReason, WorkerState

log = logging.getLogger("djl.wlm")

#: Restart back-off after a crash: BASE × 2^(n-1), capped.
RESTART_BACKOFF_BASE_S = 0.2
RESTART_BACKOFF_MAX_S = 10.0
#: A worker that lived this long before dying resets the back-off.
BACKOFF_RESET_S = 60.0


class WorkerSlots:
    """Running, restarting and counting the failures of workers, for WorkerPool."""

    def _init_slots(self) -> None:
        #: Worker deaths (crash, timeout, failed reload) since registration (spec §6.9).
        self.failures = 0
        #: Why the latest of them happened: what describe shows of a FAILED model.
        self.last_failure: str | None = None
        #: Workers started to replace a dead one (statistics()).
        self.restarts = 0

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
            if self.queue and not self.closing and not cancelled:
                self._maybe_scale_up(force=not self.running_workers())

    async def _run_slot(
        self, group: WorkerGroup, task_status: trio.TaskStatus[None], *, permanent: bool,
        pending: bool, waited: bool,
    ) -> None:
        started = False
        restarts = 0
        while True:
            worker = self.worker_factory(
                self, group.device, permanent=permanent,
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
                    self._scale_up_loaded()
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
            if self.closing or len(group.permanent()) >= group.min_workers:
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
            # Each stops at its next take, after the batch it holds.
            worker.retiring = True
        self.dispatch.wake_all()
        return False


__all__ = ["BACKOFF_RESET_S", "RESTART_BACKOFF_BASE_S", "RESTART_BACKOFF_MAX_S", "WorkerSlots"]
