"""A worker's init call: the first request its process gets, which loads the model.

The process answers with a response (the model loaded, maybe with its signature) or an
error; every way it can fail becomes a ModelLoadError whose message says why, which is
what registration answers and describe shows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import trio

from djl import _batch
from djl.config import ModelConfig
from djl.errors import ERROR_BAD_MODEL, ERROR_OOM, FrameError, ModelLoadError, WorkerDied
from djl.signature import SIGNATURE_PROPERTY, Signature
from djl.wlm.frame_reader import next_frame
from djl.wlm.launch import STOP_GRACE_S, WorkerCommand, WorkerProcess


async def initialise(
    stream: trio.SocketStream, decoder: _batch.FrameDecoder, process: WorkerProcess,
    command: WorkerCommand, config: ModelConfig,
) -> Signature | None:
    """Send the init request and read its answer: the model's signature as its engine
    reported it (None: nothing, e.g. a model.py handler), or ModelLoadError."""
    props = dict(command.init_properties)
    props["handler"] = command.handler
    try:
        await stream.send_all(_batch.encode_request(props, [], []))
        with trio.fail_after(config.model_loading_timeout_s):
            kind, payload = await next_frame(stream, decoder)
    except trio.TooSlowError:
        raise ModelLoadError(
            f"Model loading timed out after {config.model_loading_timeout_s:g}s"
        ) from None
    except FrameError as exc:
        raise ModelLoadError(f"Failed to initialize model: {exc.message}") from None
    except (WorkerDied, trio.BrokenResourceError, trio.ClosedResourceError):
        with trio.move_on_after(STOP_GRACE_S):
            await process.wait()
        why = f": {process.death}" if process.death else ""
        raise ModelLoadError(
            f"Python stream closed unexpectedly, exit code: {process.returncode}{why}"
        ) from None
    if kind == _batch.ERROR:
        error_kind, message = _batch.decode_error(payload)
        if error_kind == ERROR_OOM:
            raise ModelLoadError.out_of_memory()
        if error_kind == ERROR_BAD_MODEL:
            raise ModelLoadError.bad_model(message)
        raise ModelLoadError(f"Failed to initialize model: {message}")
    code, message, props, keys, values = _batch.decode_response(payload)
    if code == ModelLoadError.out_of_memory().status:
        raise ModelLoadError.out_of_memory()
    if code >= 300:
        raise ModelLoadError(
            f"Failed to initialize model: {message}: {_init_detail(values)}".rstrip(": ")
        )
    if SIGNATURE_PROPERTY in props:
        return Signature.decode(props[SIGNATURE_PROPERTY])
    return None


def _init_detail(values: Sequence[bytes] | None) -> str:
    """What the failed init call said: the ``error`` of the runtime's JSON error body (the
    exception text) rather than the whole body, else the body as text."""
    text = b"".join(values or []).decode("utf-8", "replace")
    try:
        body = json.loads(text)
    except ValueError:
        return text
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"]
    return text


__all__ = ["initialise"]
