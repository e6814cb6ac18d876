"""The server side of a batch-at-a-time worker: take a batch, send it, read its answer.

``BatchSession`` is a Worker's serving loop unless its model generates text (then
djl/wlm/rolling.py's RollingSession serves instead). It answers each job of a batch from
the response (one for the batch, split by the batch's keys), a RESULTS frame (one answer
per job), or a stream of CHUNK frames relayed to the one job of the batch. Whatever ends
it — the process dying, a timeout, a corrupt frame — raises to the Worker, which answers
every job still in flight.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Sequence
from typing import Protocol

import trio

from djl import _batch
from djl.errors import (
    ERROR_OUTPUT,
    ITEM_ERROR_KINDS,
    DjlError,
    FrameError,
    OutputTooLarge,
    TranslateError,
    WorkerDied,
)
from djl.io import Output, PairList
from djl.sockio import FastStream
from djl.wlm import adapter_jobs
from djl.wlm.chunk_stream import ChunkStream
from djl.wlm.frame_reader import next_frame, ready_frame
from djl.wlm.seams import BatchSource
from djl.wlm.states import WorkerState

log = logging.getLogger("djl.worker")

#: Only models answering faster than this pipeline: there the round trip matters.
PIPELINE_MAX_SERVICE_S = 0.005
#: Bound on a streamed response's chunks waiting for a slow HTTP client.
STREAM_BUFFER = 64


class BatchWorker(Protocol):
    """What a session needs of its Worker (djl/wlm/worker.py, which starts the session:
    this module never imports it)."""

    source: BatchSource
    label: str
    state: WorkerState
    last_active: float
    inflight: list[_batch.Job]
    requests: int
    #: How many jobs at the head of ``inflight`` the process is answering now (the rest are
    #: pipelined batches it has not started): what is lost should it die.
    answering: int
    #: Moving average of seconds per batch in the process (math.inf: not measured yet).
    service_s: float
    #: Adapter jobs for it alone, sent before any queued job (djl/wlm/adapter_jobs.py).
    control: deque[_batch.Job]

    def hold(self, jobs: list[_batch.Job]) -> None: ...


class BatchSession:
    """One worker's batches, from its first to its retirement (``run`` returns) or death
    (``run`` raises)."""

    def __init__(self, worker: BatchWorker, stream: trio.SocketStream,
                 decoder: _batch.FrameDecoder) -> None:
        self.worker = worker
        #: Writes and reads that need no wait skip trio's scheduler (one of each per
        #: batch at batch size 1: the front's cost per request).
        self.stream = FastStream(stream)
        self.decoder = decoder

    async def run(self) -> None:
        """Take batches and answer them, until retired, cancelled or the process fails.

        Pipelining: for a fast model (mean service time under PIPELINE_MAX_SERVICE_S) the
        worker also sends up to ``pipeline_depth - 1`` full batches that are already queued,
        in the same write. The runtime answers strictly in order, so the process never
        waits for a round trip and the server makes fewer system calls per request; each
        request is still handled exactly as if sent alone. Slow models never pipeline, so
        a queued job is not held behind one while another worker frees up.
        """
        worker = self.worker
        source = worker.source
        extra = {"handler": source.command.handler}
        timeout = source.config.predict_timeout_s
        while True:
            if worker.control:
                await self._adapter_job()
                continue
            batch = await source.take_batch(worker)
            if batch is None:
                return
            if not batch:  # every job's client left while it filled
                worker.state = WorkerState.IDLE
                continue
            batches = [batch]
            depth = source.command.pipeline_depth
            if depth > 1 and worker.service_s < PIPELINE_MAX_SERVICE_S:
                batches += source.take_ready(worker, depth - 1)
            worker.hold([job for b in batches for job in b])
            frames = _batch.encode_batch([job.input for job in batch], extra)
            for more in batches[1:]:
                frames += _batch.encode_batch([job.input for job in more], extra)
            started = trio.current_time()
            # The first batch is the one the process is on, from the moment it is sent: if
            # the write finds the process dead, the pipelined ones behind it are requeued.
            worker.answering = len(batch)
            await self.stream.send_all(frames)
            for current in batches:
                worker.answering = len(current)
                frame = ready_frame(self.decoder)
                if frame is None:  # a wait, under the prediction timeout
                    with trio.move_on_after(timeout) as scope:
                        frame = await next_frame(self.stream, self.decoder)
                    if scope.cancelled_caught:
                        raise WorkerDied(f"Prediction timed out after {timeout:g}s")
                kind, payload = frame
                if kind == _batch.RESPONSE:
                    await self._deliver(current, payload)
                elif kind == _batch.RESULTS:
                    _deliver_each(current, payload)
                else:
                    _refused(current, kind, payload)
                del worker.inflight[: len(current)]
                worker.requests += len(current)
                now = trio.current_time()
                self._observe_service(now - started)
                started = now
                source.batch_done(worker)
            worker.answering = 0
            worker.state = WorkerState.IDLE
            worker.last_active = trio.current_time()

    async def _adapter_job(self) -> None:
        """One adapter job of this worker's own (djl/wlm/adapter_jobs.py)."""
        worker = self.worker
        job = worker.control.popleft()
        worker.hold([job])
        job.set_result(await adapter_jobs.call(worker, self.stream, self.decoder, job.input,
                                               rolling_channel=False))
        worker.inflight = []
        worker.state = WorkerState.IDLE

    def _observe_service(self, seconds: float) -> None:
        """Moving average of the time the process takes per batch."""
        worker = self.worker
        if worker.service_s == math.inf:
            worker.service_s = seconds
        else:
            worker.service_s += 0.2 * (seconds - worker.service_s)

    async def _deliver(self, batch: Sequence[_batch.Job], payload: bytes) -> None:
        code, message, props, keys, values = _batch.decode_response(payload)
        if keys is None:
            await self._relay_stream(batch, code, message, props)
            return
        n = len(batch)
        if n == 1 or code >= 300:
            for job in batch:
                job.set_result(_output(code, message, props, keys, values))
            return
        try:
            items = _batch.split_batch(n, keys, values)
        except DjlError as exc:
            for job in batch:
                job.set_error(exc)
            return
        for job, (key, value) in zip(batch, items, strict=True):
            job.set_result(_output(code, message, props, [key], [value]))

    async def _relay_stream(self, batch: Sequence[_batch.Job], code: int, message: str,
                            props: dict[str, str]) -> None:
        """Forward CHUNK frames to the job until the last one; a gone client is skipped."""
        send, receive = trio.open_memory_channel[bytes](STREAM_BUFFER)
        chunks = ChunkStream(receive)
        output = Output(code, message)
        output.properties.update(props)
        output.stream = chunks  # type: ignore[assignment]
        batch[0].set_result(output)
        for job in batch[1:]:
            job.set_error(WorkerDied("A streamed response cannot be batched"))
        timeout = self.worker.source.config.predict_timeout_s
        # Its client may have left while the model ran: then nobody will ever read or close
        # the stream, so it is drained here instead of held for stream_send_timeout_s.
        abandoned = batch[0].cancelled
        async with send:
            try:
                while True:
                    with trio.move_on_after(timeout) as scope:
                        kind, payload = await next_frame(self.stream, self.decoder)
                    if scope.cancelled_caught:
                        raise WorkerDied(f"Stream chunk timed out after {timeout:g}s")
                    if kind != _batch.CHUNK:
                        raise FrameError(f"expected a stream chunk, got frame kind {kind}")
                    more, data = _batch.decode_chunk(payload)
                    if data and not abandoned:
                        abandoned = not await self._offer(send, chunks, data)
                    if not more:
                        return
            except BaseException as exc:
                chunks.cut_reason = getattr(exc, "message", None) or "Worker shutting down"
                raise

    async def _offer(self, send: trio.MemorySendChannel[bytes], chunks: ChunkStream,
                     data: bytes) -> bool:
        """Hand a chunk to the HTTP side. False once the client is gone, or when it has not
        taken a chunk within the stream timeout: then its stream is cut, so a client that
        stops reading cannot hold this worker."""
        with trio.move_on_after(self.worker.source.command.stream_send_timeout_s):
            try:
                await send.send(data)
                return True
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return False
        log.warning("worker %s: the stream's reader stalled; dropping the rest",
                    self.worker.label)
        chunks.cut_reason = "The client did not read the stream in time"
        await send.aclose()
        return False


def _refused(batch: Sequence[_batch.Job], kind: int, payload: bytes) -> None:
    """The runtime answered a batch with an ERROR frame it recovers from (an output over
    the item limit): that batch fails, the worker serves on."""
    if kind != _batch.ERROR:
        raise FrameError(f"unexpected frame kind {kind} from worker")
    error_kind, message = _batch.decode_error(payload)
    if error_kind != ERROR_OUTPUT:
        raise FrameError(f"unexpected {error_kind} error from worker: {message}")
    error = OutputTooLarge(message)
    for job in batch:
        job.set_error(error)


def _deliver_each(batch: Sequence[_batch.Job], payload: bytes) -> None:
    """A RESULTS frame: the engine answered each job on its own (its own code and headers,
    or an error such as a bad input), so one request's fault is its alone."""
    results = _batch.decode_results(payload)
    if len(results) != len(batch):
        error = TranslateError.batch_size_mismatch(len(batch), len(results))
        for job in batch:
            job.set_error(error)
        return
    for job, (kind, item) in zip(batch, results, strict=True):
        if kind == _batch.ERROR:
            error_kind, message = _batch.decode_error(item)
            job.set_error(ITEM_ERROR_KINDS.get(error_kind, WorkerDied)(message))
            continue
        code, message, props, keys, values = _batch.decode_response(item)
        if keys is None:
            job.set_error(WorkerDied("A streamed response cannot be batched"))
        else:
            job.set_result(_output(code, message, props, keys, values))


def _output(
    code: int, message: str, props: dict[str, str], keys: list[str | None], values: list[bytes]
) -> Output:
    output = Output(code, message)
    output.properties = dict(props)
    output.content = PairList(zip(keys, values, strict=True))
    return output


__all__ = ["PIPELINE_MAX_SERVICE_S", "BatchSession", "BatchWorker"]
