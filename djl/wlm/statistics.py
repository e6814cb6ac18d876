"""The frozen snapshots of a pool, its groups and its workers: what describe, the metrics
and the benchmarks read (djl/overview.py renders them)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from djl.signature import Signature
from djl.status import ModelStatus
from djl.wlm.devices import Device


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


__all__ = ["GroupStatistics", "PoolStatistics", "WorkerStatistics"]
