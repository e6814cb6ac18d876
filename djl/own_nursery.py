"""An object's own nursery: open for as long as the object's ``run`` runs, so the tasks its
methods start (pools, loads, asynchronous requests) end when it is cancelled."""

from __future__ import annotations

from typing import Any

import trio


class OwnNursery:
    """The nursery of ``owner``'s ``run``; ``nursery`` raises while it is not running."""

    __slots__ = ("_nursery", "_owner")

    def __init__(self, owner: str) -> None:
        self._owner = owner
        self._nursery: trio.Nursery | None = None

    @property
    def nursery(self) -> trio.Nursery:
        if self._nursery is None:
            raise RuntimeError(f"{self._owner}.run is not running")
        return self._nursery

    async def run(self, task_status: trio.TaskStatus[Any], started: Any) -> None:
        """Open the nursery, report ``started``, and hold it open until cancelled; it is
        gone (``nursery`` raises again) only once every task in it has ended."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started(started)
                await trio.sleep_forever()
        finally:
            self._nursery = None
