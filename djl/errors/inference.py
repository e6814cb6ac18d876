"""Mapping B (spec §1.4): inference failures, whose status a global setting (their
``config_key``) may override."""

from __future__ import annotations

from djl.errors.base import DjlError


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
