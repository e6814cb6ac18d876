"""The one classification of inference failures, for the breaker and the metrics."""

from __future__ import annotations

import enum

from djl.errors.base import DjlError


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
