"""Invocation: a workflow's answer to a request, observed (spec §3.3-§3.5, §3.9, §7.4).

``predict`` is what the HTTP side calls: ``infer`` with its failure counted once for the
breaker and the metrics (``djl.failures``) and, with metrics on, its RequestLatency.
``infer`` runs a single model's job or a workflow's graph; ``call_model`` submits one job
to a model's pool and waits for it, watching the client meanwhile (:data:`Watch`).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

from djl import adapters
from djl.errors import TranslateError, WlmError
from djl.failures import FailureObserver
from djl.io import Input, Output
from djl.registry.endpoints import Model, Workflow
from djl.status import ModelStatus
from djl.wlm.pool import priority_of
from djl.workflow.graph import execute

T = TypeVar("T")

#: What a request does while it waits for a model: an async function that never returns
#: normally (it listens for its client, and cancels the request if the client leaves);
#: it is cancelled once the job is done. The HTTP front passes one.
Watch = Callable[[], Awaitable[None]]


class _Done:
    """A job's ``done`` for a caller that waits by running a :data:`Watch`: setting it
    also ends the watch."""

    __slots__ = ("event", "scope")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.scope: trio.CancelScope | None = None

    def set(self) -> None:
        self.event.set()
        if self.scope is not None:
            self.scope.cancel()

    async def wait(self) -> None:
        await self.event.wait()


async def watching(watch: Watch | None, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``await fn(*args)`` with ``watch`` running beside it in a task (where the wait is not
    a single job's: workflows, streams)."""
    if watch is None:
        return await fn(*args)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            result = await fn(*args)
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The watch fails only by being cancelled: fn's error is raised as itself, so
        # its status holds (a Cancelled stays in its group, for trio's cancel scopes).
        if len(group.exceptions) == 1 and isinstance(group.exceptions[0], Exception):
            raise group.exceptions[0] from None
        raise
    return result


class Invocation:
    """Runs predictions against registered workflows."""

    def __init__(self, failures: FailureObserver) -> None:
        #: Counts each failed inference for the breaker and the metrics alike.
        self.failures = failures

    async def predict(self, workflow: Workflow, inputs: Input,
                      watch: Watch | None = None) -> Output:
        """``infer``, observed: its failure counted by ``failures`` and, with metrics on,
        its RequestLatency."""
        observe = workflow.observe_latency_us
        began = trio.current_time() if observe is not None else 0.0
        try:
            output = await self.infer(workflow, inputs, watch)
        except Exception as exc:  # answered with an error (a hang-up is not counted)
            if observe is not None:
                observe((trio.current_time() - began) * 1e6)
            self.failures.raised(exc)
            raise
        if observe is not None:
            observe((trio.current_time() - began) * 1e6)
        self.failures.answered(output.code)
        return output

    async def infer(self, workflow: Workflow, inputs: Input,
                    watch: Watch | None = None) -> Output:
        """The workflow's answer to ``inputs``. ``watch``: see :data:`Watch`."""
        model = workflow.single_model
        if model is not None:
            return await self.call_model(model, inputs, watch)
        return await self._execute(workflow, inputs, watch)

    async def _execute(self, workflow: Workflow, inputs: Input,
                       watch: Watch | None = None) -> Output:
        async def call(local_name: str, model_input: Input) -> Output:
            return await self.call_model(workflow.models[local_name], model_input)

        return await watching(watch, execute, workflow.spec, inputs, call)

    async def call_model(self, model: Model, inputs: Input,
                         watch: Watch | None = None) -> Output:
        pool = model.pool
        if pool is None or pool.status is not ModelStatus.READY:
            raise WlmError.not_ready(model.model_id)
        adapters.select(pool.adapters, inputs)
        done: _Done | None = None
        if watch is None:
            job = pool.submit(inputs, priority_of(inputs))
        else:
            done = _Done()
            job = pool.submit(inputs, priority_of(inputs), done)
        try:
            # A rolling-batch model's request waits for a place in its worker's batch
            # no longer than predict_timeout (spec §6.10); once it has one, it runs to
            # its end (each decode step is bounded by the worker's own timeout).
            rolling = getattr(pool.command, "rolling_batch_size", 0) > 0
            admission = pool.config.predict_timeout_s if rolling else math.inf
            with trio.move_on_after(admission):
                await _wait(job, watch, done)
            if not job.finished():
                if job.queued:
                    pool.discard(job)
                    raise TranslateError.admission_timeout(admission)
                await _wait(job, watch, done)
        except BaseException:
            if not job.finished():
                pool.discard(job)
            elif job.result is not None and job.result.stream is not None:
                job.result.stream.close()  # nobody will read it: free the worker now
            raise
        if job.error is not None:
            raise job.error
        return job.result


async def _wait(job: Any, watch: Watch | None, done: _Done | None) -> None:
    """Until ``job`` is answered, watching the client meanwhile when there is a watch."""
    if watch is None or done is None:
        await job.done.wait()
    elif not job.finished():
        # The waiting task watches itself: no task and no nursery per request.
        with trio.CancelScope() as done.scope:
            await watch()
        if not job.finished():
            await done.wait()


__all__ = ["Invocation", "Watch", "watching"]
