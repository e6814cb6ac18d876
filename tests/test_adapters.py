"""djl/adapters.py without workers: which model an adapter route means, what a ``src`` may
be, and how a request's adapter is read (spec §2.10). Through the real server:
tests/integration/test_lora.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from djl import adapter_calls
from djl.adapters import Adapter, ModelAdapters, select, source_path
from djl.config import ServerConfig
from djl.errors import AdapterError, Forbidden
from djl.io import Input
from djl.registry import ModelManager


def _adapters(*names: str) -> ModelAdapters:
    pool = SimpleNamespace(metrics=None)
    return ModelAdapters(pool, {n: Adapter(n, f"/a/{n}", f"{n}-alias", {})  # type: ignore[arg-type]
                                for n in names})


def test_without_a_prefix_the_model_is_the_single_start_up_model():
    manager = ModelManager(ServerConfig())
    with pytest.raises(AdapterError, match="The adapter must be prefixed with a model unless "
                       "there is only a single startup model used."):
        manager.adapters_of(None)
    manager.startup_names.extend(["one", "two"])
    with pytest.raises(AdapterError, match="must be prefixed") as caught:
        manager.adapters_of(None)
    assert caught.value.status == 400
    with pytest.raises(AdapterError, match="The model nothere was not found") as caught:
        manager.adapters_of("nothere")
    assert caught.value.status == 404


def test_src_is_a_local_path_checked_like_a_model_url(tmp_path):
    config = ServerConfig()
    for url in ("https://example.com/a", "s3://bucket/a", "djl://ai.djl/a"):
        with pytest.raises(AdapterError, match="URL adapters are not currently supported"):
            source_path(url, config)
    assert source_path(f"file:{tmp_path}/x/../a", config) == f"{tmp_path}/a"
    assert source_path(f"{tmp_path}//a/", config) == f"{tmp_path}/a"
    narrow = ServerConfig(allowed_urls=(r"file:/srv/.*",))
    with pytest.raises(Forbidden):
        source_path(str(tmp_path), narrow)


def _request(query: str | None = None, body: bytes | None = None,
             **properties: str) -> Input:
    inputs = Input()
    if query is not None:
        inputs.add(query.encode(), "adapter")
    if body is not None:
        inputs.add(body, "data")
    inputs.properties.update(properties)
    return inputs


def test_a_request_names_its_adapter_by_query_attribute_or_header():
    table = _adapters("a", "b")
    for inputs, want in [
        (_request("a"), "a"),
        (_request(adapter="b"), "b"),  # X-Amzn-SageMaker-Custom-Attributes: adapter=b
        (_request(**{"x-amzn-sagemaker-adapter-identifier": "a"}), "a"),
        (_request(**{"x-amzn-sagemaker-adapter-identifier": "b-alias"}), "b"),
        (_request(**{"x-amzn-sagemaker-adapter-alias": "a-alias"}), "a"),
        (_request("", adapter="a"), ""),  # "" is the base model; the query comes first
    ]:
        select(table, inputs)
        assert inputs.properties[adapter_calls.ADAPTER] == want
    plain = _request(body=b'{"inputs": "x"}')
    select(table, plain)
    assert adapter_calls.ADAPTER not in plain.properties


def test_an_adapter_that_is_not_registered_is_424_for_every_model():
    for table in (_adapters("a"), None):
        for inputs in (_request("zz"), _request(adapter="zz"),
                       _request(**{"x-amzn-sagemaker-adapter-identifier": "zz"})):
            with pytest.raises(AdapterError, match="The adapter zz has not been registered"
                               ) as caught:
                select(table, inputs)
            assert caught.value.status == 424
    with pytest.raises(AdapterError, match="The adapter zz has not been registered"):
        select(_adapters("a"), _request(body=b'{"inputs": ["x", "y"], "adapters": ["a", "zz"]}'))
    select(_adapters("a"), _request(body=b'{"inputs": "x", "adapters": "a"}'))
