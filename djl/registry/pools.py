"""Worker pools: started for a model, shared by every model of the same (id, version),
counted, and stopped with the last one (spec §4.3, §4.7); scaling them (§2.7).

Starting a pool is the model's load proper: ``prepare_model`` plans it, its requirements
are installed, a Ray launcher is opened when it is placed there, and the pool starts in
the manager's nursery, reporting ready once its minimum workers are up.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import trio

from djl import store
from djl.adapter_calls import flag
from djl.adapters import ModelAdapters, built_in
from djl.config import RAY_DEVICE, UNREGISTER_GRACE_S, ServerConfig
from djl.errors import AdapterError, DjlError, ModelLoadError, ModelNotFound, ServiceUnavailable
from djl.metrics import PoolView, ServerMetrics
from djl.prepare import prepare_model
from djl.registry.endpoints import Endpoints, Model, Workflow
from djl.status import ModelStatus
from djl.wlm.devices import Device
from djl.wlm.launch import Launcher
from djl.wlm.pool import WorkerPool, first_error
from djl.wlm.requirements import install_requirements

log = logging.getLogger("djl.registry")


@dataclass(eq=False)
class SharedPool:
    """One running pool and who uses it."""

    pool: WorkerPool
    #: Models (of any workflow) using it; the one that brings it to 0 stops it.
    refs: int
    #: The files it loaded: released with the pool by whichever model releases it last,
    #: not necessarily the one that loaded them.
    source: store.ModelSource | None


class Pools:
    """(model id, version) → SharedPool, and the start of new pools."""

    def __init__(self, config: ServerConfig, metrics: ServerMetrics | None) -> None:
        self.config = config
        self.metrics = metrics
        self.shared: dict[tuple[str, str | None], SharedPool] = {}
        #: Held while ``shared`` is read and changed around an await.
        self._lock = trio.Lock()

    async def join(self, model: Model) -> bool:
        """Give ``model`` a share of the pool already running for its key; False if none."""
        async with self._lock:
            shared = self.shared.get(model.key)
            if shared is None:
                return False
            shared.refs += 1
            model.pool = shared.pool
            model.config = shared.pool.config
            return True

    async def adopt(self, model: Model, pool: WorkerPool) -> None:
        """Record the pool just started for ``model`` (which owns ``model.source``), or,
        when another workflow started one meanwhile, share that one and stop ours.

        Shielded: a running pool must be recorded or closed, even when an unregister
        cancels the load right now.
        """
        with trio.CancelScope(shield=True):
            async with self._lock:
                shared = self.shared.get(model.key)
                if shared is None:
                    self.shared[model.key] = SharedPool(pool, 1, model.source)
                    model.pool, model.source = pool, None
                    return
                shared.refs += 1
                model.pool = shared.pool
            source, model.source = model.source, None
            await pool.aclose()
            if source is not None:
                await store.release(source)

    async def release(self, model: Model) -> None:
        """Drop the model's share of its pool; the last share stops it and frees the source.

        ``model.source`` is set only for a model whose load failed before it made a pool.
        """
        pool, model.pool = model.pool, None
        source, model.source = model.source, None
        if pool is not None:
            shared = self.shared.get(model.key)
            if shared is not None and shared.pool is pool:
                shared.refs -= 1
                if shared.refs > 0:
                    return
                del self.shared[model.key]
                source = shared.source
            await pool.aclose(UNREGISTER_GRACE_S)
        if source is not None:
            await store.release(source)

    async def start(self, model: Model, nursery: trio.Nursery) -> WorkerPool:
        """Plan, prepare and start a pool for ``model`` (whose ``source`` is resolved) in
        ``nursery``; returns once its minimum workers loaded, raises the load's error."""
        source = model.source
        assert source is not None
        began = trio.current_time()
        prepared = await trio.to_thread.run_sync(partial(
            prepare_model, self.config, source, model.params,
            options=model.options, arguments=model.arguments,
        ))
        model.config = prepared.config
        if prepared.install_requirements:
            await install_requirements(
                model.model_id, source.model_dir, prepared.command.python, self.config.offline,
                prepared.config.model_loading_timeout_s,
            )
        launchers: dict[str, Launcher] = {}
        if prepared.ray is not None:
            # Imported only here: a server without Ray placements never imports ray.
            from djl.wlm.ray_launcher import RayLauncher, RayPlacementSettings

            launchers[RAY_DEVICE] = await RayLauncher.open(
                RayPlacementSettings.of(self.config), prepared.ray, source.model_dir)
        metrics = self.metrics
        pool = WorkerPool(
            model.model_id, model.version, prepared.config, prepared.command, prepared.devices,
            fail_fast=self.config.fail_fast,
            health_check_override=self.config.health_check_override,
            metrics=metrics.for_model(model.model_id, model.version) if metrics else None,
            launchers=launchers,
        )
        if flag(prepared.config.options.get("enable_lora"), False):
            # Before the first workers start: each registers these before serving.
            pool.adapters = ModelAdapters(pool, {a.name: a for a in built_in(source.model_dir)})
        try:
            await nursery.start(pool.run)
        except ModelLoadError:
            raise
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        if metrics is not None:
            metrics.loaded(model.model_id, model.version, trio.current_time() - began)
        return pool

    def adapters_of(self, name: str, registry: Endpoints) -> ModelAdapters:
        """Spec §2.10: the adapters of worker pool ``name`` (a model id, else an endpoint
        with a single model); 404, 400 for a workflow, 400 when LoRA is off."""
        pool = next((s.pool for (model_id, _), s in self.shared.items() if model_id == name),
                    None)
        if pool is None:
            endpoint = registry.by_name.get(name)
            if endpoint is None or not endpoint.versions:
                raise AdapterError.model_not_found(name)
            model = endpoint.versions[-1].single_model
            if model is None:
                raise AdapterError.not_a_model(name)
            pool = model.pool
            if pool is None:
                raise AdapterError.model_not_found(name)
        if pool.adapters is None:
            raise AdapterError.lora_disabled()
        return pool.adapters

    def statistics(self) -> Iterator[tuple[str, str, PoolView]]:
        """Every pool's snapshot, with its workers' memory (read per metrics scrape)."""
        for (model_id, version), shared in list(self.shared.items()):
            yield model_id, version or "", shared.pool.statistics(rss=True)

    async def aclose(self, grace_s: float) -> None:
        """Stop every pool at once (shutdown), each answering or failing its requests."""
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as nursery:
                for shared in list(self.shared.values()):
                    nursery.start_soon(shared.pool.aclose, grace_s)
            self.shared.clear()


async def scale(targets: list[Workflow], name: str, min_workers: int | None,
                max_workers: int | None, device: str | None) -> list[Workflow]:
    """PUT /models/{name}: every model of ``targets`` to these bounds (spec §2.7)."""
    for workflow in targets:
        for model in workflow.models.values():
            if model.status is not ModelStatus.READY or model.pool is None:
                raise ServiceUnavailable.not_ready(workflow.name)
    target_device = Device.parse(device) if device else None
    for workflow in targets:
        for model in workflow.models.values():
            # Every await below lets a DELETE run: a workflow it removed is gone (404),
            # whether that happened before this model's turn or while it scaled.
            pool = model.pool
            if workflow.removed or pool is None:
                raise ModelNotFound.model_or_workflow(name)
            try:
                await pool.scale(min_workers, max_workers, target_device)
            except DjlError:
                if workflow.removed:
                    raise ModelNotFound.model_or_workflow(name) from None
                raise
    return targets


__all__ = ["Pools", "SharedPool", "scale"]
