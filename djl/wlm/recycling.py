"""Recycling: a worker that has answered ``max_worker_requests`` requests, or whose
resident memory passed ``max_worker_rss_mb``, is replaced. The replacement loads first
(the old worker serves meanwhile), then the old one retires, finishing the batch it holds.
A group may so hold one process more than ``max_workers`` for a moment.

A part of WorkerPool (djl/wlm/pool.py), mixed into it: it starts replacements with the
pool's ``_keep_worker`` (djl/wlm/slots.py).
"""

from __future__ import annotations

import logging
from functools import partial

import trio

from djl.config import MIB
from djl.errors import ModelLoadError
from djl.status import ModelStatus
from djl.wlm.seams import PooledWorker
from djl.wlm.states import WorkerState

log = logging.getLogger("djl.wlm")

#: After a recycling replacement failed to load, the old worker serves on this long before
#: another replacement is tried (each try is a whole model load).
RECYCLE_RETRY_S = 30.0
#: The memory watch reads every worker's RSS at most this often, whatever the model says.
MIN_RSS_CHECK_INTERVAL_S = 0.05


class Recycling:
    """Replacing workers past their request or memory limit, for WorkerPool."""

    def _init_recycling(self) -> None:
        #: Recycled workers replaced (statistics()).
        self.recycles = 0
        #: Workers whose recycling replacement is loading; no second one starts for them.
        self._recycling: set[PooledWorker] = set()
        #: After a recycling replacement failed to load: no new try before this time.
        self._recycle_after = 0.0

    def _recycle(self, worker: PooledWorker, why: str) -> None:
        """Replace ``worker``: its replacement loads first, then it retires."""
        if (worker in self._recycling or worker.retiring or not worker.running
                or self.closing or self._nursery is None
                or self.status is not ModelStatus.READY
                or trio.current_time() < self._recycle_after):
            return
        self._recycling.add(worker)
        self._nursery.start_soon(self._replace, worker, why)

    async def _replace(self, worker: PooledWorker, why: str) -> None:
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
                worker.retire()
            self.dispatch.wake_all()
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


__all__ = ["MIN_RSS_CHECK_INTERVAL_S", "RECYCLE_RETRY_S", "Recycling"]
