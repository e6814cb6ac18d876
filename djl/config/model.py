"""A model's settings: what a registration asked for, and the merge (spec §4.6) of
global defaults < environment defaults (``OPTION_*``/``ARGS_*``, "put if absent") <
``serving.properties`` < register parameters."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from djl.config.constants import WORKER_RSS_CHECK_INTERVAL_S
from djl.config.parsing import parse_int, parse_java_bool
from djl.config.server import ServerConfig
from djl.errors import BadRequest

#: RegisterParams' number fields, each by the register parameter that sets it (spec §2.2),
#: in the order they are read (the first bad one is the one reported).
QUERY_NUMBERS = {
    "job_queue_size": "job_queue_size",
    "batch_size": "batch_size",
    "max_batch_delay_ms": "max_batch_delay",
    "max_idle_time_s": "max_idle_time",
    "min_workers": "min_worker",
    "max_workers": "max_worker",
}


@dataclass(frozen=True)
class RegisterParams:
    """What a registration asked for; ``None`` means "not given" (spec §2.2)."""

    url: str
    model_name: str | None = None
    model_version: str | None = None
    engine: str | None = None
    device: str | None = None
    job_queue_size: int | None = None
    batch_size: int | None = None
    max_batch_delay_ms: int | None = None
    max_idle_time_s: int | None = None
    min_workers: int | None = None
    max_workers: int | None = None
    synchronous: bool = True

    @classmethod
    def from_query(cls, get: Any) -> RegisterParams:
        """Build from a ``get(name) -> str | None`` lookup (query string or JSON body) of
        the values as sent: an empty value is an absent one, except that ``synchronous=``
        is false (``parse_java_bool``)."""
        url = get("url")
        if not url:
            raise BadRequest("Parameter url is required.")

        sync = get("synchronous")
        return cls(
            url=str(url),
            model_name=get("model_name") or None,
            model_version=get("model_version") or None,
            engine=get("engine") or None,
            device=get("device") or None,
            **{name: parse_int(get(key)) for name, key in QUERY_NUMBERS.items()},
            synchronous=parse_java_bool(None if sync is None else str(sync), True),
        )


@dataclass(frozen=True)
class ModelConfig:
    """A model's effective settings once its directory is known (spec §4.6)."""

    batch_size: int
    max_batch_delay_ms: int
    max_idle_time_s: int
    job_queue_size: int
    load_on_devices: str
    engine: str | None
    #: ``option.*`` keys (prefix removed) and plain keys, as handed to the worker.
    options: Mapping[str, str]
    arguments: Mapping[str, str]
    predict_timeout_s: float
    model_loading_timeout_s: float
    retry_threshold: int
    python_executable: str
    #: ServerConfig.omp_num_threads: CPU workers share the cores by it.
    omp_num_threads: int = 0
    explicit_min_workers: int | None = None
    explicit_max_workers: int | None = None
    #: Worker recycling (``option.max_worker_requests``, ``option.max_worker_rss_mb``; 0 is
    #: off): a worker that has answered this many requests, or whose resident memory
    #: passed this many MiB, is replaced by a new one (started first).
    max_worker_requests: int = 0
    max_worker_rss_mb: int = 0
    worker_rss_check_interval_s: float = WORKER_RSS_CHECK_INTERVAL_S

    def workers_for(self, device_type: str, cpu_count: int | None = None) -> tuple[int, int]:
        """(min, max) workers of a group on ``device_type`` (spec §4.6)."""

        def arg(key: str) -> int | None:
            value = self.arguments.get(key)
            return None if value is None or str(value).strip() == "" else parse_int(value)

        hi = self.explicit_max_workers
        if hi is None or hi < 0:
            hi = arg(f"{device_type}.maxWorkers")
            if hi is None or hi <= 0:
                hi = arg("maxWorkers")
            if hi is None or hi <= 0:
                if device_type == "cpu":
                    cores = cpu_count or os.cpu_count() or 1
                    threads = max(1, self.omp_num_threads)
                    hi = max(1, min(cores, cores // threads))
                else:
                    hi = 1
        lo = self.explicit_min_workers
        if lo is None or lo < 0:
            lo = arg(f"{device_type}.minWorkers")
            if lo is None or lo < 0:
                lo = arg("minWorkers")
            if lo is None or lo < 0:
                lo = 1
        return min(lo, hi), hi


def _positive(*candidates: Any) -> int | None:
    for value in candidates:
        number = parse_int(value)
        if number is not None and number > 0:
            return number
    return None


def _seconds(value: str | None, default: float) -> float:
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError:
        return default  # spec §4.6: a non-integer timeout is ignored with a warning


def build_model_config(
    server: ServerConfig,
    properties: Mapping[str, str],
    params: RegisterParams | None = None,
    url_arguments: Mapping[str, str] | None = None,
) -> ModelConfig:
    """Merge env defaults < ``serving.properties`` (+ URL query args) < register params."""
    merged: dict[str, str] = {}
    for key, value in server.env_options.items():
        merged[f"option.{key}"] = value
    merged.update(server.env_arguments)
    if server.serving_min_workers:
        merged["minWorkers"] = server.serving_min_workers
    if server.serving_max_workers:
        merged["maxWorkers"] = server.serving_max_workers
    merged.update(url_arguments or {})
    merged.update(properties)
    merged.update(server.model_overrides)
    if "max_dynamic_batch_size" in merged and "batch_size" not in merged:
        merged["batch_size"] = merged["max_dynamic_batch_size"]

    options = {k[len("option.") :]: v for k, v in merged.items() if k.startswith("option.")}
    arguments = {k: v for k, v in merged.items() if not k.startswith("option.")}
    p = params or RegisterParams(url="")

    explicit_min = p.min_workers if p.min_workers is not None and p.min_workers >= 0 else None
    explicit_max = p.max_workers if p.max_workers is not None and p.max_workers >= 0 else None
    if explicit_min is not None and explicit_max is not None:
        explicit_min = min(explicit_min, explicit_max)

    return ModelConfig(
        batch_size=_positive(p.batch_size, arguments.get("batch_size"), server.batch_size)
        or ServerConfig.batch_size,
        max_batch_delay_ms=_positive(
            p.max_batch_delay_ms, arguments.get("max_batch_delay"), server.max_batch_delay_ms
        )
        or ServerConfig.max_batch_delay_ms,
        max_idle_time_s=_positive(
            p.max_idle_time_s, arguments.get("max_idle_time"), server.max_idle_time_s
        )
        or ServerConfig.max_idle_time_s,
        job_queue_size=_positive(
            p.job_queue_size, arguments.get("job_queue_size"), server.job_queue_size
        )
        or ServerConfig.job_queue_size,
        load_on_devices=p.device or arguments.get("load_on_devices") or server.load_on_devices,
        engine=p.engine or arguments.get("engine"),
        options=options,
        arguments=arguments,
        predict_timeout_s=_seconds(options.get("predict_timeout"), server.predict_timeout_s),
        model_loading_timeout_s=_seconds(
            options.get("model_loading_timeout"), server.model_loading_timeout_s
        ),
        retry_threshold=parse_int(arguments.get("retry_threshold"), server.retry_threshold),
        python_executable=options.get("pythonExecutable") or server.python_executable,
        omp_num_threads=server.omp_num_threads,
        explicit_min_workers=explicit_min,
        explicit_max_workers=explicit_max,
        max_worker_requests=_positive(options.get("max_worker_requests")) or 0,
        max_worker_rss_mb=_positive(options.get("max_worker_rss_mb")) or 0,
        worker_rss_check_interval_s=_seconds(
            options.get("worker_rss_check_interval"), WORKER_RSS_CHECK_INTERVAL_S
        ),
    )
