"""Workflow templates (spec §7.6)."""

from __future__ import annotations

import json

import pytest

from djl.errors import IllegalArgument
from djl.io import Output
from djl.workflow.graph import execute
from djl.workflow.templates import load_template, render_template, template_names

ADAPTER_PARAMS = {
    "template": "adapter",
    "adapter": "a",
    "url": "s3://bucket/lora",
    "model": "file:/models/base",
    "synchronous": "true",
}


def body(output: Output) -> str:
    return bytes(output.get_content().value_at(0)).decode()


def test_builtin_names():
    assert template_names() == ["adapter", "chain", "ensemble"]


def test_adapter_template_expands_exactly_as_the_spec():
    rendered = json.loads(render_template("adapter", ADAPTER_PARAMS))

    assert rendered == {
        "name": "a",
        "version": "0.1",
        "models": {"m": "file:/models/base"},
        "configs": {"adapters": {"a": {"model": "m", "src": "s3://bucket/lora"}}},
        "workflow": {"out": ["adapter", "a", "in"]},
    }


async def test_adapter_template_registers_and_runs(models, make_request):
    spec = load_template("adapter", ADAPTER_PARAMS)

    result = await execute(spec, make_request("hi"), models)

    assert (spec.name, spec.version) == ("a", "0.1")
    assert spec.adapters["a"].src == "s3://bucket/lora"
    assert body(result) == "m(hi)"
    assert models.inputs[0].get_as_string("adapter") == "a"


def test_unknown_template():
    with pytest.raises(IllegalArgument) as caught:
        render_template("nope", {})

    assert caught.value.status == 400
    assert caught.value.message == "The workflow template nope could not be found"


def test_missing_parameters_are_named():
    with pytest.raises(IllegalArgument) as caught:
        render_template("adapter", {"adapter": "a"})

    assert caught.value.message == (
        "The workflow template adapter requires the parameter(s): model, url"
    )


def test_values_cannot_change_the_structure():
    params = dict(ADAPTER_PARAMS, model='x", "functions": {"f": "evil:f"}, "y": "')

    spec = load_template("adapter", params)

    assert spec.models["m"].url == params["model"]
    assert spec.functions == {}


async def test_ensemble_template(models, make_request):
    def answer(pairs):
        def build(_):
            output = Output()
            output.add_as_json([{"className": c, "probability": p} for c, p in pairs])
            return output

        return build

    models.answers = {
        "cls_m1": answer([("cat", 1.0)]),
        "cls_m2": answer([("cat", 0.5), ("dog", 0.5)]),
    }
    spec = load_template("ensemble", {"name": "cls", "urls": "file:/r18, file:/r50"})

    result = await execute(spec, make_request(), models)

    assert {n: m.url for n, m in spec.models.items()} == {
        "cls_m1": "file:/r18",
        "cls_m2": "file:/r50",
    }
    assert json.loads(body(result)) == [
        {"className": "cat", "probability": 0.75},
        {"className": "dog", "probability": 0.25},
    ]


async def test_chain_template(models, make_request):
    spec = load_template("chain", {"name": "pipe", "version": "2", "urls": "u1,u2,u3"})

    result = await execute(spec, make_request("x"), models)

    assert (spec.name, spec.version) == ("pipe", "2")
    assert body(result) == "pipe_m3(pipe_m2(pipe_m1(x)))"


def test_list_templates_need_urls():
    with pytest.raises(IllegalArgument, match="requires the parameter"):
        render_template("chain", {"name": "pipe"})
    with pytest.raises(IllegalArgument, match="at least one model URL"):
        render_template("ensemble", {"name": "e", "urls": " , "})
