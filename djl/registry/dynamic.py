"""Loading a model on its first prediction (spec §3.10, ``model_url_pattern``).

Unlike DJL, the pattern and ``allowed_urls`` apply to a ``model_url`` header as much as
to a query or form item: a header must not be a way around them. Concurrent first
requests for one model share one load (an in-flight ``Outcome``).
"""

from __future__ import annotations

import logging

from djl import url_policy
from djl.config import RegisterParams, ServerConfig
from djl.errors import ModelNotFound, NotFound
from djl.io import Input
from djl.registry.endpoints import Endpoints, Workflow
from djl.registry.loading import Outcome, Registration

log = logging.getLogger("djl.registry")


class DynamicLoading:
    """Finds the workflow a prediction names, registering it from its ``model_url``."""

    def __init__(self, config: ServerConfig, registry: Endpoints,
                 registration: Registration) -> None:
        self.config = config
        self.registry = registry
        self.registration = registration
        #: (name, version) → the dynamic load in flight, so concurrent first requests
        #: load the model once; removed when it ends, however it ends.
        self.in_flight: dict[tuple[str, str | None], Outcome] = {}

    async def find_or_load(self, name: str, version: str | None, inputs: Input) -> Workflow:
        """The workflow a prediction addresses; with ``model_url_pattern`` set, an unknown
        one is first registered from the request's ``model_url``."""
        loading = self.in_flight.get((name, version))
        if loading is None:
            try:
                return self.registry.find_workflow(name, version)
            except ModelNotFound:
                if not url_policy.loads_on_prediction(self.config):
                    raise
            loading = self.in_flight[(name, version)] = Outcome()
            try:
                await self._load(name, version, inputs)
            except Exception as exc:
                loading.error = exc
                raise
            finally:
                del self.in_flight[(name, version)]
                loading.done.set()
        else:
            await loading.wait()
        return self.registry.find_workflow(name, version)

    async def _load(self, name: str, version: str | None, inputs: Input) -> None:
        url = inputs.get_property("model_url")
        if not url:
            item = inputs.content.get("model_url")
            url = bytes(item).decode("utf-8") if item else None
        if not url:
            raise NotFound.model_url_required()
        url_policy.check(url, self.config, dynamic=True)
        log.info("loading model %s from %s for a prediction (model_url_pattern)", name, url)
        await self.registration.register_model(RegisterParams(
            url=url, model_name=name, model_version=version,
            engine=inputs.get_property("engine_name") or None,
            device=inputs.get_property("device") or None))


__all__ = ["DynamicLoading"]
