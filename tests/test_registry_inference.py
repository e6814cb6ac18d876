"""The registry's inference-time rules without workers: /invocations target selection
(spec §3.1), dynamic loading's refusals (§3.10), breaker accounting (§3.9)."""

from __future__ import annotations

import pytest

from djl.app import ServerParts
from djl.config import RegisterParams, ServerConfig
from djl.errors import BadRequest, ModelNotFound, NotFound, WlmError
from djl.http.inference import invocation_target
from djl.io import Input, Output, PairList
from djl.registry import Model, ModelManager, Workflow


def test_invocation_target_first_named_then_the_single_startup_model():
    manager = ModelManager(ServerConfig())
    assert invocation_target(manager.startup_names, None, "", "form", "later") == "form"
    with pytest.raises(BadRequest, match="Parameter model_name is required."):
        invocation_target(manager.startup_names, None, None)
    manager.startup_names.append("only")
    assert invocation_target(manager.startup_names, None) == "only"
    assert invocation_target(manager.startup_names, "named") == "named"
    manager.startup_names.append("second")
    with pytest.raises(BadRequest):
        invocation_target(manager.startup_names, None)


def _input(header: str | None = None, item: str | None = None) -> Input:
    content = PairList()
    if item is not None:
        content.add("model_url", item.encode())
    return Input({"model_url": header} if header else {}, content)


async def test_dynamic_loading_refusals():
    pattern = ServerConfig(model_url_pattern=r"file:/models/.*")
    with pytest.raises(ModelNotFound, match="not found: m"):
        await ModelManager(ServerConfig()).find_or_load("m", None, _input(item="file:/models/m"))
    manager = ModelManager(pattern)
    with pytest.raises(NotFound, match=r"^Parameter model_url is required\.$"):
        await manager.find_or_load("m", None, _input())
    for refused in (_input(item="file:/etc/m"), _input(header="file:/etc/m"),
                    _input(header="file:/etc/m", item="file:/models/m"),
                    _input(item="file:/models/m/../../etc"),
                    _input(item="file:/models/%2e%2e/etc"), _input(header="file:/models/.%2E/etc"),
                    _input(item="file:///models/..%2fetc")):
        with pytest.raises(NotFound, match="Permission denied: file:/"):
            await manager.find_or_load("m", None, refused)
    assert manager.endpoints == {} and manager.dynamic.in_flight == {}


async def test_predict_counts_failures_and_server_codes():
    manager = ServerParts(ServerConfig(error_rate_server="1/PT1M")).manager
    params = RegisterParams(url="file:/m", model_name="m")
    workflow = Workflow("m", None, {"m": Model("m", None, params.url, params)})
    answers: list[object] = [Output(200), Output(424)]

    async def infer(_workflow: Workflow, _inputs: Input, _watch: object = None) -> Output:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]

    manager.invocation.infer = infer  # type: ignore[method-assign]
    await manager.predict(workflow, Input())
    await manager.predict(workflow, Input())
    assert not manager.breaker.tripped  # one 424 tolerated
    answers.append(WlmError.not_ready("m"))  # a wlm error: not this rule's kind
    with pytest.raises(WlmError):
        await manager.predict(workflow, Input())
    assert not manager.breaker.tripped
    answers.append(Output(500))
    await manager.predict(workflow, Input())
    assert manager.breaker.tripped
