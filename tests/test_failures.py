"""One classification of inference failures (errors.failure_of) and the one observer
(djl.failures) that tells the breaker and the metrics the same thing (spec §3.9)."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from djl.app import ServerParts
from djl.breaker import ErrorRateBreaker, Rule
from djl.config import RegisterParams, ServerConfig
from djl.errors import (
    BadInput,
    Capacity,
    Failure,
    FrameError,
    ModelNotFound,
    NotFound,
    OutOfMemory,
    OutputTooLarge,
    TranslateError,
    WlmError,
    WorkerDied,
    failure_of,
    failure_of_code,
)
from djl.failures import FailureObserver
from djl.io import Input, Output
from djl.metrics import ServerMetrics
from djl.registry import Model, Workflow

FAILURES = [
    (Capacity.queue_full("m"), Failure.WLM), (WlmError.not_ready("m"), Failure.WLM),
    (WorkerDied("gone"), Failure.WLM), (FrameError("bad frame"), Failure.WLM),
    (RuntimeError("unexpected"), Failure.SERVER), (OutOfMemory("oom"), Failure.SERVER),
    (OutputTooLarge.item(2, 1), Failure.SERVER), (BadInput("bad"), None),
    (TranslateError("mismatch"), None), (ModelNotFound.model_or_workflow("m"), None),
    (NotFound.resource(), None),
]


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def _counted(metrics: ServerMetrics) -> tuple[float, float]:
    families = {f.name: f.samples for f in
                text_string_to_metric_families(metrics.exposition().decode())}
    return families["WlmError"][0].value, families["ServerError"][0].value


@pytest.mark.parametrize(("error", "kind"), FAILURES)
def test_breaker_and_metrics_count_a_failure_as_the_same_kind(error, kind):
    assert failure_of(error) is kind
    wlm = ErrorRateBreaker(wlm=Rule(1, 60), clock=Clock())
    server = ErrorRateBreaker(server=Rule(1, 60), clock=Clock())
    metrics = ServerMetrics(lambda: iter(()))
    for observer in (FailureObserver(wlm, metrics), FailureObserver(server, None)):
        for _ in range(2):
            observer.raised(error)
    assert (wlm.tripped, server.tripped) == (kind is Failure.WLM, kind is Failure.SERVER)
    assert _counted(metrics) == (2 * (kind is Failure.WLM), 2 * (kind is Failure.SERVER))


@pytest.mark.parametrize(("code", "counts"), [(200, False), (204, False), (400, False),
                                             (404, False), (424, True), (500, True),
                                             (503, True)])
def test_output_codes(code, counts):
    assert (failure_of_code(code) is Failure.SERVER) == counts
    breaker = ErrorRateBreaker(any_error=Rule(1, 60), clock=Clock())
    metrics = ServerMetrics(lambda: iter(()))
    observer = FailureObserver(breaker, metrics)
    observer.answered(code)
    observer.answered(code)
    assert breaker.tripped == counts
    assert _counted(metrics) == (0, 2 * counts)


@pytest.mark.parametrize(("error", "kind"), FAILURES)
async def test_predict_counts_through_the_one_observer(error, kind):
    """The manager's predictions reach the breaker and the metrics by one path."""
    manager = ServerParts(ServerConfig(prometheus=True, error_rate_wlm="1/PT1M")).manager
    params = RegisterParams(url="file:/m", model_name="m")
    workflow = Workflow("m", None, {"m": Model("m", None, params.url, params)})

    async def infer(_workflow: Workflow, _inputs: Input, _watch: object = None) -> Output:
        raise error

    manager.invocation.infer = infer  # type: ignore[method-assign]
    for _ in range(2):
        with pytest.raises(type(error)):
            await manager.predict(workflow, Input())
    assert manager.metrics is not None
    assert manager.breaker.tripped == (kind is Failure.WLM)
    assert _counted(manager.metrics) == (2 * (kind is Failure.WLM),
                                         2 * (kind is Failure.SERVER))
