"""The seams between a pool and its workers, as Protocols: neither side reaches in.

* ``BatchSource``: what a worker needs of whoever feeds it (a WorkerPool, or a fake in
  tests).
* ``PooledWorker``: what a pool needs of a worker (djl/wlm/worker.py's ``Worker``, or a
  simulated one in tests).
* ``WorkerFactory``: how a pool makes its workers; a pool is given one, so another kind of
  worker needs no change to the pool.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Protocol

import trio

from djl import _batch
from djl.wlm.states import ExitReason, WorkerState

if TYPE_CHECKING:
    from djl.config import ModelConfig
    from djl.signature import Signature
    from djl.wlm.devices import Device
    from djl.wlm.launch import Launcher, WorkerCommand
    from djl.wlm.statistics import WorkerStatistics


class PooledWorker(Protocol):
    """One worker as its pool sees it: ``run`` is its whole life; the pool reads its state,
    hands it jobs (``hold``), and stops it (``retire``, ``kill``)."""

    id: int
    device: Device
    #: Permanent workers make up the group's minimum; temporary ones retire when idle.
    permanent: bool
    state: WorkerState
    #: Set to have it stop at its next take (after the batch it holds).
    retiring: bool
    exit_reason: ExitReason | None
    #: Why it died or failed to load.
    failure: str | None
    #: trio time it stopped (None: running).
    stopped_at: float | None
    #: trio time of its last finished batch (or start): idle scale-down.
    last_active: float
    #: Jobs it holds and has not answered.
    inflight: list[_batch.Job]
    label: str
    #: Its process is reaped: it no longer occupies a slot of max_workers.
    process_gone: bool
    #: Requests it has answered.
    requests: int
    #: What its engine reported of the model's inputs and outputs once loaded.
    signature: Signature | None
    #: Adapter jobs for it alone, taken before any queued job (djl/wlm/adapter_jobs.py).
    control: deque[_batch.Job]

    @property
    def running(self) -> bool:
        """Not STOPPED."""
        ...

    def hold(self, jobs: list[_batch.Job]) -> None:
        """The jobs taken for it (BUSY from now on); it answers them should it stop."""
        ...

    def post(self, job: _batch.Job) -> None:
        """Queue an adapter job for it alone (``control``)."""
        ...

    def retire(self) -> None:
        """Stop after the batch it holds; at once when it holds none."""
        ...

    def kill(self) -> None:
        """Stop now; its in-flight jobs are answered ``Worker shutting down``."""
        ...

    def rss_bytes(self) -> int | None:
        """Its process's resident memory now (None: unknown)."""
        ...

    def snapshot(self, *, rss: bool) -> WorkerStatistics:
        """What describe lists of it; ``rss``: read its memory too."""
        ...

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Start, load (ModelLoadError before ``task_status.started()`` if it cannot),
        serve until stopped. How it ended is in ``exit_reason``."""
        ...


class BatchSource(Protocol):
    """What a worker needs from whoever feeds it: a WorkerPool, or a fake in tests.

    The worker takes batches, gives back the ones it could not start, and reports when it
    is ready and when it has answered a batch; it never reaches into the pool otherwise,
    and the source changes the worker only through ``hold``. Another kind of worker
    (a remote one) needs only this to be fed by the same pool.
    """

    model_id: str
    config: ModelConfig
    command: WorkerCommand

    async def take_batch(self, worker: PooledWorker) -> list[_batch.Job] | None:
        """The next batch (maybe empty: ask again), or None when the worker should stop.
        Jobs are handed over with ``worker.hold`` as soon as they are taken."""
        ...

    def take_ready(self, worker: PooledWorker, max_batches: int) -> list[list[_batch.Job]]:
        """Full batches to pipeline behind the one the worker holds (maybe none)."""
        ...

    def give_back(self, jobs: list[_batch.Job]) -> None:
        """Jobs the worker took and never started (it died): first in line again."""
        ...

    def worker_ready(self, worker: PooledWorker) -> None:
        """The worker has loaded the model and serves."""
        ...

    def batch_done(self, worker: PooledWorker) -> None:
        """The worker has answered a batch."""
        ...


class WorkerFactory(Protocol):
    """Makes one worker of ``source`` on ``device``, started by ``launcher`` (the class
    ``Worker`` itself is one)."""

    def __call__(self, source: BatchSource, device: Device, *, permanent: bool,
                 launcher: Launcher) -> PooledWorker: ...


__all__ = ["BatchSource", "PooledWorker", "WorkerFactory"]
