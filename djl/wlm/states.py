"""A worker's states and the reasons it ends: what the pool, the rolling-batch session and
describe read off a Worker."""

from __future__ import annotations

import enum


class WorkerState(enum.Enum):
    STARTING = "STARTING"
    IDLE = "IDLE"
    BUSY = "BUSY"
    STOPPED = "STOPPED"


class ExitReason(enum.Enum):
    RETIRED = "retired"  # scaled down or idle: a normal end
    DIED = "died"  # crash, timeout, corrupt frame: counts as a failure
    LOAD_FAILED = "load_failed"
    CANCELLED = "cancelled"  # unregister or shutdown


__all__ = ["ExitReason", "WorkerState"]
