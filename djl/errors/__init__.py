"""The exception hierarchy: every error a client can see, with its HTTP status and wording.

Each class carries the HTTP ``status`` and the ``type`` name that the error body shows
(the Java class names of DJL Serving, spec §1.4). Messages that appear in more than one
place are built by class methods here, so each wording exists once.

Inference failures (spec §1.4 "mapping B") have a ``config_key``: the global setting that
may override their status (``throttle_error_http_code`` and friends). ``djl.http.codec``
alone renders these objects as ``{"code", "type", "message"}``. The package's rooms:

- ``base``: ``DjlError`` and ``exception_leaves``;
- ``management``: mapping A, management and routing (400, 404, 409, 503 ...);
- ``inference``: mapping B, inference failures;
- ``classify``: the one rule that turns a failure into a kind for the breaker and metrics;
- ``frames``: the worker pipe's errors and the error kinds its frames carry.

This package is shared with the worker runtime, so it imports nothing else from djl.
"""

from __future__ import annotations

from djl.errors.adapters import AdapterError
from djl.errors.base import DjlError, exception_leaves
from djl.errors.classify import Failure, failure_of, failure_of_code
from djl.errors.frames import (
    ERROR_BAD_MODEL,
    ERROR_LOAD,
    ERROR_OOM,
    ERROR_OUTPUT,
    ITEM_ERROR_KINDS,
    FrameError,
    FrameTooLarge,
    ItemError,
)
from djl.errors.inference import (
    BadInput,
    Capacity,
    OutOfMemory,
    OutputTooLarge,
    StreamCut,
    TranslateError,
    WlmError,
    WlmShutdown,
    WorkerDied,
)
from djl.errors.management import (
    AsyncResultsFull,
    BadRequest,
    Conflict,
    Forbidden,
    HeadTooLarge,
    IllegalArgument,
    MethodNotAllowed,
    ModelLoadError,
    ModelNotFound,
    NotFound,
    PayloadTooLarge,
    RayPlacement,
    RequestTimeout,
    ServiceUnavailable,
    SourceError,
    Unauthorized,
)

__all__ = [
    "ERROR_BAD_MODEL", "ERROR_LOAD", "ERROR_OOM", "ERROR_OUTPUT", "ITEM_ERROR_KINDS",
    "AdapterError", "AsyncResultsFull", "BadInput", "BadRequest", "Capacity", "Conflict",
    "DjlError",
    "Failure", "Forbidden", "FrameError", "FrameTooLarge", "HeadTooLarge", "IllegalArgument",
    "ItemError", "MethodNotAllowed", "ModelLoadError", "ModelNotFound", "NotFound",
    "OutOfMemory", "OutputTooLarge", "PayloadTooLarge", "RayPlacement", "RequestTimeout",
    "ServiceUnavailable", "SourceError", "StreamCut", "TranslateError", "Unauthorized",
    "WlmError", "WlmShutdown", "WorkerDied", "exception_leaves", "failure_of",
    "failure_of_code",
]
