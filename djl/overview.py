"""What the management console shows: one snapshot of every workflow version, its models
and their workers, with each one's live figures (djl.figures).

Describe (spec §2.6) has a fixed shape; the console wants more of each pool's snapshot
(engine, worker state, pid, memory), so it reads the registry itself, here, and the HTTP
side only renders the frozen result.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from djl import __version__
from djl.errors import BadRequest
from djl.figures import History, LiveFigures
from djl.log_levels import djl_level
from djl.registry import Model, ModelManager, Workflow


@dataclass(frozen=True, slots=True)
class WorkerRow:
    id: int
    #: STARTING, IDLE, BUSY, RETIRING or STOPPED (djl.wlm.statistics.WorkerStatistics).
    state: str
    device: str
    pid: int | None
    rss_bytes: int | None
    #: Requests it has answered.
    requests: int


@dataclass(frozen=True, slots=True)
class ModelRow:
    model_id: str
    url: str
    #: Describe's word: Healthy, Unhealthy, PENDING, FAILED, ...
    status: str
    #: The runtime engine (Python, PyTorch, ...); None until the model is prepared.
    engine: str | None
    batch_size: int | None
    queue_depth: int
    queue_capacity: int | None
    min_workers: int
    max_workers: int
    workers: tuple[WorkerRow, ...]
    #: Why its latest worker died or its load failed.
    failure: str | None
    #: Its batch sizes and generated tokens (labelled by model id); None: no figures yet.
    figures: History | None


@dataclass(frozen=True, slots=True)
class WorkflowRow:
    """A registered workflow version: a single model (POST /models) or a graph of them."""

    name: str
    version: str | None
    status: str
    loaded_at_startup: bool
    models: tuple[ModelRow, ...]
    #: Its request rate and latency (labelled by the workflow's name); None: none yet.
    figures: History | None


@dataclass(frozen=True, slots=True)
class Overview:
    version: str
    #: The ``djl`` logger's level as /server/logging names it.
    log_level: str
    #: Why there are no live figures (metrics are off), or None.
    figures_off: str | None
    workflows: tuple[WorkflowRow, ...]


def overview(manager: ModelManager, figures: LiveFigures | None, now: float) -> Overview:
    """The snapshot at ``now`` (the clock ``figures`` samples by)."""
    history = figures.read(now) if figures is not None else {}
    off = None if figures is not None else BadRequest.prometheus_disabled().message
    rows = tuple(_workflow_row(w, history)
                 for endpoint in list(manager.endpoints.values()) for w in endpoint.versions)
    return Overview(__version__, djl_level(logging.getLogger("djl").getEffectiveLevel()),
                    off, rows)


def _workflow_row(workflow: Workflow, history: dict[tuple[str, str], History]) -> WorkflowRow:
    models = tuple(_model_row(m, history) for m in workflow.models.values())
    statuses = list(dict.fromkeys(m.status for m in models))
    return WorkflowRow(
        name=workflow.name, version=workflow.version, status=" / ".join(statuses),
        loaded_at_startup=workflow.loaded_at_startup,
        models=models, figures=history.get((workflow.name, workflow.version or "")),
    )


def _model_row(model: Model, history: dict[tuple[str, str], History]) -> ModelRow:
    pool = model.pool
    figures = history.get((model.model_id, model.version or ""))
    failure = model.load_error.message if model.load_error is not None else None
    if pool is None:
        return ModelRow(model.model_id, model.url, model.status.value, None, None, 0, None,
                        0, 0, (), failure, figures)
    stats = pool.statistics(rss=True)
    workers = tuple(
        WorkerRow(w.id, w.state, str(group.device), w.pid, w.rss_bytes, w.requests)
        for group in stats.groups for w in group.workers)
    return ModelRow(
        model_id=model.model_id, url=model.url, status=stats.health,
        engine=pool.command.engine, batch_size=pool.config.batch_size,
        queue_depth=stats.queued, queue_capacity=stats.queue_capacity,
        min_workers=sum(g.min_workers for g in stats.groups),
        max_workers=sum(g.max_workers for g in stats.groups),
        workers=workers, failure=stats.last_failure or failure, figures=figures,
    )


__all__ = ["ModelRow", "Overview", "WorkerRow", "WorkflowRow", "overview"]
