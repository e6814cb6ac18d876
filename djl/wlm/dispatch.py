"""Job dispatch: one model's job queue and the workers waiting on it (spec §5.2, §5.5).

Requests enter with ``put``; a worker takes its next batch with ``take_batch``, which
applies the aggregation rule (the first job, then whatever is queued, then more within
``max_batch_delay``), and a fast worker may pipeline full batches behind it
(``take_ready``). Workers with nothing to do park here; every job put wakes one.
"""

from __future__ import annotations

import logging

import trio

from djl import _batch
from djl.config import ModelConfig
from djl.metrics import ModelMetrics
from djl.wlm.seams import PooledWorker

log = logging.getLogger("djl.wlm")


class JobDispatch:
    """The queue, the parking lot of idle workers, and the batching rule."""

    def __init__(self, model_id: str, config: ModelConfig,
                 metrics: ModelMetrics | None = None) -> None:
        self.config = config
        self.queue = _batch.JobQueue(config.job_queue_size, model_id)
        #: This model's metric children (djl.metrics), or None when metrics are off.
        self.metrics = metrics
        #: Set when unregister begins: no worker takes another batch.
        self.closing = False
        #: Workers parked in take_batch now.
        self.idle = 0
        #: Workers parked in take_batch wait here; every put wakes one.
        self._lot = trio.lowlevel.ParkingLot()

    def put(self, job: _batch.Job) -> None:
        """Queue ``job`` (DjlError when the queue is full) and wake one parked worker."""
        self.queue.put_nowait(job, worker_idle=self.idle > 0)
        self._lot.unpark()

    def requeue(self, jobs: list[_batch.Job]) -> None:
        """Jobs a worker took and never started: first in line again."""
        self.queue.put_front(jobs)
        self._lot.unpark_all()

    def wake_all(self) -> None:
        """Every parked worker looks again (it may have been told to stop)."""
        self._lot.unpark_all()

    def discard(self, job: _batch.Job) -> None:
        """The client went away: a queued job is dropped, an in-flight one is ignored."""
        job.cancelled = True
        self.queue.discard(job)

    async def take_batch(self, worker: PooledWorker) -> list[_batch.Job] | None:
        """The batch a worker should run next, or None when it should exit (spec §5.5).

        First job: permanent workers wait forever; temporary ones retire once idle for
        ``max_idle_time``. Then whatever is queued, then more within the remaining
        ``max_batch_delay``. Jobs whose client has gone are dropped.
        """
        size = self.config.batch_size
        while True:
            if worker.retiring or self.closing:
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
            self.idle += 1
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
                self.idle -= 1
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

    def take_ready(self, worker: PooledWorker, max_batches: int) -> list[list[_batch.Job]]:
        """Full batches already queued that ``worker`` may pipeline behind the one it holds.

        None while another worker is idle (it would serve them in parallel), and never a
        partial batch (that one is due the aggregation rule of spec §5.5).
        """
        if self.idle > 0 or worker.retiring or self.closing:
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


__all__ = ["JobDispatch"]
