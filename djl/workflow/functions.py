"""Workflow functions: the built-ins and the contract of custom functions (spec §7.5).

A callee in an expression ``[callee, arg, ...]`` is a model, a custom function or one of
the built-ins below, looked up in that order (a custom function shadows a built-in).

Built-ins
---------
``["id", x]``
    Returns the value of ``x`` unchanged.
``["functionsApply", [f1, f2, ...], x]``
    Applies every callee ``fi`` (names, not evaluated) to the value of ``x``
    concurrently and returns the *list* of results, in the order of the names.
``["ensemble", xs]``
    ``xs`` must evaluate to a list (usually from ``functionsApply``) whose items are
    Outputs carrying JSON classifications in their first content item: either
    ``[{"className": c, "probability": p}, ...]`` or ``{c: p, ...}``. Returns one Output
    (``application/json``) with the list ``[{"className", "probability"}, ...]`` holding
    each class's mean probability over all items (a class missing from an item counts
    as 0), sorted by probability, highest first, ties by class name.
``["adapter", name, x]``
    ``name`` is a literal: a key of ``configs.adapters``. Copies the value of ``x`` into a
    new Input, adds the content item ``adapter=<name>`` and calls the adapter's model
    (``configs.adapters.<name>.model``) with it. Registering the adapter with its model
    is the registry's job, when the workflow is prepared.

Custom functions
----------------
``"functions": {"name": "package.module:function"}`` names a Python callable in the
workflow's ``libs/`` folder (``spec.py`` loads it). In an expression it is called with the
*evaluated* values of its arguments, positionally: each is an ``Input`` (``in``), an
``Output`` (a model's result), a ``list`` (from ``functionsApply``) or whatever another
custom function returned. It may be a plain function or an ``async def`` (run on trio, so
no asyncio APIs). It returns:

* an ``Output`` or ``Input`` to feed a model or to be the workflow's result (``out`` must
  be one of these), or
* any other value for another custom function or built-in to consume.

Rules: do not mutate the arguments (values are memoised and may be shared by several
branches of the same request; build a new Output instead); a plain function runs on the
event loop, so it must return within a few milliseconds (do heavy or blocking work in an
``async def`` through ``trio.to_thread.run_sync``). A ``djl.errors.DjlError`` raised by the
function reaches the client unchanged; any other exception becomes
:class:`FunctionFailed` (500) naming the function.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from djl.errors import BadRequest, DjlError
from djl.io import Input, Output, PairList, encode_json

if TYPE_CHECKING:
    from djl.workflow.refs import AdapterRef


class FunctionFailed(DjlError):
    """A custom workflow function raised something other than a ``DjlError``."""

    status = 500
    type = "WorkflowExecutionException"


class Scope(Protocol):
    """What a built-in may ask the compiler while a workflow is validated (statically)."""

    adapters: Mapping[str, AdapterRef]

    def callee(self, name: str, nargs: int) -> Any:
        """Resolve a callee applied to ``nargs`` arguments; raises BadRequest if it cannot be."""
        ...


class Runtime(Protocol):
    """What a built-in may do while one request's evaluation runs."""

    async def apply(self, callee: Any, values: list[Any]) -> Any:
        """Apply a callee resolved by :meth:`Scope.callee` to evaluated values."""
        ...

    async def call_model(self, local_name: str, value: Any) -> Output:
        """Submit ``value`` (an Input or Output) to a model of the workflow."""
        ...

    async def gather(self, thunks: Sequence[Callable[[], Awaitable[Any]]]) -> list[Any]:
        """Run the thunks concurrently in the request's evaluation; results in order."""
        ...


@dataclass(frozen=True, slots=True)
class Builtin:
    """A built-in function: its arity, its literal (unevaluated) arguments and its body."""

    name: str
    arity: int
    #: The message for a call with the wrong number of arguments (the spec's wording).
    arity_error: Callable[[int], str]
    #: How many leading arguments are read raw (names), not evaluated.
    literal_args: int
    #: ``run(runtime, prepared, values)``; ``prepared`` is what ``prepare`` returned.
    run: Callable[[Runtime, Any, list[Any]], Awaitable[Any]]
    #: ``prepare(scope, literals)`` checks the literal arguments once, at registration.
    prepare: Callable[[Scope, list[Any]], Any] | None = None


def type_name(value: Any) -> str:
    """The type of a workflow value as messages show it."""
    return type(value).__name__


def as_model_input(value: Any, callee: str) -> Input:
    """The Input a model receives for ``value``: an Output carries content *and* properties.

    The returned Input may be ``value`` itself, shared with other calls of the request;
    whoever receives it must not mutate it.
    """
    if isinstance(value, Input):
        return value
    if isinstance(value, Output):
        if value.stream is not None:
            raise BadRequest(
                f"The model or function {callee} cannot take a streamed output as its input"
            )
        return value.as_input()
    raise BadRequest(
        f"The model or worker type {callee} expects an Input or Output argument, "
        f"but got a {type_name(value)}"
    )


async def call_custom(name: str, function: Callable[..., Any], values: list[Any]) -> Any:
    """Call a custom function (sync or async) with evaluated values; see the module doc."""
    try:
        result = function(*values)
        if inspect.isawaitable(result):
            result = await result
    except DjlError:
        raise
    except Exception as exc:  # trio.Cancelled is a BaseException and passes through
        raise FunctionFailed(
            f"The workflow function {name} failed: {type(exc).__name__}: {exc}"
        ) from exc
    return result


# -- id ----------------------------------------------------------------------------------


async def _identity(runtime: Runtime, prepared: Any, values: list[Any]) -> Any:
    return values[0]


# -- functionsApply -----------------------------------------------------------------------


def _prepare_functions_apply(scope: Scope, literals: list[Any]) -> tuple[Any, ...]:
    names = literals[0]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise BadRequest(
            "The first argument of functionsApply must be a list of model or function names"
        )
    return tuple(scope.callee(name, 1) for name in names)


async def _functions_apply(runtime: Runtime, callees: tuple[Any, ...], values: list[Any]) -> Any:
    value = values[0]

    def thunk(callee: Any) -> Callable[[], Awaitable[Any]]:
        return lambda: runtime.apply(callee, [value])

    return await runtime.gather([thunk(c) for c in callees])


# -- ensemble -----------------------------------------------------------------------------


def _classifications(item: Any, index: int) -> dict[str, float]:
    """One ensemble item's ``{className: probability}``; BadRequest naming the item if not."""
    where = f"The ensemble item {index}"
    if not isinstance(item, Input | Output):
        raise BadRequest(f"{where} is a {type_name(item)}, not an Output")
    content = item.get_content()
    if content.is_empty():
        raise BadRequest(f"{where} has no content")
    try:
        data = json.loads(content.value_at(0))
    except (ValueError, TypeError) as exc:
        raise BadRequest(f"{where} is not JSON: {exc}") from None
    if isinstance(data, dict):
        pairs = list(data.items())
    elif isinstance(data, list) and all(isinstance(e, dict) for e in data):
        pairs = [(e.get("className"), e.get("probability")) for e in data]
    else:
        pairs = [(None, None)]  # fails the check below
    result: dict[str, float] = {}
    for name, probability in pairs:
        if (
            not isinstance(name, str)
            or isinstance(probability, bool)
            or not isinstance(probability, int | float)
            or not math.isfinite(probability)
        ):
            raise BadRequest(
                f"{where} is not a classification list "
                '[{"className": <string>, "probability": <number>}, ...]'
            )
        result[name] = result.get(name, 0.0) + float(probability)
    return result


async def _ensemble(runtime: Runtime, prepared: Any, values: list[Any]) -> Output:
    items = values[0]
    if not isinstance(items, list):
        raise BadRequest(f"The ensemble function expects a list, but got a {type_name(items)}")
    if not items:
        raise BadRequest("The ensemble function was given an empty list")
    totals: dict[str, float] = {}
    for index, item in enumerate(items):
        for name, probability in _classifications(item, index).items():
            totals[name] = totals.get(name, 0.0) + probability
    merged = sorted(((p / len(items), name) for name, p in totals.items()), key=_rank)
    output = Output()
    output.add_property("content-type", "application/json")
    output.add(encode_json([{"className": n, "probability": p} for p, n in merged]))
    return output


def _rank(entry: tuple[float, str]) -> tuple[float, str]:
    return -entry[0], entry[1]


# -- adapter ------------------------------------------------------------------------------


def _prepare_adapter(scope: Scope, literals: list[Any]) -> AdapterRef:
    name = literals[0]
    adapter = scope.adapters.get(name) if isinstance(name, str) else None
    if adapter is None:
        raise BadRequest(f"The adapter function was called with unknown adapter {name}")
    return adapter


async def _adapter(runtime: Runtime, adapter: AdapterRef, values: list[Any]) -> Output:
    source = as_model_input(values[0], "adapter")
    # A copy: the value may be memoised and shared (Java mutates it in place).
    request = Input(dict(source.properties), PairList(source.content.items()))
    request.add(adapter.name, key="adapter")
    return await runtime.call_model(adapter.model, request)


BUILTINS: Mapping[str, Builtin] = {
    b.name: b
    for b in (
        Builtin("id", 1, lambda n: "Expected one argument to id", 0, _identity),
        Builtin(
            "functionsApply",
            2,
            lambda n: (
                f"Expected two arguments: the list of functions to run and the input, but found {n}"
            ),
            1,
            _functions_apply,
            _prepare_functions_apply,
        ),
        Builtin(
            "ensemble",
            1,
            lambda n: "Expected one arguments, the list of items to ensemble",
            0,
            _ensemble,
        ),
        Builtin(
            "adapter",
            2,
            lambda n: f"The adapter workflow function should have two args, but has {n}",
            1,
            _adapter,
            _prepare_adapter,
        ),
    )
}
