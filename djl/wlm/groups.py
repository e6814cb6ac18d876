"""A worker group: one model's workers on one device, with the group's bounds."""

from __future__ import annotations

from dataclasses import dataclass

from djl.wlm.devices import Device
from djl.wlm.seams import PooledWorker

#: Stopped workers stay listed (and count for health) this long (spec §5.7).
STOPPED_LISTED_S = 60.0


@dataclass
class WorkerGroup:
    """The workers of one model on one device, with the group's bounds."""

    device: Device
    min_workers: int
    max_workers: int
    workers: list[PooledWorker]

    def running(self) -> list[PooledWorker]:
        """Workers alive and not retiring: starting or serving (what health counts)."""
        return [w for w in self.workers if w.running and not w.retiring]

    def permanent(self) -> list[PooledWorker]:
        return [w for w in self.running() if w.permanent]

    def occupied(self) -> list[PooledWorker]:
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


__all__ = ["STOPPED_LISTED_S", "WorkerGroup"]
