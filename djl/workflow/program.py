"""Compile a workflow's expression graph (spec §7.3, §7.4) into a program.

:func:`compile_program` runs once, when a :class:`~djl.workflow.spec.WorkflowSpec` is
built: it resolves every callee, checks arities, built-ins' literal arguments, undefined
variables and cycles, and turns the graph into a tree of nodes in which a variable
referenced once is inlined and a variable referenced more than once becomes a
:class:`Shared` node. So every error that can be found without running is a 400 at
registration, and a request does no name lookups. ``djl.workflow.graph`` runs the program.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from djl.errors import BadRequest
from djl.workflow.functions import BUILTINS, Builtin

if TYPE_CHECKING:
    from djl.workflow.refs import AdapterRef, ModelRef

IN = "in"
OUT = "out"
#: Longest chain of nested calls and variables from ``out``; bounds the evaluator's stack.
MAX_DEPTH = 100
#: Most expressions in one workflow; bounds compile time (YAML aliases can repeat a subtree).
MAX_NODES = 10_000

#: A callee's kind: a model, a custom function or a built-in.
KIND_MODEL, KIND_CUSTOM, KIND_BUILTIN = range(3)


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
            return Callee(name, KIND_MODEL, name)
        function = self.functions.get(name)
        if function is not None:
            return Callee(name, KIND_CUSTOM, function)
        builtin = BUILTINS.get(name)
        if builtin is not None:
            if nargs != builtin.arity:
                raise BadRequest(builtin.arity_error(nargs))
            return Callee(name, KIND_BUILTIN, builtin)
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
        if callee.kind == KIND_BUILTIN:
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
    if callee.kind == KIND_BUILTIN and callee.name == "functionsApply":
        raise BadRequest("The workflow did not return an output. Instead it returned an list")
    return program
