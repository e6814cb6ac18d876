"""Registration, loading and unregistering (spec §2.2, §2.3, §2.9, §4.3-§4.7).

Registration flows one way: the HTTP side hands over what the request said, and this
room checks the URL (``url_policy``), tells a workflow file from a model
(``workflow_file_of``), reads the file (``load_workflow``), resolves each model's files
(``store``) and starts or shares its pool (``Pools``).

A registration is two steps: the workflow enters the registry synchronously (conflicts
are 409 at once), then its models load in the manager's nursery — awaited for
``synchronous=true`` (rolled back on failure), in the background otherwise. The load
never runs in the request's task: a client hanging up (or hypercorn dropping the request
at shutdown) must not abort it, while stopping the manager (``cancel_loads``) must.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import trio

from djl import store, url_policy
from djl.config import RegisterParams, ServerConfig
from djl.errors import BadRequest, DjlError, ModelLoadError, ModelNotFound, ServiceUnavailable
from djl.metrics import ServerMetrics
from djl.registry.endpoints import Endpoints, Model, Workflow
from djl.registry.pools import Pools
from djl.workflow.files import workflow_file_of
from djl.workflow.spec import load_workflow

log = logging.getLogger("djl.registry")


@dataclass(eq=False)
class Outcome:
    """A load others wait for: ``finish`` records how it ended, ``wait`` re-raises it."""

    done: trio.Event = field(default_factory=trio.Event)
    #: Set when it failed; every waiter raises it.
    error: BaseException | None = None

    def finish(self, error: BaseException | None = None) -> None:
        self.error = error
        self.done.set()

    async def wait(self) -> None:
        await self.done.wait()
        if self.error is not None:
            raise self.error


class Registration:
    """Puts workflows into the registry, loads their models, takes them out again."""

    def __init__(self, config: ServerConfig, registry: Endpoints, pools: Pools,
                 metrics: ServerMetrics | None, nursery: Callable[[], trio.Nursery]) -> None:
        self.config = config
        self.registry = registry
        self.pools = pools
        self.metrics = metrics
        #: The manager's nursery, where every load runs (raises while it is not running).
        self._nursery = nursery
        #: Cancel scopes of synchronous registrations still loading (see cancel_loads).
        self._loads: set[trio.CancelScope] = set()
        #: Set by cancel_loads: a registration arriving later is aborted at once.
        self._stopping = False

    # -- registering -------------------------------------------------------------------
    async def register(self, params: RegisterParams, *, startup: bool = False) -> Workflow:
        """POST /models and start-up entries: a workflow file (spec §7.1) or one model.

        Through POST /models a workflow file without ``model_name`` is named after its
        URL, not after the name inside the file (spec §2.2); a start-up one keeps its own.
        """
        # Before workflow_file_of looks at the disk: a refused path must not tell whether
        # it exists.
        url_policy.check(params.url, self.config)
        workflow_file = workflow_file_of(params.url)
        if workflow_file is None:
            return await self.register_model(params, startup=startup)
        if params.model_name is None and not startup:
            params = replace(params, model_name=store.infer_model_name(params.url))
        spec = await load_workflow(workflow_file, self.config)
        return await self.register_workflow(
            spec, name=params.model_name, synchronous=params.synchronous, startup=startup
        )

    async def register_workflow_file(self, url: str, replacements: Mapping[str, str],
                                     *, synchronous: bool = True) -> Workflow:
        """POST /workflows with ``url``: read, substitute and parse it, then register."""
        spec = await load_workflow(url, self.config, replacements)
        return await self.register_workflow(spec, synchronous=synchronous)

    async def register_model(self, params: RegisterParams, *, startup: bool = False) -> Workflow:
        """A single-model workflow. Returns once loaded if synchronous."""
        url_policy.check(params.url, self.config)
        name = params.model_name or store.infer_model_name(params.url)
        model = Model(name, params.model_version, params.url, params)
        workflow = Workflow(name, params.model_version, {name: model}, loaded_at_startup=startup)
        await self._register(workflow, params.synchronous)
        return workflow

    async def register_workflow(
        self, spec: Any, *, name: str | None = None, synchronous: bool = True,
        startup: bool = False,
    ) -> Workflow:
        """A parsed workflow file (djl.workflow.spec.WorkflowSpec)."""
        workflow_name = name or spec.name
        if not workflow_name:
            raise BadRequest.unnamed_workflow()
        models: dict[str, Model] = {}
        for local_name, ref in spec.models.items():
            url_policy.check(ref.url, self.config)
            models[local_name] = Model(
                local_name, ref.version, ref.url, ref.params,
                arguments=dict(ref.arguments), options=dict(ref.options),
            )
        workflow = Workflow(workflow_name, spec.version, models, spec=spec,
                            loaded_at_startup=startup)
        await self._register(workflow, synchronous)
        return workflow

    async def _register(self, workflow: Workflow, synchronous: bool) -> None:
        self.registry.add(workflow)
        if not synchronous:
            self._nursery().start_soon(self._load_in_background, workflow)
            return
        outcome = Outcome()
        self._nursery().start_soon(self._load_registered, workflow, outcome)
        await outcome.wait()

    async def _load_registered(self, workflow: Workflow, outcome: Outcome) -> None:
        """A synchronous registration's load: rolled back unless it loads, its outcome
        handed to the waiting request."""
        scope = trio.CancelScope()
        if self._stopping:
            scope.cancel()
        self._loads.add(scope)
        error: BaseException | None = None
        try:
            with scope:
                await self._load_workflow(workflow)
            if scope.cancelled_caught:
                error = ServiceUnavailable.server_stopping()
            elif workflow.removed:
                # A DELETE stopped the load: answering "registered" would name a model
                # that no longer exists.
                error = ModelNotFound(
                    f"Model or workflow {workflow.name} was unregistered while it loaded"
                )
        except Exception as exc:  # noqa: BLE001 — the registering request renders it
            error = exc
        except BaseException:
            error = ServiceUnavailable.server_stopping()
            raise
        finally:
            self._loads.discard(scope)
            if error is not None:
                with trio.CancelScope(shield=True):
                    await self._remove(workflow)
            outcome.finish(error)

    def cancel_loads(self) -> None:
        """Shutdown has begun: abort synchronous registrations still loading, and any that
        arrive while the listeners drain."""
        self._stopping = True
        for scope in self._loads:
            scope.cancel()

    # -- loading -----------------------------------------------------------------------
    async def _load_in_background(self, workflow: Workflow) -> None:
        try:
            await self._load_workflow(workflow)
        except DjlError as exc:
            log.error("loading %s failed: %s", workflow.name, exc.message)
        if workflow.removed:
            log.info("loading %s stopped: unregistered", workflow.name)

    async def _load_workflow(self, workflow: Workflow) -> None:
        workflow.loading = True
        workflow.load_scope = trio.CancelScope()
        began = trio.current_time()
        metrics = self.metrics
        if metrics is not None:
            workflow.observe_latency_us = metrics.for_model(
                workflow.name, workflow.version).observe_request_latency_us
        try:
            with workflow.load_scope:
                for model in workflow.models.values():
                    if workflow.removed:
                        break
                    await self._load_model(model)
            if metrics is not None and not workflow.removed:
                metrics.registered(workflow.name, workflow.version,
                                   trio.current_time() - began)
        finally:
            workflow.loading = False
            workflow.load_scope = None
            if workflow.removed:
                # Unregistered while its models loaded (_remove leaves them to us, so as not
                # to release a source or pool mid-load): release what was loaded, or the
                # worker pool would outlive its workflow.
                with trio.CancelScope(shield=True):
                    for model in workflow.models.values():
                        await self.pools.release(model)

    async def _load_model(self, model: Model) -> None:
        """Resolve, configure and start (or share) the model's worker pool (spec §4.7)."""
        if await self.pools.join(model):
            return
        metrics = self.metrics
        try:
            began = trio.current_time()
            model.source = await store.resolve_model(model.url, self.config)
            if metrics is not None:
                metrics.downloaded(model.model_id, model.version, trio.current_time() - began)
            pool = await self.pools.start(model, self._nursery())
        except DjlError as exc:
            model.load_error = exc
            if metrics is not None:
                metrics.model_loading_failed()
            raise
        except Exception as exc:
            # Not a failure we foresaw, but still this model's: it must not escape into the
            # manager's nursery (an async load would take the server down with it).
            log.exception("loading model %s failed unexpectedly", model.model_id)
            model.load_error = ModelLoadError(f"Failed to load model: {exc}")
            if metrics is not None:
                metrics.model_loading_failed()
            raise model.load_error from exc
        await self.pools.adopt(model, pool)

    # -- unregistering -----------------------------------------------------------------
    async def unregister(self, name: str, version: str | None = None) -> None:
        """DELETE: one version, or all of them (spec §2.9)."""
        targets = self.registry.unregistering(name, version)
        # Once a workflow leaves the registry nobody can reach it again, so its workers must
        # stop even if the client hangs up during the grace period.
        with trio.CancelScope(shield=True):
            for workflow in targets:
                await self._remove(workflow)

    async def _remove(self, workflow: Workflow) -> None:
        self.registry.remove(workflow)
        if workflow.loading:
            # Stop the load in flight (a download, workers starting): _load_workflow then
            # releases whatever it had loaded.
            if workflow.load_scope is not None:
                workflow.load_scope.cancel()
            return
        for model in workflow.models.values():
            await self.pools.release(model)


__all__ = ["Outcome", "Registration"]
