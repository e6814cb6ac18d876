"""ModelManager: the composition root of the registry, and the one object the HTTP side
holds. It builds the rooms, owns the nursery their loads and pools run in, and exposes
their entry points; it does no work of its own. The error-rate breaker and the async
results are the app's (``djl.app.ServerParts``), handed in.
"""

from __future__ import annotations

from collections.abc import Iterator

import trio

from djl import source_cache
from djl.adapters import ModelAdapters
from djl.async_results import AsyncResults
from djl.breaker import ErrorRateBreaker
from djl.config import UNREGISTER_GRACE_S, ServerConfig
from djl.errors import AdapterError
from djl.failures import FailureObserver
from djl.metrics import PoolView, ServerMetrics
from djl.own_nursery import OwnNursery
from djl.registry.dynamic import DynamicLoading
from djl.registry.endpoints import Endpoints, Workflow
from djl.registry.invocation import Invocation
from djl.registry.loading import Registration
from djl.registry.pools import Pools, scale


class ModelManager:
    """The registry of endpoints and the owner of every worker pool."""

    def __init__(self, config: ServerConfig, *, breaker: ErrorRateBreaker | None = None,
                 results: AsyncResults | None = None) -> None:
        self.config = config
        #: The app's error-rate breaker (spec §3.9, ``djl.app.ServerParts``): predictions
        #: count their failures into it and /ping reads it. Without one, no rule applies.
        self.breaker = breaker if breaker is not None else ErrorRateBreaker()
        #: The app's results of x-synchronous: false requests (spec §3.8), handed on to the
        #: HTTP side; the app runs them. None: this manager serves without the app.
        self.results = results
        #: The Prometheus metrics (SERVING_PROMETHEUS), or None: then nothing is counted.
        self.metrics = ServerMetrics(self._pool_statistics) if config.prometheus else None
        self.failures = FailureObserver(self.breaker, self.metrics)
        self._own = OwnNursery("ModelManager")

        # The rooms, each with one job (see their modules).
        self.registry = Endpoints()
        self.pools = Pools(config, self.metrics)
        self.registration = Registration(config, self.registry, self.pools, self.metrics,
                                         lambda: self.nursery)
        self.dynamic = DynamicLoading(config, self.registry, self.registration)
        self.invocation = Invocation(self.failures)

        # Their entry points, as the HTTP side and start-up call them.
        self.endpoints = self.registry.by_name
        self.startup_names = self.registry.startup_names
        self.endpoint = self.registry.endpoint
        self.find_workflow = self.registry.find_workflow
        self.describe = self.registry.describe
        self.page = self.registry.page
        self.register = self.registration.register
        self.register_model = self.registration.register_model
        self.register_workflow = self.registration.register_workflow
        self.register_workflow_file = self.registration.register_workflow_file
        self.unregister = self.registration.unregister
        self.cancel_loads = self.registration.cancel_loads
        self.find_or_load = self.dynamic.find_or_load
        self.predict = self.invocation.predict
        self.call_model = self.invocation.call_model

    # -- lifetime ----------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[ModelManager] = trio.TASK_STATUS_IGNORED):
        """The manager's nursery: every pool and background load lives here."""
        # Nothing else would ever remove what a crashed run was downloading or deleting.
        await trio.to_thread.run_sync(source_cache.remove_stale_temps, self.config)
        await self._own.run(task_status, self)

    async def aclose(self, grace_s: float = UNREGISTER_GRACE_S) -> None:
        """Shutdown: abort the loads in progress (cancel_loads), then unregister
        everything, answering or failing every request."""
        self.cancel_loads()
        with trio.CancelScope(shield=True):
            await self.pools.aclose(grace_s)
            self.registry.clear()

    @property
    def nursery(self) -> trio.Nursery:
        return self._own.nursery

    # -- the rest, composed ------------------------------------------------------------
    async def scale(self, name: str, version: str | None, min_workers: int | None,
                    max_workers: int | None, device: str | None) -> list[Workflow]:
        """PUT /models/{name}[/{version}] (spec §2.7)."""
        targets = self.registry.endpoint(name).select(version)
        return await scale(targets, name, min_workers, max_workers, device)

    def adapters_of(self, name: str | None) -> ModelAdapters:
        """The adapter API's model (spec §2.10): ``name``, or the single start-up model."""
        if name is None:
            if len(self.startup_names) != 1:
                raise AdapterError.needs_prefix()
            name = self.startup_names[0]
        return self.pools.adapters_of(name, self.registry)

    def adapter_tables(self) -> Iterator[tuple[str, ModelAdapters]]:
        """(endpoint name, its model's adapters) for each model with LoRA on, start-up
        models first: what the OpenAI routes list, and search for a ``model`` name."""
        names = [*self.startup_names, *sorted(set(self.endpoints) - set(self.startup_names))]
        for name in names:
            endpoint = self.endpoints.get(name)
            model = endpoint.versions[-1].single_model if endpoint and endpoint.versions else None
            if model is not None and model.pool is not None and model.pool.adapters is not None:
                yield name, model.pool.adapters

    def health(self) -> tuple[dict[str, str], bool, bool]:
        """(key → status, any failed, any pending) over every model (spec §3.2)."""
        return self.registry.health(self.config.sagemaker_health_check_override)

    def _pool_statistics(self) -> Iterator[tuple[str, str, PoolView]]:
        return self.pools.statistics()


__all__ = ["ModelManager"]
