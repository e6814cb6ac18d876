"""Scaling a pool: the group bounds a user sets (``scale``, spec §2.7), and the temporary
workers a growing queue adds (spec §5.4), with a back-off for scale-ups that cannot load.

A part of WorkerPool (djl/wlm/pool.py), mixed into it: it reads the pool's groups, queue
and status, and starts worker slots with ``_keep_worker`` (djl/wlm/slots.py).
"""

from __future__ import annotations

import logging
from functools import partial

import trio

from djl.config import RAY_DEVICE
from djl.errors import RayPlacement, WlmError, WlmShutdown
from djl.status import ModelStatus
from djl.wlm.devices import Device
from djl.wlm.groups import WorkerGroup
from djl.wlm.slots import RESTART_BACKOFF_BASE_S
from djl.wlm.states import WorkerState

log = logging.getLogger("djl.wlm")

#: Longest wait between scale-ups that fail to load while other workers serve: each try is
#: a whole model load (a GPU out of memory, say), and nothing is down meanwhile.
SCALE_UP_BACKOFF_MAX_S = 60.0


class Scaling:
    """Group bounds and scale-up: a part of WorkerPool, on its ``groups``, ``queue``,
    ``dispatch``, ``status``, ``config``, ``launchers`` and nursery."""

    def _init_scaling(self) -> None:
        #: Worker slots on their way that are not listed yet: a scale-up scheduled with
        #: start_soon, or a crashed permanent worker in its restart back-off. While > 0
        #: no further scale-up starts, so a burst of submits cannot overshoot max_workers.
        self._pending_workers = 0
        #: After a scale-up worker failed to load: no new one before this time, and the
        #: back-off that set it (doubles per failure, reset by a scale-up that loads).
        self._scale_up_after = 0.0
        self._scale_up_backoff_s = 0.0
        self._scale_up_timer = False
        self._scale_lock = trio.Lock()

    def _maybe_scale_up(self, force: bool = False) -> None:
        """Add one temporary worker when the queue outgrows the workers (spec §5.4)."""
        if self._nursery is None or self.closing or self.status is not ModelStatus.READY:
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

    def _scale_up_loaded(self) -> None:
        """A scale-up worker loaded: scale-ups work again."""
        self._scale_up_backoff_s = 0.0

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
            if self.closing:
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
                worker.retire()
                surplus -= 1
            temporary = [w for w in group.running() if not w.permanent]
            excess = len(group.running()) - group.max_workers
            for worker in sorted(temporary, key=lambda w: w.state is WorkerState.BUSY):
                if excess <= 0:
                    break
                worker.retire()
                excess -= 1
            for _ in range(group.min_workers - len(group.permanent())):
                if self.closing or self._nursery is None:
                    # Unregistered while an earlier worker started: none may start now.
                    raise WlmError.not_ready(self.model_id)
                await self._nursery.start(partial(self._keep_worker, group, permanent=True))
        if sum(g.max_workers for g in self.groups.values()) == 0:
            # No worker may ever run again: queued jobs must not wait for one forever.
            self.queue.fail_all(WlmShutdown.all_workers(self.model_id))
        self.dispatch.wake_all()


__all__ = ["SCALE_UP_BACKOFF_MAX_S", "Scaling"]
