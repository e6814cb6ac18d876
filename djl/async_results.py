"""Results of asynchronous requests (``x-synchronous: false``, spec §3.8), held for polling.

``submit`` answers at once with a token (a random UUID); the request runs as a task in the
store's nursery (``run``), and its result is kept under the token. ``poll`` pages through
it: a pending result is a 202, a stored one its code, headers and body; a streamed result
is kept item by item as its chunks arrive (``cache_batch`` chunks an item), so a client
reads it while it is produced. A poll token is the 36-character key, optionally followed
by the index of the first item wanted; the page says which token comes next, or none once
the client has everything. A non-streamed result is final at once: no next token (the
spec's [REC]; DJL hands out ``<key>0`` forever).

The store is bounded so clients that never poll cannot exhaust memory: at most
``max_entries`` results, ``max_bytes`` of bodies in all, each dropped ``ttl_s`` after it
completed. To make room the oldest completed result goes first; when every slot holds a
request still running, ``submit`` refuses with 503 (``AsyncResultsFull``). A result larger
than the whole store is replaced by its error (``OutputTooLarge``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from djl.errors import AsyncResultsFull, BadRequest, OutputTooLarge, StreamCut
from djl.io import ChunkSource, Output
from djl.own_nursery import OwnNursery

log = logging.getLogger("djl.async_results")

#: The length of a key (a UUID string); longer tokens carry a start index after it.
KEY_LENGTH = 36
#: Spec §3.8: the placeholder a poll sees while the result is pending.
PENDING_STATUS = 202
PENDING_MESSAGE = "The model result is not yet available"


@dataclass(slots=True)
class Page:
    """One poll's answer, before rendering."""

    status: int
    #: The model's headers (the first page only).
    properties: dict[str, Any]
    body: bytes = b""
    #: The token to poll next; None when the client has the whole result.
    next_token: str | None = None
    #: The request failed: render it as a synchronous failure would be (mapping B).
    error: Exception | None = None


@dataclass(eq=False, slots=True)
class _Entry:
    key: str
    #: None while the model has not answered; then the Output's code.
    code: int | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    #: The body of a non-streamed result.
    data: bytes = b""
    #: A streamed result's items so far, in order.
    items: list[bytes] = field(default_factory=list)
    streamed: bool = False
    #: Nothing more will be added (the result or its error is complete).
    final: bool = False
    error: Exception | None = None
    #: Clock time it became final (None while running); it expires ttl_s later.
    finished_at: float | None = None
    #: Bytes of body it holds (counted in the store's total).
    size: int = 0


class AsyncResults:
    """The bounded result store; see the module docstring."""

    def __init__(self, *, max_entries: int, max_bytes: int, ttl_s: float,
                 cache_batch: int, chunk_timeout_s: float,
                 clock: Callable[[], float] = trio.current_time) -> None:
        self.max_entries = max(1, max_entries)
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self.cache_batch = max(1, cache_batch)
        self.chunk_timeout_s = chunk_timeout_s
        self.clock = clock
        #: key → entry, oldest first.
        self._entries: dict[str, _Entry] = {}
        #: Sum of the entries' ``size``; never above max_bytes once a charge returns.
        self.bytes = 0
        self._own = OwnNursery("AsyncResults")

    def __len__(self) -> int:
        return len(self._entries)

    async def run(self, *, task_status: trio.TaskStatus[AsyncResults] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """The nursery every asynchronous request runs in; cancelling it stops them all."""
        try:
            await self._own.run(task_status, self)
        finally:
            self._entries.clear()
            self.bytes = 0

    # -- submit ------------------------------------------------------------------------
    def submit(self, job: Callable[[], Awaitable[Output]]) -> str:
        """Start ``job`` in the store's nursery; its key, to poll with."""
        nursery = self._own.nursery  # raises while run is not running
        self._drop_expired()
        if len(self._entries) >= self.max_entries and not self._evict_one(None):
            raise AsyncResultsFull.pending(self.max_entries)
        entry = _Entry(str(uuid.uuid4()))
        self._entries[entry.key] = entry
        nursery.start_soon(self._run, entry, job)
        return entry.key

    async def _run(self, entry: _Entry, job: Callable[[], Awaitable[Output]]) -> None:
        try:
            output = await job()
        except Exception as exc:  # noqa: BLE001 — the failure is the result
            self._finish(entry, exc)
            return
        if output.stream is None:
            data = bytes(output.get_data_item() or b"")
            if self._charge(entry, len(data)):
                entry.code, entry.properties, entry.data = output.code, output.properties, data
                self._finish(entry)
            return
        entry.streamed = True
        stream: Any = output.stream
        pending: list[bytes] = []
        try:
            while True:
                with trio.move_on_after(self.chunk_timeout_s) as waiting:
                    chunk = await next_chunk(stream)
                if waiting.cancelled_caught:
                    raise StreamCut(f"The model sent no stream chunk within "
                                    f"chunked_read_timeout ({self.chunk_timeout_s:g}s)")
                if entry.code is None:
                    # The model may set its code until the first chunk (spec §3.5).
                    entry.code, entry.properties = output.code, output.properties
                if chunk is None:
                    break
                pending.append(chunk)
                if len(pending) >= self.cache_batch:
                    if not self._add_item(entry, pending):
                        return
                    pending = []
            if pending and not self._add_item(entry, pending):
                return
            self._finish(entry)
        except Exception as exc:  # noqa: BLE001 — a stream that broke midway
            self._finish(entry, exc)
        finally:
            stream.close()

    def _add_item(self, entry: _Entry, chunks: list[bytes]) -> bool:
        item = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if not self._charge(entry, len(item)):
            return False
        if entry.key in self._entries:
            entry.items.append(item)
        return True

    def _finish(self, entry: _Entry, error: Exception | None = None) -> None:
        if error is not None:
            self._release(entry)
            entry.error = error
        entry.final = True
        entry.finished_at = self.clock()

    # -- bounds ------------------------------------------------------------------------
    def _charge(self, entry: _Entry, size: int) -> bool:
        """Account ``size`` more bytes to ``entry``, dropping the oldest completed results
        to make room; False (and the entry failed) when it cannot fit at all."""
        if entry.key not in self._entries:
            return False  # dropped meanwhile (expired while it streamed): keep nothing
        self.bytes += size
        entry.size += size
        while self.bytes > self.max_bytes and self._evict_one(entry):
            pass
        if self.bytes > self.max_bytes:
            self._finish(entry, OutputTooLarge.async_result(self.max_bytes))
            return False
        return True

    def _release(self, entry: _Entry) -> None:
        self.bytes -= entry.size
        entry.size = 0
        entry.items = []
        entry.data = b""

    def _evict_one(self, keep: _Entry | None) -> bool:
        """Drop the oldest completed result other than ``keep``; False if there is none."""
        for entry in self._entries.values():
            if entry.final and entry is not keep:
                self._drop(entry)
                log.info("async result %s dropped unread to make room", entry.key)
                return True
        return False

    def _drop(self, entry: _Entry) -> None:
        self._release(entry)
        del self._entries[entry.key]

    def _expired(self, entry: _Entry, now: float) -> bool:
        return entry.finished_at is not None and now - entry.finished_at >= self.ttl_s

    def _drop_expired(self) -> None:
        now = self.clock()
        for entry in [e for e in self._entries.values() if self._expired(e, now)]:
            self._drop(entry)

    # -- poll --------------------------------------------------------------------------
    def poll(self, token: str, max_items: int = -1) -> Page:
        """Spec §3.8's data request. ``max_items`` < 0 means no limit. Unknown → 400."""
        key, index_text = token[:KEY_LENGTH], token[KEY_LENGTH:]
        entry = self._entries.get(key)
        start = 0
        if index_text:
            if not index_text.isascii() or not index_text.isdigit():
                raise BadRequest.invalid_starting_token(token)
            start = int(index_text)
        if entry is not None and self._expired(entry, self.clock()):
            self._drop(entry)
            entry = None
        if entry is None:
            raise BadRequest.invalid_starting_token(token)
        if entry.error is not None:
            return Page(0, {}, error=entry.error)
        if entry.code is None:
            return Page(PENDING_STATUS, {}, next_token=token)
        first = start == 0
        status = entry.code if first else 200
        properties = entry.properties if first else {}
        if not entry.streamed:
            return Page(status, properties, entry.data if first else b"")
        stop = len(entry.items) if max_items < 0 else min(len(entry.items), start + max_items)
        items = entry.items[start:stop]
        done = entry.final and stop >= len(entry.items)
        next_token = None if done else f"{key}{max(stop, start)}"
        if not items and not done:
            return Page(PENDING_STATUS, {}, next_token=next_token)
        return Page(status, properties, b"".join(items), next_token)


async def next_chunk(stream: ChunkSource) -> bytes | None:
    """A streamed Output's next chunk on the server; None once it has ended (or was
    closed). ``StreamCut`` when the worker side stopped before the model's last chunk."""
    try:
        return await stream.receive()
    except (trio.EndOfChannel, trio.ClosedResourceError):
        return None


__all__ = ["KEY_LENGTH", "PENDING_MESSAGE", "PENDING_STATUS", "AsyncResults", "Page",
           "next_chunk"]
