"""ModelManager: endpoints → versions → workflows → models, and their worker pools.

Everything is a workflow (spec §0, §7.7): ``POST /models`` wraps one model in a
single-model workflow of the same name. Models with the same (id, version) share one
WorkerPool, reference-counted, released with the last workflow that uses it (§4.3).

The manager's nursery lives as long as the app; each pool runs inside it and fails at
its own boundary. Registration is a two-step affair: the workflow enters the registry
synchronously (conflicts are 409 at once), then its models load — awaited for
``synchronous=true`` (rolled back on failure), in the background otherwise.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import trio

from djl import store, url_policy
from djl.async_results import AsyncResults
from djl.breaker import ErrorRateBreaker
from djl.config import (
    RAY_DEVICE,
    UNREGISTER_GRACE_S,
    ModelConfig,
    RegisterParams,
    ServerConfig,
)
from djl.errors import (
    BadRequest,
    Conflict,
    DjlError,
    ModelLoadError,
    ModelNotFound,
    NotFound,
    ServiceUnavailable,
    TranslateError,
    WlmError,
)
from djl.io import Input, Output
from djl.metrics import PoolView, ServerMetrics
from djl.prepare import prepare_model
from djl.status import ModelStatus
from djl.wlm.devices import Device
from djl.wlm.launch import Launcher
from djl.wlm.pool import PoolStatistics, WorkerPool, first_error, priority_of
from djl.wlm.requirements import install_requirements
from djl.workflow.graph import execute
from djl.workflow.spec import load_workflow, workflow_file_of

T = TypeVar("T")

log = logging.getLogger("djl.registry")


@dataclass(eq=False)
class Model:
    """One model of a workflow. ``pool`` appears once loading has created or found it."""

    model_id: str
    version: str | None
    url: str
    params: RegisterParams
    #: Extra settings from a workflow file's model object (arguments/options maps).
    arguments: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    pool: WorkerPool | None = None
    source: store.ModelSource | None = None
    config: ModelConfig | None = None
    #: Set when loading failed: the model shows FAILED.
    load_error: DjlError | None = None

    @property
    def key(self) -> tuple[str, str | None]:
        return (self.model_id, self.version)

    @property
    def status(self) -> ModelStatus:
        if self.pool is not None:
            return self.pool.status
        # DJL leaves a model whose download failed PENDING forever, so /ping never reports
        # it; any failed load is FAILED here.
        if self.load_error is not None:
            return ModelStatus.FAILED
        return ModelStatus.PENDING

    def statistics(self) -> PoolStatistics | None:
        """Its pool's snapshot (describe renders it), None while it has no pool yet."""
        return self.pool.statistics() if self.pool is not None else None


@dataclass(eq=False)
class Workflow:
    """A named, optionally versioned graph of models (a single model for POST /models)."""

    name: str
    version: str | None
    models: dict[str, Model]
    #: The parsed workflow file; None for a single-model workflow.
    spec: Any = None
    loaded_at_startup: bool = False
    #: True while its models load; False once that finished, however it ended.
    loading: bool = False
    #: Cancels the load in flight (set while ``loading``): unregistering stops it.
    load_scope: trio.CancelScope | None = None
    #: Set when it leaves the registry (unregistered or rolled back).
    removed: bool = False
    #: Its RequestLatency observer (djl.metrics), resolved once; None with metrics off.
    observe_latency_us: Callable[[float], None] | None = None

    @property
    def single_model(self) -> Model | None:
        return next(iter(self.models.values())) if self.spec is None else None


@dataclass(eq=False)
class Endpoint:
    """A registry slot: the versions of one workflow name, in insertion order."""

    name: str
    versions: list[Workflow] = field(default_factory=list)
    _turn: Iterator[int] = field(default_factory=itertools.count)

    def find(self, version: str | None) -> Workflow | None:
        for workflow in self.versions:
            if workflow.version == version:
                return workflow
        if version == "default":
            return next((w for w in self.versions if w.version is None), None)
        return None

    def select(self, version: str | None) -> list[Workflow]:
        """One version, or every version when ``version`` is None (describe/scale/delete)."""
        if version is None:
            return list(self.versions)
        workflow = self.find(version)
        if workflow is None:
            raise ModelNotFound.model_or_workflow(self.name)
        return [workflow]

    def next_version(self) -> Workflow:
        """Round-robin across versions (spec §3.4)."""
        return self.versions[next(self._turn) % len(self.versions)]


#: What a request does while it waits for a model: an async function that never returns
#: normally (it listens for its client, and cancels the request if the client leaves);
#: it is cancelled once the job is done. The HTTP front passes one (issue 10).
Watch = Callable[[], Awaitable[None]]


class _Done:
    """A job's ``done`` for a caller that waits by running a :data:`Watch`: setting it
    also ends the watch."""

    __slots__ = ("event", "scope")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.scope: trio.CancelScope | None = None

    def set(self) -> None:
        self.event.set()
        if self.scope is not None:
            self.scope.cancel()

    async def wait(self) -> None:
        await self.event.wait()


async def watching(watch: Watch | None, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``await fn(*args)`` with ``watch`` running beside it in a task (where the wait is not
    a single job's: workflows, streams)."""
    if watch is None:
        return await fn(*args)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            result = await fn(*args)
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The watch fails only by being cancelled: fn's error is raised as itself, so
        # its status holds (a Cancelled stays in its group, for trio's cancel scopes).
        if len(group.exceptions) == 1 and isinstance(group.exceptions[0], Exception):
            raise group.exceptions[0] from None
        raise
    return result


class ModelManager:
    """The registry of endpoints and the owner of every worker pool."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.endpoints: dict[str, Endpoint] = {}
        #: (model id, version) → [pool, reference count, the ModelSource the pool loaded]
        self._pools: dict[tuple[str, str | None], list[Any]] = {}
        #: Endpoint names registered at start-up (spec §4.5).
        self.startup_names: list[str] = []
        self._nursery: trio.Nursery | None = None
        self._pool_lock = trio.Lock()
        #: Cancel scopes of synchronous registrations still loading (see cancel_loads).
        self._loads: set[trio.CancelScope] = set()
        #: Set by cancel_loads: a registration arriving later is aborted at once.
        self._stopping = False
        #: Spec §3.9: inference failures trip /ping to 503.
        self.breaker = ErrorRateBreaker.from_config(
            config.error_rate_wlm, config.error_rate_server, config.error_rate_any)
        #: Spec §3.8: results of x-synchronous: false requests; runs in our nursery.
        self.results = AsyncResults(
            max_entries=config.async_result_max_entries,
            max_bytes=config.async_result_max_bytes, ttl_s=config.async_result_ttl_s,
            cache_batch=config.cache_batch, chunk_timeout_s=config.chunked_read_timeout_s)
        #: Spec §3.10: (name, version) → [loaded, error] of a dynamic load in flight, so
        #: concurrent first requests load the model once.
        self._dynamic_loads: dict[tuple[str, str | None], list[Any]] = {}
        #: The Prometheus metrics (SERVING_PROMETHEUS), or None: then nothing is counted.
        self.metrics = ServerMetrics(self._pool_statistics) if config.prometheus else None

    # -- lifetime ----------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[ModelManager] = trio.TASK_STATUS_IGNORED):
        """The manager's nursery: every pool and background load lives here."""
        # Nothing else would ever remove what a crashed run was downloading or deleting.
        await trio.to_thread.run_sync(store.remove_stale_temps, self.config)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self.results.run)
                task_status.started(self)
                await trio.sleep_forever()
        finally:
            self._nursery = None

    async def aclose(self, grace_s: float = UNREGISTER_GRACE_S) -> None:
        """Shutdown: abort the loads in progress (cancel_loads), then unregister
        everything, answering or failing every request."""
        self.cancel_loads()
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as nursery:
                for entry in list(self._pools.values()):
                    nursery.start_soon(entry[0].aclose, grace_s)
            self._pools.clear()
            self.endpoints.clear()

    @property
    def nursery(self) -> trio.Nursery:
        if self._nursery is None:
            raise RuntimeError("ModelManager.run is not running")
        return self._nursery

    # -- registration ------------------------------------------------------------------
    def _add(self, workflow: Workflow) -> None:
        """Insert into the registry or raise 409 (spec §4.3)."""
        endpoint = self.endpoints.get(workflow.name)
        if endpoint is not None:
            if workflow.version is None and endpoint.versions:
                raise Conflict.already_registered(workflow.name, None)
            if any(w.version == workflow.version for w in endpoint.versions):
                raise Conflict.already_registered(workflow.name, workflow.version)
        else:
            endpoint = self.endpoints[workflow.name] = Endpoint(workflow.name)
        endpoint.versions.append(workflow)

    async def register_model(self, params: RegisterParams, *, startup: bool = False) -> Workflow:
        """POST /models: a single-model workflow. Returns once loaded if synchronous."""
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
        self._add(workflow)
        if workflow.loaded_at_startup and workflow.name not in self.startup_names:
            self.startup_names.append(workflow.name)
        if not synchronous:
            self.nursery.start_soon(self._load_in_background, workflow)
            return
        # The load runs in the manager's nursery, not in the request's task: a client
        # hanging up (or hypercorn dropping the request at shutdown) must not abort it,
        # while stopping the manager (cancel_loads) must, whichever way it was launched.
        outcome: list[BaseException | None] = []
        done = trio.Event()
        self.nursery.start_soon(self._load_registered, workflow, outcome, done)
        await done.wait()
        if outcome[0] is not None:
            raise outcome[0]

    async def _load_registered(self, workflow: Workflow, outcome: list[BaseException | None],
                               done: trio.Event) -> None:
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
            outcome.append(error)
            done.set()

    def cancel_loads(self) -> None:
        """Shutdown has begun: abort synchronous registrations still loading, and any that
        arrive while the listeners drain."""
        self._stopping = True
        for scope in self._loads:
            scope.cancel()

    async def register(self, params: RegisterParams, *, startup: bool = False) -> Workflow:
        """POST /models and start-up entries: a workflow file (spec §7.1) or one model."""
        # Before workflow_file_of looks at the disk: a refused path must not tell whether
        # it exists.
        url_policy.check(params.url, self.config)
        workflow_file = workflow_file_of(params.url)
        if workflow_file is None:
            return await self.register_model(params, startup=startup)
        spec = await load_workflow(workflow_file, self.config)  # allow-list checked there
        return await self.register_workflow(
            spec, name=params.model_name, synchronous=params.synchronous, startup=startup
        )

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
                        await self._release(model)

    async def _load_model(self, model: Model) -> None:
        """Resolve, configure and start (or share) the model's worker pool (spec §4.7)."""
        async with self._pool_lock:
            shared = self._pools.get(model.key)
            if shared is not None:
                shared[1] += 1
                model.pool = shared[0]
                model.config = shared[0].config
                return
        metrics = self.metrics
        try:
            began = trio.current_time()
            model.source = await store.resolve_model(model.url, self.config)
            if metrics is not None:
                metrics.downloaded(model.model_id, model.version, trio.current_time() - began)
            pool = await self._create_pool(model)
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
        # Shielded: a running pool must be recorded or closed, even when an unregister
        # cancels the load right now.
        with trio.CancelScope(shield=True):
            async with self._pool_lock:
                shared = self._pools.get(model.key)
                if shared is None:
                    # The pool entry owns the source: whichever workflow releases the pool
                    # last releases the cached files, not necessarily the one that loaded them.
                    self._pools[model.key] = [pool, 1, model.source]
                    model.pool, model.source = pool, None
                    return
                shared[1] += 1  # another workflow loaded it meanwhile: use that one
                model.pool = shared[0]
            source, model.source = model.source, None
            await pool.aclose()
            if source is not None:
                await store.release(source)

    async def _create_pool(self, model: Model) -> WorkerPool:
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
        try:
            await self.nursery.start(pool.run)
        except ModelLoadError:
            raise
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        if metrics is not None:
            metrics.loaded(model.model_id, model.version, trio.current_time() - began)
        return pool

    def _pool_statistics(self) -> Iterator[tuple[str, str, PoolView]]:
        """Every pool's snapshot, with its workers' memory (read per metrics scrape)."""
        for (model_id, version), entry in list(self._pools.items()):
            yield model_id, version or "", entry[0].statistics(rss=True)

    # -- unregister --------------------------------------------------------------------
    async def unregister(self, name: str, version: str | None = None) -> None:
        """DELETE: one version, or all of them (spec §2.9)."""
        targets = self.endpoint(name).select(version)
        if version is None and name in self.startup_names:
            self.startup_names.remove(name)
        # Once a workflow leaves the registry nobody can reach it again, so its workers must
        # stop even if the client hangs up during the grace period.
        with trio.CancelScope(shield=True):
            for workflow in targets:
                await self._remove(workflow)

    async def _remove(self, workflow: Workflow) -> None:
        workflow.removed = True
        endpoint = self.endpoints.get(workflow.name)
        if endpoint is not None and workflow in endpoint.versions:
            endpoint.versions.remove(workflow)
            if not endpoint.versions:
                del self.endpoints[workflow.name]
        if workflow.loading:
            # Stop the load in flight (a download, workers starting): _load_workflow then
            # releases whatever it had loaded.
            if workflow.load_scope is not None:
                workflow.load_scope.cancel()
            return
        for model in workflow.models.values():
            await self._release(model)

    async def _release(self, model: Model) -> None:
        """Drop the model's share of its pool; the last share stops it and frees the source.

        ``model.source`` is set only for a model whose load failed before it made a pool.
        """
        pool, model.pool = model.pool, None
        source, model.source = model.source, None
        if pool is not None:
            entry = self._pools.get(model.key)
            if entry is not None and entry[0] is pool:
                entry[1] -= 1
                if entry[1] > 0:
                    return
                del self._pools[model.key]
                source = entry[2]
            await pool.aclose(UNREGISTER_GRACE_S)
        if source is not None:
            await store.release(source)

    # -- lookup ------------------------------------------------------------------------
    def endpoint(self, name: str) -> Endpoint:
        endpoint = self.endpoints.get(name)
        if endpoint is None:
            raise ModelNotFound.model_or_workflow(name)
        return endpoint

    def find_workflow(self, name: str, version: str | None) -> Workflow:
        """For inference: the exact version, or the next one in round-robin order."""
        endpoint = self.endpoint(name)
        workflow = endpoint.find(version) if version else endpoint.next_version()
        if workflow is None:
            raise ModelNotFound.model_or_workflow(name)
        return workflow

    def describe(self, name: str, version: str | None) -> list[Workflow]:
        endpoint = self.endpoints.get(name)
        if endpoint is None:
            raise ModelNotFound.workflow(name)
        if version is None:
            return list(endpoint.versions)
        workflow = endpoint.find(version)
        if workflow is None:
            raise ModelNotFound.workflow(f"Workflow not found: {name}/{version}")
        return [workflow]

    def page(self, limit: int, token: int) -> tuple[list[Endpoint], int, int]:
        """Endpoints of one page, sorted by name (spec §2.4): (page, next index, total)."""
        if limit > 100 or limit < 0:
            limit = 100
        token = max(token, 0)
        names = sorted(self.endpoints)
        last = min(token + limit, len(names))
        return [self.endpoints[n] for n in names[token:last]], token + limit, len(names)

    # -- scaling -----------------------------------------------------------------------
    async def scale(
        self, name: str, version: str | None, min_workers: int | None,
        max_workers: int | None, device: str | None,
    ) -> list[Workflow]:
        targets = self.endpoint(name).select(version)
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

    async def find_or_load(self, name: str, version: str | None, inputs: Input) -> Workflow:
        """The workflow a prediction addresses; with ``model_url_pattern`` set, an unknown
        one is first registered from the request's ``model_url`` (spec §3.10).

        Unlike DJL, the pattern and ``allowed_urls`` apply to a ``model_url`` header as
        much as to a query or form item: a header must not be a way around them.
        """
        loading = self._dynamic_loads.get((name, version))
        if loading is None:
            try:
                return self.find_workflow(name, version)
            except ModelNotFound:
                if not url_policy.loads_on_prediction(self.config):
                    raise
            loading = self._dynamic_loads[(name, version)] = [trio.Event(), None]
            try:
                await self._load_dynamic(name, version, inputs)
            except Exception as exc:
                loading[1] = exc
                raise
            finally:
                del self._dynamic_loads[(name, version)]
                loading[0].set()
        else:
            await loading[0].wait()
            if loading[1] is not None:
                raise loading[1]
        return self.find_workflow(name, version)

    async def _load_dynamic(self, name: str, version: str | None, inputs: Input) -> None:
        url = inputs.get_property("model_url")
        if not url:
            item = inputs.content.get("model_url")
            url = bytes(item).decode("utf-8") if item else None
        if not url:
            raise NotFound.model_url_required()
        url_policy.check(url, self.config, dynamic=True)
        log.info("loading model %s from %s for a prediction (model_url_pattern)", name, url)
        await self.register_model(RegisterParams(
            url=url, model_name=name, model_version=version,
            engine=inputs.get_property("engine_name") or None,
            device=inputs.get_property("device") or None))

    def invocation_target(self, *candidates: str | None) -> str:
        """Spec §3.1: the model an /invocations request names — the first non-empty
        candidate (query, header, form field, in that order), else the single start-up
        model, else 400."""
        for candidate in candidates:
            if candidate:
                return candidate
        if len(self.startup_names) == 1:
            return self.startup_names[0]
        raise BadRequest("Parameter model_name is required.")

    # -- inference ---------------------------------------------------------------------
    async def predict(self, workflow: Workflow, inputs: Input,
                      watch: Watch | None = None) -> Output:
        """``infer``, counted by the error-rate breaker (spec §3.9)."""
        try:
            output = await self.infer(workflow, inputs, watch)
        except Exception as exc:
            self.breaker.failure(exc)
            raise
        code = output.code
        if code >= 500 or code == 424:
            self.breaker.server_error()
        return output

    async def infer(self, workflow: Workflow, inputs: Input,
                    watch: Watch | None = None) -> Output:
        """The workflow's answer to ``inputs``. ``watch``: see :data:`Watch`."""
        observe = workflow.observe_latency_us
        if observe is not None:
            return await self._infer_measured(workflow, inputs, observe, watch)
        model = workflow.single_model
        if model is not None:
            return await self.call_model(model, inputs, watch)
        return await self._execute(workflow, inputs, watch)

    async def _execute(self, workflow: Workflow, inputs: Input,
                       watch: Watch | None = None) -> Output:
        async def call(local_name: str, model_input: Input) -> Output:
            return await self.call_model(workflow.models[local_name], model_input)

        return await watching(watch, execute, workflow.spec, inputs, call)

    async def _infer_measured(self, workflow: Workflow, inputs: Input,
                              observe: Callable[[float], None],
                              watch: Watch | None) -> Output:
        """``infer`` with metrics on: its RequestLatency, and its failure counted as a
        WlmError or a ServerError (the events of spec §3.9)."""
        metrics = self.metrics
        assert metrics is not None
        model = workflow.single_model
        began = trio.current_time()
        try:
            if model is not None:
                output = await self.call_model(model, inputs, watch)
            else:
                output = await self._execute(workflow, inputs, watch)
        except Exception as exc:  # answered with an error (a hang-up is not counted)
            observe((trio.current_time() - began) * 1e6)
            if not isinstance(exc, TranslateError | BadRequest):
                metrics.inference_failed(wlm=isinstance(exc, WlmError))
            raise
        observe((trio.current_time() - began) * 1e6)
        if output.code >= 500 or output.code == 424:
            metrics.inference_failed(wlm=False)
        return output

    async def call_model(self, model: Model, inputs: Input,
                         watch: Watch | None = None) -> Output:
        pool = model.pool
        if pool is None or pool.status is not ModelStatus.READY:
            raise WlmError.not_ready(model.model_id)
        if watch is None:
            job = pool.submit(inputs, priority_of(inputs))
        else:
            done = _Done()
            job = pool.submit(inputs, priority_of(inputs), done)
        try:
            if watch is None:
                await job.done.wait()
            elif not job.finished():
                # The waiting task watches itself: no task and no nursery per request.
                with trio.CancelScope() as done.scope:
                    await watch()
                if not job.finished():
                    await done.wait()
        except BaseException:
            if not job.finished():
                pool.discard(job)
            elif job.result is not None and job.result.stream is not None:
                job.result.stream.close()  # nobody will read it: free the worker now
            raise
        if job.error is not None:
            raise job.error
        return job.result

    # -- health ------------------------------------------------------------------------
    def health(self) -> tuple[dict[str, str], bool, bool]:
        """(key → status, any failed, any pending) over every model (spec §3.2)."""
        statuses: dict[str, str] = {}
        failed = pending = False
        for endpoint in self.endpoints.values():
            for workflow in endpoint.versions:
                for model in workflow.models.values():
                    key = (workflow.name if workflow.name == model.model_id
                           else f"{workflow.name}:{model.model_id}")
                    status = model.status
                    if status is ModelStatus.FAILED:
                        statuses[key] = "FAILED"
                        failed = True
                    elif status is ModelStatus.PENDING:
                        statuses[key] = "PENDING"
                        pending = True
                    elif model.pool is not None and model.pool.healthy():
                        statuses[key] = "Healthy"
                    else:
                        statuses[key] = "Unhealthy"
                        # Spec §3.2: on SageMaker an Unhealthy model fails the health check.
                        failed = failed or self.config.sagemaker_health_check_override
        return statuses, failed, pending

