"""Evaluate a workflow's expression graph (spec §7.3, §7.4).

Two steps. :func:`compile_program` runs once, when a :class:`~djl.workflow.spec.WorkflowSpec`
is built: it resolves every callee, checks arities, built-ins' literal arguments,
undefined variables and cycles, and turns the graph into a tree of nodes in which a
variable referenced once is inlined and a variable referenced more than once becomes a
:class:`Shared` node. So every error that can be found without running is a 400 at
registration, and a request does no name lookups.

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

import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import trio

from djl.errors import BadRequest, exception_leaves
from djl.io import Input, Output, PairList
from djl.workflow.functions import BUILTINS, Builtin, as_model_input, call_custom, type_name

if TYPE_CHECKING:
    from djl.workflow.refs import AdapterRef, ModelRef

logger = logging.getLogger(__name__)

#: ``(local model name, input) -> output``: submits a job to that model's worker pool.
ModelCall = Callable[[str, Input], Awaitable[Output]]

IN = "in"
OUT = "out"
#: Longest chain of nested calls and variables from ``out``; bounds the evaluator's stack.
MAX_DEPTH = 100
#: Most expressions in one workflow; bounds compile time (YAML aliases can repeat a subtree).
MAX_NODES = 10_000

_MODEL, _CUSTOM, _BUILTIN = range(3)


@dataclass(frozen=True, slots=True)
class Callee:
    """A resolved callee: a model (by local name), a custom callable or a built-in."""

    name: str
    kind: int
    target: Any


class _Input:
    """The node for ``in``: the request."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "in"


INPUT = _Input()


@dataclass(frozen=True, slots=True, eq=False)
class Call:
    """``[callee, args...]``; ``prepared`` holds what a built-in made of its literal args."""

    callee: Callee
    prepared: Any
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True, eq=False)
class Shared:
    """A variable referenced more than once: evaluated once per request, then memoised."""

    name: str
    expr: Call


Node = Call | Shared | _Input


@dataclass(frozen=True, slots=True, eq=False)
class Program:
    """A validated graph, ready to execute."""

    out: Call
    #: Names of the memoised variables, in the order they were found.
    shared: tuple[str, ...]


@dataclass(frozen=True, slots=True, eq=False)
class _Ref:
    """A reference to a variable, before linking decides to inline or share it."""

    name: str


def _show(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


class _Compiler:
    """Validates a graph and builds its :class:`Program`; also the built-ins' ``Scope``."""

    def __init__(
        self,
        models: Mapping[str, ModelRef],
        functions: Mapping[str, Callable[..., Any]],
        adapters: Mapping[str, AdapterRef],
        graph: Mapping[str, Any],
    ) -> None:
        self.models = models
        self.functions = functions
        self.adapters = adapters
        self.graph = graph
        self.nodes = 0
        #: variable -> the variables its expression references, with repeats.
        self.deps: dict[str, list[str]] = {}

    # -- Scope (used by built-ins' prepare) --------------------------------------------------

    def callee(self, name: str, nargs: int) -> Callee:
        if name in self.models:
            if nargs != 1:
                raise BadRequest(
                    f"The model or worker type {name} should have one arg, but has {nargs}"
                )
            return Callee(name, _MODEL, name)
        function = self.functions.get(name)
        if function is not None:
            return Callee(name, _CUSTOM, function)
        builtin = BUILTINS.get(name)
        if builtin is not None:
            if nargs != builtin.arity:
                raise BadRequest(builtin.arity_error(nargs))
            return Callee(name, _BUILTIN, builtin)
        raise BadRequest(f"Could not find find model or function: {name}")

    # -- pass 1: parse each variable's expression -------------------------------------------

    def expression(self, variable: str, expr: Any, depth: int) -> Call:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise BadRequest(f"The workflow has more than {MAX_NODES} expressions")
        if depth > MAX_DEPTH:
            raise BadRequest(f"The workflow nests expressions more than {MAX_DEPTH} deep")
        if not isinstance(expr, list) or not expr:
            raise BadRequest(
                f"The workflow variable {variable} must be an expression [callee, args...], "
                f"but is {_show(expr)}"
            )
        head, args = expr[0], expr[1:]
        if not isinstance(head, str):
            raise BadRequest(
                f"In the definition of {variable}, an expression must start with the name "
                f"of a model or function, but starts with {_show(head)}"
            )
        callee = self.callee(head, len(args))
        prepared = None
        if callee.kind == _BUILTIN:
            builtin: Builtin = callee.target
            if builtin.prepare is not None:
                prepared = builtin.prepare(self, list(args[: builtin.literal_args]))
            args = args[builtin.literal_args :]
        nodes: list[Any] = []
        for arg in args:
            if isinstance(arg, list):
                nodes.append(self.expression(variable, arg, depth + 1))
            elif not isinstance(arg, str):
                raise BadRequest(
                    f"In the definition of {variable}, an argument must be a variable name "
                    f"or an expression, but is {_show(arg)}"
                )
            elif arg == IN:
                nodes.append(INPUT)
            elif arg in self.graph:
                self.deps[variable].append(arg)
                nodes.append(_Ref(arg))
            else:
                raise BadRequest(f"Expected to find variable but it is not defined: {arg}")
        return Call(callee, prepared, tuple(nodes))

    # -- pass 2: cycles ---------------------------------------------------------------------

    def check_cycles(self) -> None:
        """Depth-first from ``out``, then from every other variable (iterative: no recursion
        limit). The message names the variable that closes the cycle, as Java's does."""
        visiting, done = 1, 2
        state: dict[str, int] = {}
        for root in (OUT, *self.deps):
            if root in state:
                continue
            state[root] = visiting
            stack = [(root, iter(self.deps[root]))]
            while stack:
                variable, pending = stack[-1]
                for dep in pending:
                    if state.get(dep) == visiting:
                        raise BadRequest(f"Your workflow contains a cycle with target: {dep}")
                    if dep not in state:
                        state[dep] = visiting
                        stack.append((dep, iter(self.deps[dep])))
                        break
                else:
                    state[variable] = done
                    stack.pop()

    # -- pass 3: link what `out` needs -------------------------------------------------------

    def link(self, raw: Mapping[str, Call]) -> Program:
        reachable = {OUT}
        todo = [OUT]
        uses: dict[str, int] = {}
        while todo:
            for dep in self.deps[todo.pop()]:
                uses[dep] = uses.get(dep, 0) + 1
                if dep not in reachable:
                    reachable.add(dep)
                    todo.append(dep)
        shared: dict[str, Shared] = {}

        def node(item: Any, depth: int) -> Any:
            if depth > MAX_DEPTH:
                raise BadRequest(
                    f"The workflow chains variables and expressions more than {MAX_DEPTH} deep"
                )
            if isinstance(item, _Ref):
                if uses[item.name] == 1:
                    return node(raw[item.name], depth + 1)
                if item.name not in shared:
                    shared[item.name] = Shared(item.name, node(raw[item.name], depth + 1))
                return shared[item.name]
            if isinstance(item, Call):
                args = tuple(node(arg, depth + 1) for arg in item.args)
                return Call(item.callee, item.prepared, args)
            return item

        out = node(raw[OUT], 0)
        return Program(out, tuple(shared))


def compile_program(
    models: Mapping[str, ModelRef],
    functions: Mapping[str, Callable[..., Any]],
    adapters: Mapping[str, AdapterRef],
    graph: Mapping[str, Any],
) -> Program:
    """Validate ``graph`` (variable -> expression) and build its Program.

    Every variable is checked, used or not. Raises BadRequest with the spec's wording
    (§7.4, §7.5) for: ``out`` missing, an undefined variable, an unknown callee, a wrong
    number of arguments to a model or built-in, an unknown adapter, a cycle, and an ``out``
    that is statically a list (``functionsApply``). Also refuses defining ``in``, and
    graphs deeper than MAX_DEPTH or larger than MAX_NODES.
    """
    if not isinstance(graph, Mapping):
        raise BadRequest("The workflow must be a map of variable names to expressions")
    if OUT not in graph:
        raise BadRequest(f"Expected to find variable but it is not defined: {OUT}")
    compiler = _Compiler(models, functions, adapters, graph)
    for variable in graph:
        if not isinstance(variable, str):
            raise BadRequest(f"A workflow variable name must be a string, not {_show(variable)}")
        if variable == IN:
            raise BadRequest("The workflow cannot define the variable in: it names the request")
        compiler.deps[variable] = []
    try:
        raw = {v: compiler.expression(v, expr, 0) for v, expr in graph.items()}
        compiler.check_cycles()
        program = compiler.link(raw)
    except RecursionError:
        raise BadRequest("The workflow is nested too deeply") from None
    callee = program.out.callee
    if callee.kind == _BUILTIN and callee.name == "functionsApply":
        raise BadRequest("The workflow did not return an output. Instead it returned an list")
    return program


# -- execution ------------------------------------------------------------------------------


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
        if callee.kind == _MODEL:
            return await self.call_model(callee.target, values[0])
        if callee.kind == _BUILTIN:
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
