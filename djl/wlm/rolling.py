"""The server side of a rolling-batch worker: many jobs in flight, answered step by step.

A text-generation worker (djl/runtime/generation/) decodes all its sequences together and
a new one joins at the next step, so its Worker must not wait for one answer before it
sends the next job. ``serve_rolling`` replaces ``Worker._serve``'s request → response loop
for such a worker with two tasks:

* the *feeder* takes jobs from the pool (``take_batch``, as every worker does) while fewer
  than ``rolling_batch_size`` are in flight and sends each as its own REQUEST frame, so
  the pool sees a worker that keeps accepting up to that many jobs;
* the *reader* reads one step record per decode step (djl/rolling.py) and hands each
  sequence what it gained: a stream's head, its bytes, its end, or a whole answer.

After each step the reader looks for jobs whose client left (the pool marked them
cancelled, or the HTTP side closed their stream) and sends their cancel frames, so a
sequence stops within one decode step of its client leaving. When the worker dies, each
started stream gets the runtime's error line and ends; every other job in flight is
answered 503 (Worker._end).
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import trio

from djl import _batch, rolling
from djl.errors import FrameError, WorkerDied
from djl.io import Output, PairList
from djl.wlm import adapter_jobs
from djl.wlm.chunk_stream import ChunkStream
from djl.wlm.states import WorkerState

if TYPE_CHECKING:
    from djl.metrics import ModelMetrics

log = logging.getLogger("djl.worker")


class RollingWorker(Protocol):
    """What a session needs of its Worker (djl/wlm/worker.py, which starts the session:
    this module never imports it)."""

    #: Its pool (worker.BatchSource): config, metrics, jobs, batch_done.
    source: Any
    requests: int
    inflight: list[_batch.Job]
    state: WorkerState
    last_active: float
    #: Adapter jobs for this worker alone (djl/wlm/adapter_jobs.py), and what it calls
    #: when one is posted.
    control: Any
    wake: Any

    async def _next_frame(self, stream: trio.SocketStream,
                          decoder: _batch.FrameDecoder) -> tuple[int, bytes]: ...


@dataclass(slots=True)
class _Sequence:
    """One job in flight on a rolling-batch worker."""

    job: _batch.Job
    #: Where its stream's bytes go once its head came (None: not streamed, or not yet).
    send: trio.MemorySendChannel[bytes] | None = None
    #: What ends its stream should the worker die (from the runtime's HEAD).
    error_line: bytes = b""
    #: A cancel frame has been sent for it; it stays until the runtime says GONE.
    cancelling: bool = False
    #: trio time of its latest token (None: no token yet).
    last_token_at: float | None = None
    tokens: int = 0


class RollingSession:
    """One rolling-batch worker's serving, from its first job to its retirement or death."""

    def __init__(self, worker: RollingWorker, stream: trio.SocketStream,
                 decoder: _batch.FrameDecoder, limit: int) -> None:
        self.worker = worker
        self.stream = stream
        self.decoder = decoder
        #: Most sequences in flight at once (option.max_rolling_batch_size).
        self.limit = max(1, limit)
        #: Sequence id → its job, for every job sent and not yet over.
        self.active: dict[int, _Sequence] = {}
        self._ids = itertools.count(1)
        #: Set while the feeder waits for a free place; replaced once set.
        self._place_free = trio.Event()
        #: The feeder stopped (the worker retires): the reader ends once nothing is active.
        self._feeding_done = False
        self._send_lock = trio.StrictFIFOLock()
        #: Around the reader's wait for a frame: cancelled to end an idle reader.
        self._reader_scope = trio.CancelScope()
        self.metrics: ModelMetrics | None = getattr(worker.source, "metrics", None)

    async def run(self) -> None:
        """Serve until retired (returns) or the process fails (raises as ``_serve`` does)."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._feed)
                await self._read()
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            errors = [e for e in group.exceptions if not isinstance(e, trio.Cancelled)]
            if len(errors) == 1 and isinstance(errors[0], Exception):
                raise errors[0] from None
            raise
        finally:
            self._fail_streams()

    # -- feeding ----------------------------------------------------------------------
    async def _feed(self) -> None:
        worker, source = self.worker, self.worker.source
        extra = {"handler": source.command.handler}
        worker.wake = self._place_free_set
        while True:
            while len(self.active) >= self.limit and not worker.control:
                await self._place_free.wait()
                self._place_free = trio.Event()
            jobs = await source.take_batch(worker)
            if jobs is None:
                self._feeding_done = True
                self._wake_reader()
                return
            frames = bytearray()
            idle = not self.active
            while worker.control:  # adapter jobs, with their own handler
                seq = next(self._ids)
                job = worker.control.popleft()
                self.active[seq] = _Sequence(job)
                frames += adapter_jobs.frame(job, seq)
            for job in jobs:
                seq = next(self._ids)
                self.active[seq] = _Sequence(job)
                frames += _batch.encode_batch([job.input], {**extra, rolling.SEQ: str(seq)})
            self._sync_worker()
            if frames:
                async with self._send_lock:
                    await self.stream.send_all(frames)
                if idle:
                    # The reader waits without a deadline while nothing is in flight: from
                    # now on an answer is due within predict_timeout.
                    self._reader_scope.cancel()

    def _place_free_set(self) -> None:
        self._place_free.set()

    def _wake_reader(self) -> None:
        """The reader may be waiting for frames while nothing is active: when the feeder
        stops, an idle reader must end instead (a retiring worker sends nothing more)."""
        if not self.active:
            self._reader_scope.cancel()

    # -- reading ----------------------------------------------------------------------
    async def _read(self) -> None:
        worker = self.worker
        timeout = worker.source.config.predict_timeout_s
        while True:
            if self._feeding_done and not self.active:
                return
            with trio.CancelScope() as self._reader_scope:
                with trio.move_on_after(timeout if self.active else math.inf) as waited:
                    kind, payload = await worker._next_frame(self.stream, self.decoder)
            if self._reader_scope.cancelled_caught:
                continue
            if waited.cancelled_caught:
                if self.active:
                    raise WorkerDied(f"Prediction timed out after {timeout:g}s")
                continue
            if kind != _batch.CHUNK:
                raise FrameError(f"expected a step record, got frame kind {kind}")
            try:
                batch, items = rolling.decode_step(_batch.decode_chunk(payload)[1])
            except ValueError as exc:
                raise FrameError(f"corrupt step record: {exc}") from None
            self._step(batch, items)
            await self._send_cancels()

    def _step(self, batch: int, items: list[rolling.Item]) -> None:
        now = trio.current_time()
        metrics = self.metrics
        if metrics is not None and batch:
            metrics.observe_rolling_batch_size(batch)
        over = False
        generated = 0
        for seq_id, kind, tokens, data in items:
            seq = self.active.get(seq_id)
            if seq is None:
                continue  # already answered (a cancel crossed its last step)
            if kind == rolling.ADMIT:
                if metrics is not None:
                    metrics.count_prompt_tokens(tokens)
                continue
            if tokens:
                generated += tokens
                self._observe_tokens(seq, tokens, now)
            if kind == rolling.HEAD:
                self._start_stream(seq, data)
            elif kind == rolling.DATA or kind == rolling.END:
                if data:
                    self._offer(seq, data)
            elif kind == rolling.FULL:
                code, message, props, keys, values = _batch.decode_response(data)
                output = Output(code, message)
                output.properties = dict(props)
                output.content = PairList(zip(keys or [], values or [], strict=True))
                seq.job.set_result(output)
            if kind in rolling.FINAL_KINDS:
                self._finish(seq_id, seq)
                over = True
        if generated and metrics is not None:
            metrics.count_generated_tokens(generated)  # once a step, not once a sequence
        if over:
            self._sync_worker()

    def _observe_tokens(self, seq: _Sequence, tokens: int, now: float) -> None:
        metrics = self.metrics
        if metrics is not None:
            if seq.last_token_at is None:
                if seq.job.enqueued_at:
                    metrics.observe_time_to_first_token_us((now - seq.job.enqueued_at) * 1e6)
            else:
                metrics.observe_inter_token_latency_us((now - seq.last_token_at) * 1e6)
        seq.last_token_at = now
        seq.tokens += tokens

    def _start_stream(self, seq: _Sequence, data: bytes) -> None:
        response, seq.error_line = rolling.decode_head(data)
        code, message, props, _keys, _values = _batch.decode_response(response)
        # Unbounded: the reader serves every sequence and must never wait for one slow
        # client; a stream holds at most its max_new_tokens chunks.
        send, receive = trio.open_memory_channel[bytes](math.inf)
        output = Output(code, message)
        output.properties.update(props)
        output.stream = ChunkStream(receive, join=True)  # type: ignore[assignment]
        seq.send = send
        seq.job.set_result(output)

    def _offer(self, seq: _Sequence, data: bytes) -> None:
        if seq.send is None:
            return
        try:
            seq.send.send_nowait(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            seq.send = None  # its reader is gone: the sequence is cancelled below

    def _finish(self, seq_id: int, seq: _Sequence) -> None:
        del self.active[seq_id]
        if seq.send is not None:
            seq.send.close()
        if not seq.job.finished():  # GONE: its client left, nobody reads an answer
            seq.job.cancelled = True
            seq.job.set_error(WorkerDied("The request was cancelled"))
        self.worker.requests += 1
        self.worker.source.batch_done(self.worker)
        self._place_free.set()

    async def _send_cancels(self) -> None:
        frames = bytearray()
        for seq_id, seq in self.active.items():
            if seq.cancelling:
                continue
            send = seq.send
            if send is not None and send.statistics().open_receive_channels == 0:
                seq.send = send = None  # the HTTP side closed its stream: the client left
            gone = seq.job.cancelled or (send is None and seq.job.result is not None
                                         and seq.job.result.stream is not None)
            if gone:
                seq.cancelling = True
                frames += _batch.encode_request(
                    {rolling.SEQ: str(seq_id), rolling.CANCEL: "1"}, [], [])
        if frames:
            async with self._send_lock:
                await self.stream.send_all(frames)

    def _sync_worker(self) -> None:
        """The worker's view for the pool and Worker._end: what it holds, busy or idle."""
        worker = self.worker
        worker.inflight = [seq.job for seq in self.active.values()]
        if worker.inflight:
            worker.state = WorkerState.BUSY
        else:
            worker.state = WorkerState.IDLE
            worker.last_active = trio.current_time()

    def _fail_streams(self) -> None:
        """The worker is gone: each started stream ends with its error line (and so
        completes, as LMI's do); Worker._end answers every job that has no answer yet."""
        for seq in self.active.values():
            if seq.send is not None:
                try:
                    if seq.error_line:
                        seq.send.send_nowait(seq.error_line)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                seq.send.close()
        self._sync_worker()
