"""The exception hierarchy: every error a client can see, with its HTTP status and wording.

Each class carries the HTTP ``status`` and the ``type`` name that the error body shows
(the Java class names of DJL Serving, spec §1.4). Messages that appear in more than one
place are built by class methods here, so each wording exists once.

Inference failures (spec §1.4 "mapping B") have a ``config_key``: the global setting that
may override their status (``throttle_error_http_code`` and friends). ``http/codec.py``
alone renders these objects as ``{"code", "type", "message"}``.

This module is shared with the worker runtime, so it imports nothing from djl.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class DjlError(Exception):
    """Base class: an error with an HTTP status and a spec type name."""

    status: int = 500
    type: str = "ServerError"
    #: Global config key whose value, if set, replaces ``status`` for inference failures.
    config_key: str | None = None

    def __init__(self, message: str = "", *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


# -- mapping A: management and routing ------------------------------------------------------


class BadRequest(DjlError):
    status = 400
    type = "BadRequestException"

    @classmethod
    def invalid_starting_token(cls, token: str) -> BadRequest:
        """Spec §3.8: a poll for a result the store does not hold (never had, or dropped)."""
        return cls(f"Invalid x-starting-token: {token}")

    @classmethod
    def unnamed_workflow(cls) -> BadRequest:
        return cls('The workflow has no name: set "name" in the workflow file or model_name')

    @classmethod
    def malformed(cls, reason: str) -> BadRequest:
        """A request the HTTP parser refuses (its connection closes after the answer)."""
        return cls(f"Malformed HTTP request: {reason}")

    @classmethod
    def prometheus_disabled(cls) -> BadRequest:
        """``GET /server/metrics`` without SERVING_PROMETHEUS=true (spec §2.8)."""
        return cls("Prometheus is not enabled, set SERVING_PROMETHEUS environment var to true "
                   "to enable prometheus metrics")


class RayPlacement(BadRequest):
    """A model placed on Ray (``load_on_devices=ray``) that cannot be."""

    @classmethod
    def not_configured(cls) -> RayPlacement:
        return cls("load_on_devices=ray needs a Ray cluster: set ray_address (config.properties) "
                   "or SERVING_RAY_ADDRESS to auto or host:port")

    @classmethod
    def bad_option(cls, key: str, value: str, expected: str) -> RayPlacement:
        return cls(f"Invalid option.{key} {value!r}: expected {expected}")

    @classmethod
    def mixed(cls) -> RayPlacement:
        return cls("A model is placed either on Ray (load_on_devices=ray) or on local devices, "
                   "not both")


class IllegalArgument(BadRequest):
    """Malformed parameter values (Java's IllegalArgumentException). The spec's [REC] is 400."""

    type = "IllegalArgumentException"

    @classmethod
    def invalid_url(cls, url: str) -> IllegalArgument:
        """A URL that does not parse (409, as the spec's URI syntax error)."""
        return cls(f"Invalid url: {url}", status=409)

    @classmethod
    def file_type(cls, file_type: str) -> IllegalArgument:
        return cls(f"Unexpected file type: {file_type}")

    @classmethod
    def number(cls, value: str) -> IllegalArgument:
        err = cls(f'For input string: "{value}"')
        err.type = "NumberFormatException"
        return err


class Conflict(DjlError):
    status = 409
    type = "BadRequestException"

    @classmethod
    def already_registered(cls, name: str, version: str | None) -> Conflict:
        label = f"{name}:{version}" if version else name
        return cls(f"Workflow {label} is already registered.")


class NotFound(DjlError):
    status = 404
    type = "ResourceNotFoundException"

    @classmethod
    def model_url_required(cls) -> NotFound:
        """Spec §3.10: dynamic loading without a ``model_url``."""
        return cls("Parameter model_url is required.")

    @classmethod
    def model_url_denied(cls, url: str) -> NotFound:
        """Spec §3.10: a ``model_url`` that model_url_pattern or allowed_urls refuses."""
        return cls(f"Permission denied: {url}")

    @classmethod
    def resource(cls) -> NotFound:
        return cls("Requested resource is not found, please refer to API document.")


class ModelNotFound(NotFound):
    type = "ModelNotFoundException"

    @classmethod
    def model_or_workflow(cls, name: str) -> ModelNotFound:
        return cls(f"Model or workflow not found: {name}")

    @classmethod
    def workflow(cls, name: str) -> ModelNotFound:
        return cls(f"Workflow not found: {name}")

    @classmethod
    def workflow_version(cls, name: str, version: str) -> ModelNotFound:
        """Describe with an unknown version: DJL doubles the prefix, and so do we (spec
        §2.6, a quirk kept for clients that match the text)."""
        return cls.workflow(f"Workflow not found: {name}/{version}")

    @classmethod
    def invalid_url(cls, url: str) -> ModelNotFound:
        return cls(f"Invalid model url: {url}")

    @classmethod
    def no_engine(cls, model_dir: str) -> ModelNotFound:
        return cls(f"Failed to detect engine of the model: {model_dir}")

    @classmethod
    def v2(cls, name: str, version: str | None = None) -> ModelNotFound:
        """The Open Inference Protocol's 404 (spec §2.11: ``Model not found: res``)."""
        return cls(f"Model not found: {name}" + (f", version {version}" if version else ""))


class MethodNotAllowed(DjlError):
    status = 405
    type = "MethodNotAllowedException"

    def __init__(self, message: str = "") -> None:
        super().__init__(
            message or "Requested method is not allowed, please refer to API document."
        )


class PayloadTooLarge(DjlError):
    status = 413
    type = "PayloadTooLargeException"

    @classmethod
    def request(cls, max_request_size: int) -> PayloadTooLarge:
        """Spec §1.5: a request whose body is over ``max_request_size``."""
        return cls(f"Request body exceeds max_request_size ({max_request_size} bytes)")


class HeadTooLarge(DjlError):
    """A request line and headers over the server's limit (RFC 6585 §5)."""

    status = 431
    type = "RequestHeaderFieldsTooLargeException"

    @classmethod
    def head(cls, limit: int) -> HeadTooLarge:
        return cls(f"Request line and headers exceed {limit} bytes")


class RequestTimeout(DjlError):
    """A client stopped sending the body it declared."""

    status = 408
    type = "RequestTimeoutException"

    @classmethod
    def body(cls, timeout_s: float) -> RequestTimeout:
        return cls(f"Request body not received within request_body_timeout ({timeout_s:g}s)")


class Unauthorized(DjlError):
    status = 401
    type = "UnauthorizedException"


class Forbidden(DjlError):
    """A source the ``allowed_urls`` setting does not admit."""

    status = 403
    type = "ForbiddenException"

    @classmethod
    def not_allowed(cls, url: str, resolved: str) -> Forbidden:
        """``url`` as sent; ``resolved``: the canonical form the patterns were matched to."""
        where = f" (resolves to {resolved})" if resolved != url else ""
        return cls(f"URL is not allowed by allowed_urls: {url}{where}")


class SourceError(BadRequest):
    """A model or workflow source that cannot be used: unreachable, corrupt, unsafe, too big.

    ``status`` is set per case (400 corrupt/unsafe, 404 remote missing, 413 too large,
    502 upstream failure, 504 upstream timeout); the message names the URL or entry.
    """

    type = "ModelSourceException"

    @classmethod
    def invalid_url(cls, url: str, reason: object) -> SourceError:
        return cls(f"Invalid URL {url}: {reason}", status=400)

    @classmethod
    def cache_unwritable(cls, target: object, reason: object) -> SourceError:
        return cls(f"Cannot write to the cache {target}: {reason}", status=500)


class ServiceUnavailable(DjlError):
    status = 503
    type = "ServiceUnavailableException"

    @classmethod
    def not_ready(cls, name: str) -> ServiceUnavailable:
        return cls(f"Model or workflow is not ready: {name}")

    @classmethod
    def server_stopping(cls) -> ServiceUnavailable:
        return cls("The server is shutting down")

    @classmethod
    def models_not_ready(cls, names: list[str]) -> ServiceUnavailable:
        """The Open Inference Protocol's server readiness: some model is not Healthy."""
        return cls(f"Models not ready: {', '.join(names)}")


class AsyncResultsFull(ServiceUnavailable):
    """Every slot of the async result store holds a request still running (spec §3.8)."""

    @classmethod
    def pending(cls, limit: int) -> AsyncResultsFull:
        return cls(f"Too many asynchronous requests in flight (async_result_max_entries "
                   f"{limit}); retry later")


class ModelLoadError(DjlError):
    """A model that cannot be loaded (Java's EngineException at load time)."""

    status = 500
    type = "EngineException"

    @classmethod
    def out_of_memory(cls) -> ModelLoadError:
        """The worker ran out of memory while loading (507, as DJL answers)."""
        return cls("OOM", status=OutOfMemory.status)

    @classmethod
    def bad_model(cls, detail: str) -> ModelLoadError:
        """The folder is not a model its engine can load (a client's fault: 400)."""
        return cls(f"Failed to initialize model: {detail}", status=400)

    @classmethod
    def ray_unreachable(cls, address: str, detail: str) -> ModelLoadError:
        """The Ray cluster named by ``ray_address`` could not be reached."""
        return cls(f"Cannot reach the Ray cluster at {address}: {detail}", status=503)

    @classmethod
    def ray_placement(cls, resources: str, timeout_s: float) -> ModelLoadError:
        """No Ray node took a worker's actor in time."""
        return cls(f"No Ray node placed a worker needing {resources} within "
                   f"{timeout_s:g}s (ray_placement_timeout): the cluster lacks those "
                   "resources, or the node that had them is gone")


# -- mapping B: inference failures -----------------------------------------------------------


class WlmError(DjlError):
    """Workload-manager failure: not ready, workers gone, worker died."""

    status = 503
    type = "WlmException"
    config_key = "wlm_error_http_code"

    @classmethod
    def not_ready(cls, model_id: str) -> WlmError:
        return cls(f"Model is not ready: {model_id}")

    @classmethod
    def shutting_down(cls) -> WlmError:
        return cls("Worker shutting down")


class WorkerDied(WlmError):
    """The worker process is gone or unusable; its in-flight jobs get this (503)."""


class WlmShutdown(WlmError):
    type = "WlmShutdownException"

    @classmethod
    def all_workers(cls, model_id: str) -> WlmShutdown:
        return cls(f"All model workers has been shutdown: {model_id}")


class StreamCut(WlmError):
    """A streamed response ended before the model's last chunk (the worker died, or the
    client stopped reading): the HTTP side must not close it as if it were complete."""


class Capacity(WlmError):
    """The job queue is full (spec §5.3)."""

    type = "WlmCapacityException"
    config_key = "throttle_error_http_code"

    @classmethod
    def queue_full(cls, model_id: str) -> Capacity:
        return cls(f"Worker queue capacity exceeded for model: {model_id}")


class OutOfMemory(DjlError):
    status = 507
    type = "WlmOutOfMemoryException"

    @classmethod
    def admission(cls) -> OutOfMemory:
        return cls("No enough memory to load the model.")


class TranslateError(DjlError):
    """A batch the engine could not map back to its requests; the worker lives on."""

    status = 400
    type = "TranslateException"
    config_key = "bad_request_http_code"

    @classmethod
    def batch_size_mismatch(cls, expected: int, actual: int) -> TranslateError:
        return cls(f"Batch output size mismatch, expected: {expected}, actual: {actual}")

    @classmethod
    def unexpected_key(cls, key: str) -> TranslateError:
        return cls(f"Unexpected batch output key: {key}")

    @classmethod
    def admission_timeout(cls, timeout_s: float) -> TranslateError:
        """A rolling-batch request that found no place in a batch within predict_timeout
        (spec §6.10: DJL's words)."""
        return cls(f"Time out in: {timeout_s:g}")


class BadInput(TranslateError, ValueError):
    """A request payload the tensor codecs cannot read: not JSON, not numbers, ragged,
    truncated, corrupt, an unsupported dtype or content type. DJL's translator answers
    these 400 ``TranslateException`` (spec §1.4 mapping B, §3.6); the message says what is
    wrong and where. A ValueError too, which is what ``djl.ndlist``'s callers catch."""

    @classmethod
    def header_length(cls, value: str, body_size: int) -> BadInput:
        """Triton's binary tensor extension: a JSON length that is no byte count within
        the body."""
        return cls(f"Inference-Header-Content-Length {value} is not within the body's "
                   f"{body_size} bytes")

    @classmethod
    def input_count(cls, want: int, names: list[str | None], got: int) -> BadInput:
        """A request with more or fewer tensors than the model's signature has inputs."""
        listed = ", ".join(name or "?" for name in names)
        return cls(f"The model takes {want} input{'s' if want != 1 else ''} ({listed}); "
                   f"the request has {got}")

    @classmethod
    def input_shape(cls, index: int, name: str | None, shape: list[int],
                    declared: list[int]) -> BadInput:
        """A tensor whose rank or dimensions the model's signature does not allow."""
        return cls(f"Input {index} ({name or '?'}) has shape {shape}, which does not fit the "
                   f"model's {declared} (-1 is any size; a request may leave out the "
                   "first dimension)")

    @classmethod
    def batch_rows(cls, rows: list[int]) -> BadInput:
        """Inputs that carry the batch dimension but disagree on its size."""
        return cls(f"The inputs carry batch dimensions of different sizes ({rows}): they "
                   "must agree")


class OutputTooLarge(DjlError):
    """A model answered with an item over the worker item limit: its batch fails with this,
    the worker lives on (a request must not be able to knock a model over)."""

    status = 500
    type = "OutputTooLargeException"
    config_key = "server_error_http_code"

    @classmethod
    def item(cls, size: int, limit: int) -> OutputTooLarge:
        return cls(
            f"The model's output item of {size} bytes exceeds the limit of {limit} bytes "
            "(max_worker_item_bytes)"
        )

    @classmethod
    def async_result(cls, limit: int) -> OutputTooLarge:
        return cls(f"The result exceeds the async result store's limit of {limit} bytes "
                   "(async_result_max_bytes)")

    @classmethod
    def frame(cls, size: int, limit: int) -> OutputTooLarge:
        return cls(
            f"The model's answer of {size} bytes exceeds the limit of {limit} bytes for one "
            "batch (max_worker_item_bytes per item of a full batch)"
        )


class Failure(enum.Enum):
    """What kind of failure an inference was, for the breaker and the metrics (spec §3.9)."""

    #: The workload manager's: queue full, model not ready, worker died or unusable.
    WLM = "wlm"
    #: The server's: an unexpected exception, or an answer with a code >= 500 or 424.
    SERVER = "server"


#: Mapping B keys (spec §1.4) whose failures are the workload manager's.
_WLM_KEYS = frozenset({"wlm_error_http_code", "throttle_error_http_code"})


def failure_of(error: BaseException) -> Failure | None:
    """The kind of failure an inference that raised ``error`` was; None for the client's
    own (a bad request, an unknown model). The one rule: by the mapping B key, else an
    error's status >= 500 is the server's, and an exception that is no DjlError is too."""
    if not isinstance(error, DjlError):
        return Failure.SERVER
    key = error.config_key
    if key in _WLM_KEYS:
        return Failure.WLM
    if key == "server_error_http_code" or (key is None and error.status >= 500):
        return Failure.SERVER
    return None


def failure_of_code(code: int) -> Failure | None:
    """The kind of failure an Output with this code was (spec §3.5): >= 500 or 424."""
    return Failure.SERVER if code >= 500 or code == 424 else None


class FrameError(DjlError):
    """The worker pipe carried bytes that are not a valid frame: the worker is unusable."""

    status = 503
    type = "WlmException"
    config_key = "wlm_error_http_code"


class FrameTooLarge(FrameError):
    """A frame over the limit its receiver set: the encoder refuses to write it, the
    decoder to read it. ``size`` and ``limit`` are the frame's bytes after its length."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds the limit of {limit}")
        self.size = size
        self.limit = limit


#: The kinds of a worker's ERROR frame: ``runtime/__main__.py`` sends them and
#: ``wlm/worker.py`` turns them back into these classes.
#: The model cannot load: its registration fails (ModelLoadError).
ERROR_LOAD = "load"
#: The model cannot load for lack of memory (ModelLoadError.out_of_memory, 507).
ERROR_OOM = "oom"
#: The folder is not a model the engine can load (a bad config, no weights): 400.
ERROR_BAD_MODEL = "bad_model"
#: An answer over the item or frame limit: its batch fails (OutputTooLarge), the worker
#: serves on.
ERROR_OUTPUT = "output"


#: Error kinds an engine may report for one job of a batch (in a RESULTS frame): the
#: job fails with that class, its batch-mates and the worker carry on.
ITEM_ERROR_KINDS: dict[str, type[DjlError]] = {
    "input": TranslateError,
    "output": OutputTooLarge,
}


@dataclass(frozen=True)
class ItemError:
    """What an engine reports for one failed job of a batch: a key of ITEM_ERROR_KINDS and
    the message its client reads."""

    kind: str
    message: str


def exception_leaves(exc: BaseException) -> list[BaseException]:
    """The plain exceptions inside (possibly nested) exception groups, in order."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in exception_leaves(sub)]
    return [exc]
