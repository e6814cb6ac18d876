"""Fixtures for workflow tests: a recording fake ``call_model`` and a WorkflowSpec builder."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest
import trio

from djl.config import RegisterParams
from djl.io import Input, Output
from djl.workflow.spec import ModelRef, WorkflowSpec


class FakeModels:
    """A ``call_model`` that records each call and answers ``"<name>(<body>)"``.

    The answer's properties are only ``x-by: <name>``: nothing is copied from the input,
    so a test can tell what carried through a chain. ``answers[name]`` overrides a model.
    """

    def __init__(self) -> None:
        #: (model, body, properties) of every call, in call order.
        self.calls: list[tuple[str, str | None, dict[str, Any]]] = []
        #: The Input objects received, in call order.
        self.inputs: list[Input] = []
        self.answers: dict[str, Callable[[Input], Any]] = {}

    async def __call__(self, name: str, request: Input) -> Output:
        self.calls.append((name, request.get_as_string(), dict(request.properties)))
        self.inputs.append(request)
        await trio.lowlevel.checkpoint()
        answer = self.answers.get(name)
        if answer is not None:
            result = answer(request)
            return await result if hasattr(result, "__await__") else result
        output = Output()
        output.add_property("x-by", name)
        output.add(f"{name}({request.get_as_string()})")
        return output

    @property
    def names(self) -> list[str]:
        return [name for name, _, _ in self.calls]


@pytest.fixture
def models() -> FakeModels:
    return FakeModels()


def model_refs(*names: str) -> dict[str, ModelRef]:
    return {
        n: ModelRef(n, f"file:/models/{n}", None, RegisterParams(url=f"file:/models/{n}"))
        for n in names
    }


@pytest.fixture
def make_spec() -> Callable[..., WorkflowSpec]:
    def build(
        graph: Mapping[str, Any],
        models: tuple[str, ...] = (),
        functions: Mapping[str, Callable[..., Any]] | None = None,
        configs: Mapping[str, Any] | None = None,
    ) -> WorkflowSpec:
        return WorkflowSpec(
            name="wf",
            version=None,
            base_uri="file:/tmp/wf/workflow.json",
            models=model_refs(*models),
            functions=dict(functions or {}),
            configs=dict(configs or {}),
            graph=graph,
        )

    return build


def _request(body: str = "x", **properties: str) -> Input:
    inp = Input(dict(properties))
    inp.add(body)
    return inp


@pytest.fixture
def make_request() -> Callable[..., Input]:
    return _request
