"""The workflow evaluator (spec §7.4, §7.5): chaining, memoisation, concurrency, built-ins."""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing

from djl.errors import BadRequest, Capacity
from djl.io import Input, Output
from djl.workflow.functions import FunctionFailed
from djl.workflow.graph import execute


def body(output: Output) -> str:
    return bytes(output.get_content().value_at(0)).decode()


def join(*values: Output) -> Output:
    """A custom function: one Output whose body joins its arguments' bodies."""
    output = Output()
    output.add("+".join(body(v) if isinstance(v, Output) else v.get_as_string() for v in values))
    return output


def classifications(pairs: list[tuple[str, float]]) -> Output:
    output = Output()
    output.add(json.dumps([{"className": c, "probability": p} for c, p in pairs]))
    return output


# -- chaining --------------------------------------------------------------------------------


async def test_chain_runs_in_order_and_carries_properties(make_spec, models, make_request):
    spec = make_spec({"out": ["m2", ["m1", "in"]]}, models=("m1", "m2"))

    result = await execute(spec, make_request("x", **{"x-request": "r"}), models)

    assert body(result) == "m2(m1(x))"
    assert models.names == ["m1", "m2"]
    # m2's Input is m1's Output: its properties came along, the request's headers did not.
    assert models.calls[0][2] == {"x-request": "r"}
    assert models.calls[1][2] == {"x-by": "m1"}
    assert result.get_property("x-by") == "m2"


async def test_chain_through_variables(make_spec, models, make_request):
    spec = make_spec({"a": ["m1", "in"], "b": ["m2", "a"], "out": ["m3", "b"]}, ("m1", "m2", "m3"))

    result = await execute(spec, make_request("x"), models)

    assert body(result) == "m3(m2(m1(x)))"
    assert spec.program.shared == ()  # each used once: inlined, no memo cell needed


async def test_request_is_not_mutated_by_chaining(make_spec, models, make_request):
    spec = make_spec({"out": ["m2", ["m1", "in"]]}, ("m1", "m2"))
    req = make_request("x", **{"x-request": "r"})

    await execute(spec, req, models)

    assert req.get_as_string() == "x"
    assert req.properties == {"x-request": "r"}


# -- laziness and memoisation -----------------------------------------------------------------


async def test_shared_variable_runs_once(make_spec, models, make_request):
    spec = make_spec(
        {"x": ["m0", "in"], "out": ["join", ["m1", "x"], ["m2", "x"]]},
        ("m0", "m1", "m2"),
        functions={"join": join},
    )

    result = await execute(spec, make_request("q"), models)

    assert models.names.count("m0") == 1
    assert sorted(models.names) == ["m0", "m1", "m2"]
    assert body(result) == "m1(m0(q))+m2(m0(q))"
    assert spec.program.shared == ("x",)


async def test_variable_used_twice_by_one_call_runs_once(make_spec, models, make_request):
    spec = make_spec(
        {"x": ["m0", "in"], "out": ["join", "x", "x"]}, ("m0",), functions={"join": join}
    )

    result = await execute(spec, make_request("q"), models)

    assert models.names == ["m0"]
    assert body(result) == "m0(q)+m0(q)"


async def test_unused_variables_are_not_evaluated(make_spec, models, make_request):
    spec = make_spec({"unused": ["m9", "in"], "out": ["m1", "in"]}, ("m1", "m9"))

    await execute(spec, make_request(), models)

    assert models.names == ["m1"]


async def test_memo_is_per_request(make_spec, models, make_request):
    spec = make_spec(
        {"x": ["m0", "in"], "out": ["join", "x", "x"]}, ("m0",), functions={"join": join}
    )

    first = await execute(spec, make_request("a"), models)
    second = await execute(spec, make_request("b"), models)

    assert (body(first), body(second)) == ("m0(a)+m0(a)", "m0(b)+m0(b)")
    assert models.names == ["m0", "m0"]


# -- concurrency ------------------------------------------------------------------------------


def rendezvous(*names: str):
    """Answers for ``names`` that each wait until all have started, then echo the request:
    evaluated one after another, they would never finish."""
    started: set[str] = set()
    everyone = trio.Event()

    def answer(name: str):
        async def wait_for_all(request: Input) -> Output:
            started.add(name)
            if len(started) == len(names):
                everyone.set()
            await everyone.wait()
            return join(request)

        return wait_for_all

    return {name: answer(name) for name in names}


async def test_independent_arguments_overlap(make_spec, models, make_request, autojump_clock):
    models.answers = rendezvous("a", "b")
    spec = make_spec({"out": ["join", ["a", "in"], ["b", "in"]]}, ("a", "b"), {"join": join})

    with trio.fail_after(60):  # the autojump clock turns a deadlock into TooSlowError at once
        result = await execute(spec, make_request("x"), models)

    assert body(result) == "x+x"


async def test_functions_apply_runs_callees_concurrently(
    make_spec, models, make_request, autojump_clock
):
    models.answers = rendezvous("a", "b")
    spec = make_spec(
        {"out": ["join", ["functionsApply", ["a", "b"], "in"]]},
        ("a", "b"),
        functions={"join": lambda results: join(*results)},
    )

    with trio.fail_after(60):
        result = await execute(spec, make_request("x"), models)

    assert body(result) == "x+x"


async def test_sequential_evaluation_would_deadlock(
    make_spec, models, make_request, autojump_clock
):
    # The control for the two tests above: a chain cannot overlap, so the rendezvous
    # never completes and the autojump clock fires the timeout.
    models.answers = rendezvous("a", "b")
    spec = make_spec({"out": ["b", ["a", "in"]]}, ("a", "b"))

    with pytest.raises(trio.TooSlowError), trio.fail_after(60):
        await execute(spec, make_request("x"), models)


# -- built-ins --------------------------------------------------------------------------------


async def test_id_returns_its_argument(make_spec, models, make_request):
    spec = make_spec({"out": ["id", ["id", ["m", "in"]]]}, ("m",))

    result = await execute(spec, make_request("x"), models)

    assert body(result) == "m(x)"


async def test_id_of_the_request_becomes_an_output(make_spec, models, make_request):
    spec = make_spec({"out": ["id", "in"]})

    result = await execute(spec, make_request("x", **{"content-type": "text/plain"}), models)

    assert isinstance(result, Output)
    assert body(result) == "x"
    assert result.get_property("content-type") == "text/plain"
    assert models.calls == []


async def test_functions_apply_returns_results_in_name_order(make_spec, models, make_request):
    seen: list[list[str]] = []

    def collect(results: list[Output]) -> Output:
        seen.append([body(r) for r in results])
        return results[0]

    spec = make_spec(
        {"out": ["collect", ["functionsApply", ["m2", "id", "m1"], "in"]]},
        ("m1", "m2"),
        functions={"collect": collect},
    )

    await execute(spec, make_request("x"), models)

    assert seen == [["m2(x)", "x", "m1(x)"]]


async def test_ensemble_averages_per_class_and_sorts(make_spec, models, make_request):
    models.answers = {
        "m1": lambda _: classifications([("dog", 0.25), ("cat", 0.75)]),
        "m2": lambda _: classifications([("cat", 0.25), ("dog", 0.5), ("bird", 0.25)]),
    }
    spec = make_spec({"out": ["ensemble", ["functionsApply", ["m1", "m2"], "in"]]}, ("m1", "m2"))

    result = await execute(spec, make_request("img"), models)

    assert json.loads(body(result)) == [
        {"className": "cat", "probability": 0.5},
        {"className": "dog", "probability": 0.375},
        {"className": "bird", "probability": 0.125},  # missing from m1: counts as 0
    ]
    assert result.get_property("content-type") == "application/json"
    assert sorted(models.names) == ["m1", "m2"]
    assert [c[1] for c in models.calls] == ["img", "img"]


async def test_ensemble_accepts_class_maps_and_breaks_ties_by_name(make_spec, models, make_request):
    def answer(pairs: dict[str, float]):
        def build(_: Input) -> Output:
            output = Output()
            output.add_as_json(pairs)
            return output

        return build

    models.answers = {"m1": answer({"b": 0.5, "a": 0.5}), "m2": answer({"a": 0.5, "b": 0.5})}
    spec = make_spec({"out": ["ensemble", ["functionsApply", ["m1", "m2"], "in"]]}, ("m1", "m2"))

    result = await execute(spec, make_request(), models)

    assert [e["className"] for e in json.loads(body(result))] == ["a", "b"]


async def test_ensemble_rejects_non_classifications(make_spec, models, make_request):
    spec = make_spec({"out": ["ensemble", ["functionsApply", ["m1", "m2"], "in"]]}, ("m1", "m2"))

    with pytest.raises(BadRequest, match="The ensemble item 0 is not JSON"):
        await execute(spec, make_request(), models)


async def test_adapter_adds_content_item_and_calls_its_model(make_spec, models, make_request):
    configs = {"adapters": {"a1": {"model": "m", "src": "url1", "options": {"k": "v", "n": 1}}}}
    spec = make_spec({"out": ["adapter", "a1", "in"]}, ("m",), configs=configs)
    req = make_request("hello")

    result = await execute(spec, req, models)

    assert body(result) == "m(hello)"
    sent = models.inputs[0]
    assert list(sent.get_content().items()) == [(None, b"hello"), ("adapter", b"a1")]
    assert len(req.get_content()) == 1  # the request itself is untouched
    adapter = spec.adapters["a1"]
    assert (adapter.model, adapter.src, dict(adapter.options)) == ("m", "url1", {"k": "v"})


# -- custom functions -------------------------------------------------------------------------


async def test_async_custom_function(make_spec, models, make_request):
    async def twice(value: Output) -> Output:
        await trio.lowlevel.checkpoint()
        return join(value, value)

    spec = make_spec({"out": ["twice", ["m", "in"]]}, ("m",), functions={"twice": twice})

    result = await execute(spec, make_request("x"), models)

    assert body(result) == "m(x)+m(x)"


async def test_custom_function_shadows_builtin_and_model_shadows_function(
    make_spec, models, make_request
):
    spec = make_spec(
        {"out": ["id", ["join", "in"]]},
        ("join",),
        functions={"id": lambda v: join(v, v), "join": join},
    )

    result = await execute(spec, make_request("x"), models)

    assert body(result) == "join(x)+join(x)"


async def test_custom_function_failure_names_the_function(make_spec, models, make_request):
    def broken(value: Input) -> Output:
        raise ValueError("boom")

    spec = make_spec({"out": ["broken", "in"]}, functions={"broken": broken})

    with pytest.raises(
        FunctionFailed, match="The workflow function broken failed: ValueError: boom"
    ):
        await execute(spec, make_request(), models)


async def test_result_must_be_an_output(make_spec, models, make_request):
    spec = make_spec({"out": ["listing", "in"]}, functions={"listing": lambda v: [v]})

    with pytest.raises(BadRequest) as caught:
        await execute(spec, make_request(), models)

    assert caught.value.message == (
        "The workflow did not return an output. Instead it returned an list"
    )


# -- failures ---------------------------------------------------------------------------------


async def test_model_error_propagates_unchanged_from_concurrent_branch(
    make_spec, models, make_request
):
    error = Capacity.queue_full("m2")

    def full(_: Input) -> Output:
        raise error

    models.answers = {"m2": full}
    spec = make_spec({"out": ["ensemble", ["functionsApply", ["m1", "m2"], "in"]]}, ("m1", "m2"))

    with pytest.raises(Capacity) as caught:
        await execute(spec, make_request(), models)

    assert caught.value is error


async def test_shared_variable_failure_propagates_unchanged(make_spec, models, make_request):
    error = Capacity.queue_full("m0")

    def full(_: Input) -> Output:
        raise error

    models.answers = {"m0": full}
    spec = make_spec(
        {"x": ["m0", "in"], "out": ["join", ["m1", "x"], ["m2", "x"]]},
        ("m0", "m1", "m2"),
        functions={"join": join},
    )

    with pytest.raises(Capacity) as caught:
        await execute(spec, make_request(), models)

    assert caught.value is error
    assert "m1" not in models.names


async def test_error_output_stops_the_chain_and_is_the_result(make_spec, models, make_request):
    failed = Output().error("bad input")
    models.answers = {"m1": lambda _: failed}
    spec = make_spec({"out": ["m2", ["m1", "in"]]}, ("m1", "m2"))

    result = await execute(spec, make_request(), models)

    assert result is failed
    assert result.code == 424
    assert models.names == ["m1"]


async def test_cancellation_passes_through(make_spec, models, make_request, autojump_clock):
    async def forever(_: Input) -> Output:
        await trio.sleep_forever()
        raise AssertionError

    models.answers = {"m1": forever, "m2": forever}
    spec = make_spec({"out": ["ensemble", ["functionsApply", ["m1", "m2"], "in"]]}, ("m1", "m2"))

    with trio.move_on_after(5) as scope:
        await execute(spec, make_request(), models)

    assert scope.cancelled_caught
