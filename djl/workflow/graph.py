"""Run a compiled workflow program (spec §7.3, §7.4); ``djl.workflow.program`` builds it.

:func:`execute` runs one request; every task it starts lives in a nursery the request's
evaluation owns, so nothing outlives it:

* evaluation is lazy: only what ``out`` needs runs;
* a :class:`Shared` variable runs at most once per request, as a task in the request's
  nursery, and everyone who needs it waits for its value (memoisation);
* the arguments of a call that need work run concurrently, in a nursery of that call;
* a model call gets an Input (an Output becomes ``output.as_input()``, so content and
  properties carry) and goes to ``call_model``, whose errors propagate unchanged;
* a model that answers with an error Output (code >= 400, e.g. 424 from a failing
  Python handler) stops the evaluation and that Output is the workflow's result, rather
  than being fed to the next model (Java feeds it on).

The first failure cancels the rest of the request's evaluation and is raised as itself,
not wrapped in an ExceptionGroup; ``trio.Cancelled`` always passes through.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, NoReturn, Protocol

import trio

from djl.errors import BadRequest, exception_leaves
from djl.io import Input, Output, PairList
from djl.workflow.functions import as_model_input, call_custom, type_name
from djl.workflow.program import (
    INPUT,
    KIND_BUILTIN,
    KIND_MODEL,
    Call,
    Callee,
    Node,
    Program,
    Shared,
)

logger = logging.getLogger(__name__)

#: ``(local model name, input) -> output``: submits a job to that model's worker pool.
ModelCall = Callable[[str, Input], Awaitable[Output]]


class _ModelAnsweredError(Exception):
    """A model returned an Output with an error code: it becomes the workflow's result."""

    def __init__(self, output: Output) -> None:
        super().__init__(output.code)
        self.output = output


class _Cell:
    """A memoised variable of one request: ``ready`` is set once ``value`` holds its value."""

    __slots__ = ("ready", "value")

    def __init__(self) -> None:
        self.ready = trio.Event()
        self.value: Any = None


def _raise_first(group: BaseExceptionGroup) -> NoReturn:
    """Raise the first failure of a nursery as itself, so callers see the real status.

    A group holding ``Cancelled`` (or any other BaseException) is re-raised whole: trio's
    cancel scopes must find their Cancelled where they put it.
    """
    leaves = exception_leaves(group)
    if not leaves or any(not isinstance(exc, Exception) for exc in leaves):
        raise group
    first = leaves[0]
    for other in leaves[1:]:
        if other is not first:
            logger.debug("workflow: a concurrent branch also failed: %r", other)
    raise first from None


class _Evaluation:
    """One request's evaluation; the ``Runtime`` the built-ins see."""

    __slots__ = ("_call_model", "_cells", "_nursery", "_request", "streams")

    def __init__(self, call_model: ModelCall, request: Input, nursery: trio.Nursery | None) -> None:
        self._call_model = call_model
        self._request = request
        #: The request's nursery: memoised variables run here, so each runs once whoever
        #: asked first, and a failure cancels every branch of the request. None when the
        #: program has no memoised variable.
        self._nursery = nursery
        #: variable name -> its cell, created by the first branch that needs it.
        self._cells: dict[str, _Cell] = {}
        #: Streamed model outputs: each holds its worker until read or closed.
        self.streams: list[Output] = []

    async def eval(self, node: Node) -> Any:
        if node is INPUT:
            return self._request
        if type(node) is Shared:
            return await self._shared(node)
        values = await self._arguments(node.args)  # type: ignore[union-attr]
        return await self._invoke(node.callee, node.prepared, values)  # type: ignore[union-attr]

    async def _shared(self, node: Shared) -> Any:
        cell = self._cells.get(node.name)
        if cell is None:
            cell = self._cells[node.name] = _Cell()
            assert self._nursery is not None  # execute opens one when program.shared
            self._nursery.start_soon(self._fill, cell, node.expr, name=f"workflow:{node.name}")
        await cell.ready.wait()
        return cell.value

    async def _fill(self, cell: _Cell, expr: Call) -> None:
        cell.value = await self.eval(expr)
        cell.ready.set()

    async def _arguments(self, nodes: tuple[Node, ...]) -> list[Any]:
        if len(nodes) == 1:
            return [await self.eval(nodes[0])]
        if sum(node is not INPUT for node in nodes) <= 1:
            return [await self.eval(node) for node in nodes]
        return await self.gather([partial(self.eval, node) for node in nodes])

    async def _invoke(self, callee: Callee, prepared: Any, values: list[Any]) -> Any:
        if callee.kind == KIND_MODEL:
            return await self.call_model(callee.target, values[0])
        if callee.kind == KIND_BUILTIN:
            return await callee.target.run(self, prepared, values)
        return await call_custom(callee.name, callee.target, values)

    # -- Runtime ----------------------------------------------------------------------------

    async def apply(self, callee: Any, values: list[Any]) -> Any:
        return await self._invoke(callee, None, values)

    async def call_model(self, local_name: str, value: Any) -> Output:
        output = await self._call_model(local_name, as_model_input(value, local_name))
        if output.stream is not None:
            self.streams.append(output)
        if output.code >= 400:
            raise _ModelAnsweredError(output)
        return output

    async def gather(self, thunks: Sequence[Callable[[], Awaitable[Any]]]) -> list[Any]:
        results: list[Any] = [None] * len(thunks)

        async def run(index: int, thunk: Callable[[], Awaitable[Any]]) -> None:
            results[index] = await thunk()

        try:
            async with trio.open_nursery() as nursery:
                for index, thunk in enumerate(thunks):
                    nursery.start_soon(run, index, thunk)
        except BaseExceptionGroup as group:
            _raise_first(group)
        return results


def _as_output(value: Any) -> Output:
    if isinstance(value, Output):
        return value
    if isinstance(value, Input):
        output = Output()
        output.properties = dict(value.properties)
        output.content = PairList(value.content.items())
        return output
    raise BadRequest(
        f"The workflow did not return an output. Instead it returned an {type_name(value)}"
    )


class Compiled(Protocol):
    """What ``execute`` runs: anything holding a compiled ``program`` (a WorkflowSpec)."""

    @property
    def program(self) -> Program: ...


async def execute(spec: Compiled, request: Input, call_model: ModelCall) -> Output:
    """Run ``spec`` on ``request``; the result of ``out`` as an Output.

    ``call_model(local_name, input)`` runs one model job; the Input it gets may be shared
    with other calls of this request (the request itself, or a memoised Output's view), so
    it must not mutate it. Its exceptions propagate unchanged. A model's error Output
    (code >= 400) is returned as the result at once. BadRequest when ``out`` is neither an
    Output nor an Input; FunctionFailed when a custom function raises.
    """
    program = spec.program
    evaluation: _Evaluation | None = None
    result: Output | None = None
    try:
        if not program.shared:
            # Nothing is memoised, so no task outlives the call that starts it (concurrent
            # arguments get nested nurseries): skip the request nursery and its schedule
            # point, about half of this function's cost for a single-model workflow.
            evaluation = _Evaluation(call_model, request, None)
            value = await evaluation.eval(program.out)
        else:
            try:
                async with trio.open_nursery() as nursery:
                    evaluation = _Evaluation(call_model, request, nursery)
                    value = await evaluation.eval(program.out)
            except BaseExceptionGroup as group:
                _raise_first(group)
        result = _as_output(value)
    except _ModelAnsweredError as answered:
        result = answered.output
    finally:
        if evaluation is not None and evaluation.streams:
            # A stream that is not the response (an input refused, a value a function
            # dropped, a request that failed) would hold its worker until it timed out.
            kept = result.stream if result is not None else None
            for output in evaluation.streams:
                if output.stream is not kept:
                    output.stream.close()  # type: ignore[union-attr]
    return result
