"""djl.registry without worker processes: the registry's own rules (spec §2.4, §3.4, §4.3).

Registration through real workers is in tests/http/test_management.py; here the manager
is driven directly, with workflows entered the way ``_register`` enters them.
"""

from __future__ import annotations

import pytest

from djl.config import RegisterParams, ServerConfig
from djl.errors import Conflict, ModelNotFound
from djl.registry import Endpoint, Model, ModelManager, Workflow
from djl.wlm.pool import ModelStatus


def workflow(name: str, version: str | None = None) -> Workflow:
    params = RegisterParams(url=f"file:/models/{name}", model_name=name, model_version=version)
    return Workflow(name, version, {name: Model(name, version, params.url, params)})


def test_versions_are_served_round_robin_in_registration_order():
    endpoint = Endpoint("m", [workflow("m", "v1"), workflow("m", "v2"), workflow("m", "v3")])
    assert [endpoint.next_version().version for _ in range(4)] == ["v1", "v2", "v3", "v1"]


def test_select_is_one_version_or_all_and_default_means_the_unversioned_one():
    plain, v2 = workflow("m"), workflow("m", "v2")
    endpoint = Endpoint("m", [plain, v2])
    assert endpoint.select(None) == [plain, v2]
    assert endpoint.select("v2") == [v2]
    assert endpoint.select("default") == [plain]
    with pytest.raises(ModelNotFound, match="Model or workflow not found: m"):
        endpoint.select("v9")


def test_a_second_registration_of_a_name_or_version_is_409():
    manager = ModelManager(ServerConfig())
    manager.registry.add(workflow("m", "v1"))
    with pytest.raises(Conflict, match="Workflow m:v1 is already registered."):
        manager.registry.add(workflow("m", "v1"))
    with pytest.raises(Conflict, match="Workflow m is already registered."):
        manager.registry.add(workflow("m"))  # an unversioned one next to versions
    manager.registry.add(workflow("m", "v2"))
    assert [w.version for w in manager.endpoint("m").versions] == ["v1", "v2"]


def test_pages_are_sorted_by_name_and_the_limit_is_capped():
    manager = ModelManager(ServerConfig())
    for name in ("c", "a", "b"):
        manager.registry.add(workflow(name))
    page, next_token, total = manager.page(2, 0)
    assert [e.name for e in page] == ["a", "b"] and (next_token, total) == (2, 3)
    page, next_token, total = manager.page(2, 2)
    assert [e.name for e in page] == ["c"] and next_token >= total
    assert len(manager.page(1000, 0)[0]) == 3  # over 100 means 100
    assert [e.name for e in manager.page(5, -4)[0]] == ["a", "b", "c"]


def test_a_model_still_loading_is_pending_and_a_failed_load_is_failed():
    manager = ModelManager(ServerConfig())
    loading, failed = workflow("loading"), workflow("failed")
    failed.models["failed"].load_error = ModelNotFound.invalid_url("file:/nowhere")
    manager.registry.add(loading)
    manager.registry.add(failed)
    assert loading.models["loading"].status is ModelStatus.PENDING
    assert failed.models["failed"].status is ModelStatus.FAILED
    assert manager.health() == ({"loading": "PENDING", "failed": "FAILED"}, True, True)


def test_lookups_of_an_unknown_name_are_404():
    manager = ModelManager(ServerConfig())
    with pytest.raises(ModelNotFound, match="Model or workflow not found: nope"):
        manager.find_workflow("nope", None)
    with pytest.raises(ModelNotFound, match="Workflow not found: nope"):
        manager.describe("nope", None)
