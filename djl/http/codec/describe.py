"""Domain objects → the spec's JSON: model and workflow descriptions, lists, health."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from djl.registry import Model, Workflow


def _iso(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.microsecond // 1000:03d}Z"
    )


def _describe_worker(worker: Any) -> dict[str, Any]:
    """A WorkerStatistics as describe lists it."""
    entry: dict[str, Any] = {"id": worker.id, "startTime": _iso(worker.start_time),
                             "status": "READY" if worker.alive else "UNLOADING"}
    if worker.node is not None:  # ours: the Ray node and actor of the worker
        entry["node"] = dict(worker.node)
    return entry


def describe_model(model: Model, startup_names: list[str]) -> dict[str, Any]:
    """One element of a workflow's ``models`` array (spec §2.6), rendered from the frozen
    snapshot its pool makes (``WorkerPool.statistics``)."""
    stats = model.statistics()
    config = model.config
    if stats is None or config is None:
        return {
            "batchSize": 0, "maxBatchDelayMillis": 0, "maxIdleSeconds": 0, "queueSize": 0,
            "requestInQueue": 0, "status": model.status.value,
            "loadedAtStartup": model.model_id in startup_names, "workerGroups": [],
        }
    groups = []
    for group in stats.groups:
        groups.append({
            "device": {"deviceType": group.device.device_type,
                       "deviceId": group.device.device_id},
            "minWorkers": group.min_workers,
            "maxWorkers": group.max_workers,
            "workers": [_describe_worker(w) for w in group.workers],
        })
    return {
        "modelName": model.model_id,
        "modelUrl": model.url,
        "batchSize": config.batch_size,
        "maxBatchDelayMillis": config.max_batch_delay_ms,
        "maxIdleSeconds": config.max_idle_time_s,
        "queueSize": stats.queue_capacity,
        "requestInQueue": stats.queued,
        "status": stats.health,
        "loadedAtStartup": model.model_id in startup_names,
        "workerGroups": groups,
        # Ours: workers replaced on reaching max_worker_requests/_rss_mb.
        "recycledWorkers": stats.recycles,
        # Ours: why its latest worker died or failed to load, e.g. no Ray node
        # can place it any more; what a FAILED model has to say for itself.
        **({"lastWorkerFailure": stats.last_failure} if stats.last_failure else {}),
        # Ours: the model's inputs and outputs as its engine read them at load (names,
        # Open Inference Protocol datatypes, shapes with -1 for dynamic dimensions).
        **({"signature": stats.signature.as_json()} if stats.signature is not None else {}),
    }


def describe_workflows(workflows: list[Workflow], startup_names: list[str]) -> list[Any]:
    return [
        {"workflowName": w.name, "version": w.version,
         "models": [describe_model(m, startup_names) for m in w.models.values()]}
        for w in workflows
    ]


def model_rows(workflows: list[Workflow]) -> list[dict[str, Any]]:
    rows = []
    for workflow in workflows:
        for model in workflow.models.values():
            name = (workflow.name if workflow.name == model.model_id
                    else f"{workflow.name}:{model.model_id}")
            rows.append({"modelName": name, "version": workflow.version,
                         "modelUrl": model.url, "status": model.status.value})
    return rows


def health_body(statuses: Mapping[str, str]) -> dict[str, Any]:
    return {key: {"status": value} for key, value in statuses.items()}
