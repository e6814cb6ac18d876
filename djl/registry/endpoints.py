"""What is registered: endpoints, their versions (workflows) and the models of each.

Synchronous: nothing here awaits, so a lookup, an insert or a removal is atomic for the
trio tasks around it. The conflict rules of spec §4.3, round-robin versions (§3.4),
paging (§2.4) and the health summary of ``/ping`` (§3.2) live here.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from djl.config import ModelConfig, RegisterParams
from djl.errors import Conflict, DjlError, ModelNotFound
from djl.status import ModelStatus

if TYPE_CHECKING:
    import trio

    from djl.store import ModelSource
    from djl.wlm.pool import WorkerPool
    from djl.wlm.statistics import PoolStatistics


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
    #: The files resolved for it while it has no pool yet (a failed or unfinished load);
    #: once it has a pool, the pool's SharedPool owns them.
    source: ModelSource | None = None
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


class Endpoints:
    """Endpoint name → Endpoint, and the names registered at start-up."""

    def __init__(self) -> None:
        #: Every registered endpoint; each has at least one version.
        self.by_name: dict[str, Endpoint] = {}
        #: Endpoint names registered at start-up (spec §4.5), in registration order.
        self.startup_names: list[str] = []

    def add(self, workflow: Workflow) -> None:
        """Insert into the registry or raise 409 (spec §4.3)."""
        endpoint = self.by_name.get(workflow.name)
        if endpoint is not None:
            if workflow.version is None and endpoint.versions:
                raise Conflict.already_registered(workflow.name, None)
            if any(w.version == workflow.version for w in endpoint.versions):
                raise Conflict.already_registered(workflow.name, workflow.version)
        else:
            endpoint = self.by_name[workflow.name] = Endpoint(workflow.name)
        endpoint.versions.append(workflow)
        if workflow.loaded_at_startup and workflow.name not in self.startup_names:
            self.startup_names.append(workflow.name)

    def remove(self, workflow: Workflow) -> None:
        """Take ``workflow`` out (unregistered or rolled back); nobody finds it again."""
        workflow.removed = True
        endpoint = self.by_name.get(workflow.name)
        if endpoint is not None and workflow in endpoint.versions:
            endpoint.versions.remove(workflow)
            if not endpoint.versions:
                del self.by_name[workflow.name]

    def unregistering(self, name: str, version: str | None) -> list[Workflow]:
        """What a DELETE removes (spec §2.9): one version, or all of them (and then the
        name stops being a start-up model)."""
        targets = self.endpoint(name).select(version)
        if version is None and name in self.startup_names:
            self.startup_names.remove(name)
        return targets

    def clear(self) -> None:
        self.by_name.clear()

    # -- lookup ------------------------------------------------------------------------
    def endpoint(self, name: str) -> Endpoint:
        endpoint = self.by_name.get(name)
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
        endpoint = self.by_name.get(name)
        if endpoint is None:
            raise ModelNotFound.workflow(name)
        if version is None:
            return list(endpoint.versions)
        workflow = endpoint.find(version)
        if workflow is None:
            raise ModelNotFound.workflow_version(name, version)
        return [workflow]

    def page(self, limit: int, token: int) -> tuple[list[Endpoint], int, int]:
        """Endpoints of one page, sorted by name (spec §2.4): (page, next index, total)."""
        if limit > 100 or limit < 0:
            limit = 100
        token = max(token, 0)
        names = sorted(self.by_name)
        last = min(token + limit, len(names))
        return [self.by_name[n] for n in names[token:last]], token + limit, len(names)

    def health(self, sagemaker: bool) -> tuple[dict[str, str], bool, bool]:
        """(key → status, any failed, any pending) over every model (spec §3.2);
        ``sagemaker``: an Unhealthy model fails the health check too."""
        statuses: dict[str, str] = {}
        failed = pending = False
        for endpoint in self.by_name.values():
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
                        failed = failed or sagemaker
        return statuses, failed, pending


__all__ = ["Endpoint", "Endpoints", "Model", "Workflow"]
