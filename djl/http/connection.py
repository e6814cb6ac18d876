"""hypercorn's trio connection with fewer trio operations per request.

hypercorn 0.18.0's ``TCPServer`` costs, per keep-alive request, a fresh task for its
idle timer (``nursery.start`` on every answer, behind a lock), a ``fail_after`` scope
around every read even with no ``read_timeout``, and one locked, shielded ``send_all``
per piece of an answer: the head, the body and an empty write for the end of a sized
message. ``LeanTCPServer`` keeps hypercorn's protocol
(h11, streams, ASGI) and its run loop and changes only those three:

- the keep-alive timer is one task per connection that moves its own deadline: far
  away while a request is in progress, ``keep_alive_timeout`` after each answer;
- with no ``read_timeout`` the reads run without a scope;
- the head of a sized answer waits for its body and both go out in one write; an
  empty write is skipped. A chunked (streamed) head and a ``100 Continue`` go out at
  once, as before.

An A/B in one run (bench/echo.py, ``djl`` vs ``djl-stock``) is what keeps it. It is
installed by ``djl-serving`` under ``http_server=hypercorn`` (``lean_connections``) for as
long as it serves, never on import nor by ``create_app``, and only on the hypercorn it was
measured on: the pinned version; tests/integration/
test_lean_connections.py fails loudly if hypercorn's shape changes.

``LeanConfig`` is hypercorn's ``Config`` with the per-answer ``date`` and ``server``
headers built once a second; ``djl.__main__.hypercorn_config`` always uses it (it relies
only on ``Config.response_headers``, which the shape test pins too).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from importlib.metadata import version
from math import inf
from time import time
from typing import Any
from wsgiref.handlers import format_date_time

import trio
from hypercorn.config import Config
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.trio import run as hypercorn_run
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer

log = logging.getLogger("djl.http")

#: The hypercorn release LeanTCPServer was written against and measured on.
MEASURED_ON = "0.18.0"

#: A head and body at most this long are joined into one write; a longer body is written
#: after its head under the same lock (no copy of a large body for one syscall less).
_JOIN_LIMIT = 64 * 1024

_GONE = (trio.BrokenResourceError, trio.ClosedResourceError)


class _KeepAlive:
    """hypercorn's ``idle_task`` (``restart`` when the connection goes idle, ``stop`` when
    a request begins) as one task that sleeps until its deadline: nothing is started or
    cancelled per request, and the deadline moves lazily. ``stop`` and ``restart`` only
    write ``deadline``; the timer scope keeps an earlier wake-up, and when it fires the
    task looks at ``deadline`` and sleeps on to it (a trio deadline change is a context
    manager and a heap update: two per request were 1.7 % of a c64 echo profile). The
    scope is moved only when it sleeps with no deadline (a request was in progress when
    it last woke) or at shutdown."""

    __slots__ = ("deadline", "ended", "scope", "server")

    def __init__(self, server: LeanTCPServer) -> None:
        self.server = server
        self.deadline = inf
        self.scope: trio.CancelScope | None = None
        self.ended = False

    async def restart(self, task_group: Any = None, action: Any = None) -> None:
        server = self.server
        closing = server.context.terminated.is_set()
        if closing:
            self.deadline = -inf  # shutting down: an idle connection closes now
        else:
            self.deadline = trio.current_time() + server.config.keep_alive_timeout
        scope = self.scope
        if scope is None:
            if not self.ended:
                # The first answer (or the connection's start): the one timer task.
                self.scope = trio.CancelScope(deadline=self.deadline)
                server._task_group._nursery.start_soon(self._watch)
        elif closing or scope.deadline == inf:
            scope.deadline = self.deadline

    async def stop(self) -> None:
        self.deadline = inf  # the timer sees it when it wakes

    def end(self) -> None:
        """The connection is done: the timer task returns without closing anything."""
        self.ended = True
        if self.scope is not None:
            self.scope.cancel()

    async def _watch(self) -> None:
        terminated = self.server.context.terminated
        while True:
            assert self.scope is not None
            with self.scope:
                if terminated.is_set():
                    await trio.sleep_forever()  # until the connection is idle: deadline
                else:
                    await terminated.wait()
            if self.ended:
                return
            if self.deadline != inf and (terminated.is_set()
                                         or trio.current_time() >= self.deadline):
                break
            # The connection was used since the wake-up was set, a request is in
            # progress, or shutdown began mid-request: sleep on to the deadline as it is
            # now (none while a request runs: its answer's restart sets one).
            self.scope = trio.CancelScope(deadline=self.deadline)
        self.scope = None
        self.ended = True
        with trio.CancelScope(shield=True):
            await self.server._initiate_server_close()


class LeanTCPServer(TCPServer):
    """See the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._keep_alive = _KeepAlive(self)
        self.idle_task = self._keep_alive  # type: ignore[assignment]
        #: Between a request's start and its answer's head: the head may wait for its body.
        self._head_due = False
        self._head: bytes | None = None

    async def protocol_send(self, event: Event) -> None:
        kind = type(event)
        if kind is RawData:
            data = event.data  # type: ignore[attr-defined]
            if self._head_due and data[9:10] != b"1":  # not a 1xx: the answer's head
                self._head_due = False
                if b"\r\ncontent-length: " in data:
                    self._head = data
                    return
            head = self._head
            if head is not None:
                self._head = None
                if not data:
                    data = head
                elif len(data) <= _JOIN_LIMIT:
                    data = head + data
                else:
                    await self._write(head, data)
                    return
            elif not data:
                return
            await self._write(data)
        elif kind is Updated:
            if event.idle:  # type: ignore[attr-defined]
                await self._flush()
                await self._keep_alive.restart()
            else:
                self._head_due = True
                await self._keep_alive.stop()
        else:
            if kind is Closed:
                await self._flush()
            await super().protocol_send(event)

    async def _flush(self) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            await self._write(head)

    async def _write(self, *parts: bytes) -> None:
        async with self.send_lock:
            try:
                with trio.CancelScope(shield=True):
                    for part in parts:
                        await self.stream.send_all(part)
            except _GONE:
                await self.protocol.handle(Closed())

    async def _read_data(self) -> None:
        if self.config.read_timeout is not None:
            await super()._read_data()
        else:
            receive_some = self.stream.receive_some
            handle = self.protocol.handle
            while True:
                try:
                    data = await receive_some(MAX_RECV)
                except _GONE:
                    break
                await handle(RawData(data))
                if not data:
                    break
            await handle(Closed())
        # The peer is done: no timer may hold the connection's task group open.
        self._keep_alive.end()

    async def _close(self) -> None:
        self._keep_alive.end()
        await super()._close()


class LeanConfig(Config):
    """hypercorn's Config whose headers for every answer (``date``, ``server``) are built
    once a second per protocol rather than once per answer (a ``gmtime`` and a date format
    each time: 1.6 µs of a request's CPU). hypercorn copies or extends the list it gets,
    never changes it, so one list is shared until the second turns."""

    def __init__(self) -> None:
        super().__init__()
        self._answer_headers: dict[str, tuple[int, list[tuple[bytes, bytes]]]] = {}

    def response_headers(self, protocol: str) -> list[tuple[bytes, bytes]]:
        second = int(time())
        cached = self._answer_headers.get(protocol)
        if cached is not None and cached[0] == second:
            return cached[1]
        date = format_date_time(second).encode("ascii")  # the second the cache is for
        headers = [(name, date if name == b"date" else value)
                   for name, value in super().response_headers(protocol)]
        self._answer_headers[protocol] = (second, headers)
        return headers


@cache
def _hypercorn_version() -> str:
    return version("hypercorn")


@contextmanager
def installed(lean: bool) -> Iterator[bool]:
    """While the block runs, hypercorn's trio worker serves each connection with
    ``LeanTCPServer`` (``lean``) or its own ``TCPServer``; yields True when the lean one is
    in place, and puts back whatever was there on leaving.

    The seam is the name ``TCPServer`` that ``hypercorn.trio.run.worker_serve`` looks up
    when it starts serving: process-wide, so only the owner of the process installs it
    (``djl-serving`` with ``http_server=hypercorn``), never ``create_app``. On a hypercorn
    other than ``MEASURED_ON`` the stock one stays.
    """
    if lean and _hypercorn_version() != MEASURED_ON:
        log.warning("lean_connections needs hypercorn %s, found %s: hypercorn's own "
                    "connections serve", MEASURED_ON, _hypercorn_version())
        lean = False
    before = hypercorn_run.TCPServer
    hypercorn_run.TCPServer = LeanTCPServer if lean else TCPServer  # type: ignore[misc]
    try:
        yield lean
    finally:
        hypercorn_run.TCPServer = before  # type: ignore[misc]


__all__ = ["MEASURED_ON", "LeanConfig", "LeanTCPServer", "installed"]
