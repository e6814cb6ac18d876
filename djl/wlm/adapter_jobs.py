"""A worker's adapter jobs (djl/adapters.py): the ones posted to it alone, and the ones that
bring a starting worker every registered adapter before it serves.

A posted job goes before any queued one (``Worker.control``); it is sent with its own
``handler`` (register_adapter, ...), never the model's. At start-up, between loading and
serving, the worker registers what its pool's table holds and repeats until nothing is
missing (the table may change meanwhile); an adapter it cannot register is a failed load,
as in DJL, where such a worker dies.
"""

from __future__ import annotations

from typing import Any

import trio

from djl import _batch, adapter_calls, rolling
from djl.errors import FrameError, ModelLoadError, WorkerDied
from djl.io import Input, Output
from djl.wlm.frame_reader import next_frame


def frame(job: _batch.Job, seq: int | None = None) -> bytes:
    """The REQUEST frame of an adapter job (on a rolling channel: with its sequence id)."""
    props = dict(job.input.properties)
    if seq is not None:
        props[rolling.SEQ] = str(seq)
    return _batch.encode_request(props, job.input.content.keys, job.input.content.values)


async def call(worker: Any, stream: trio.SocketStream, decoder: _batch.FrameDecoder,
               inputs: Input, *, rolling_channel: bool) -> Output:
    """Run one adapter job on the process and return its answer (no other job in flight)."""
    job = _batch.Job(inputs)
    await stream.send_all(frame(job, 0 if rolling_channel else None))
    timeout = worker.source.config.predict_timeout_s
    while True:
        with trio.move_on_after(timeout) as scope:
            kind, payload = await next_frame(stream, decoder)
        if scope.cancelled_caught:
            raise WorkerDied(f"Prediction timed out after {timeout:g}s")
        if kind == _batch.RESPONSE and not rolling_channel:
            return _answer(payload)
        if kind == _batch.CHUNK and rolling_channel:
            _, items = rolling.decode_step(_batch.decode_chunk(payload)[1])
            for seq, item_kind, _tokens, data in items:
                if seq == 0 and item_kind == rolling.FULL:
                    return _answer(data)
            continue
        if kind == _batch.ERROR:
            _error_kind, message = _batch.decode_error(payload)
            return Output(500, message)
        raise FrameError(f"unexpected frame kind {kind} for an adapter job")


async def sync(worker: Any, stream: trio.SocketStream, decoder: _batch.FrameDecoder) -> None:
    """Register every adapter of the pool's table on a worker that just loaded; returns
    with nothing missing and no await after the last look at the table, so a change made
    from then on reaches this worker as a posted job (it is live by then)."""
    table = getattr(worker.source, "adapters", None)
    if table is None:
        return
    rolling_channel = worker.source.command.rolling_batch_size > 0
    known: dict[str, int] = {}
    while True:
        pending = table.pending(known)
        if not pending:
            return
        for name, version, inputs in pending:
            output = await call(worker, stream, decoder, inputs,
                                rolling_channel=rolling_channel)
            if version < 0:
                known.pop(name, None)
            elif output.code >= 300:
                raise ModelLoadError(f"Failed to register adapter {name}: {output.message}")
            else:
                known[name] = version


def is_adapter_job(job: _batch.Job) -> bool:
    return job.input.properties.get("handler") in adapter_calls.HANDLERS


def _answer(payload: bytes) -> Output:
    code, message, props, keys, values = _batch.decode_response(payload)
    output = Output(code, message)
    output.properties = dict(props)
    for key, value in zip(keys or [], values or [], strict=True):
        output.content.add(key, value)
    return output
