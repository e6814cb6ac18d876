"""Counting failed inferences: one observer that tells the error-rate breaker (spec §3.9)
and the metrics (``WlmError``, ``ServerError``) the same thing.

Which failure is which is ``errors.failure_of`` (an exception) and ``failure_of_code``
(an Output's code); nothing else classifies, so the breaker and the metrics cannot
disagree about a failure.
"""

from __future__ import annotations

from djl.breaker import ErrorRateBreaker
from djl.errors import Failure, failure_of, failure_of_code
from djl.metrics import ServerMetrics


class FailureObserver:
    """Hands each failed inference to the breaker and, with metrics on, to the metrics."""

    __slots__ = ("breaker", "metrics")

    def __init__(self, breaker: ErrorRateBreaker, metrics: ServerMetrics | None) -> None:
        self.breaker = breaker
        self.metrics = metrics

    def raised(self, error: BaseException) -> None:
        """An inference that raised ``error`` (a hang-up is not an inference failure)."""
        kind = failure_of(error)
        if kind is not None:
            self._count(kind)

    def answered(self, code: int) -> None:
        """An inference that returned an Output with ``code``."""
        kind = failure_of_code(code)
        if kind is not None:
            self._count(kind)

    def _count(self, kind: Failure) -> None:
        self.breaker.count(kind)
        if self.metrics is not None:
            self.metrics.inference_failed(kind)


__all__ = ["FailureObserver"]
