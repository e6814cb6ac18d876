"""Prometheus metrics (spec §2.8): DJL Serving's families and ours, on a registry of our own.

DJL's names and labels: ``DJLServingStart{Version}``, ``StartupLatency{Host}``, the
response-class counters, ``ServerError``, ``WlmError``, ``ModelLoadingError``, and per
model and version (labels ``Model``, ``Version``) ``RegisterWorkflow``, ``DownloadModel``,
``LoadModel``, ``QueueTime``, ``DynamicBatchSize``, ``RequestLatency``. Times are in
microseconds, as DJL records them. Ours, named in the same style: ``QueueDepth``,
``Workers{State}``, ``WorkerRestarts``, ``WorkerRecycles`` and ``WorkerRSS{Worker}``; for
text generation ``TimeToFirstToken``, ``InterTokenLatency`` (histograms, µs),
``GeneratedTokens``, ``PromptTokens`` (counters) and ``RollingBatchSize``.

The hot path pays for a counter increment or a histogram observation, no more: label
children are resolved once per model (``ModelMetrics``), and everything a pool already
knows (queue depth, workers, restarts, memory) is read at scrape time from
``WorkerPool.statistics`` snapshots by a custom collector, never updated per request.
The registry is our own, not prometheus_client's global one, so two servers in one
process (tests) never share counts.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from djl.errors import Failure

#: The exposition format of ``GET /server/metrics`` (spec §2.8), the one generate_latest
#: writes (newer prometheus_client calls it CONTENT_TYPE_PLAIN_0_0_4).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_US = 1e6
#: QueueTime and RequestLatency buckets, µs: 100 µs to 60 s.
_LATENCY_BUCKETS_US = (100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000,
                       250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000,
                       30_000_000, 60_000_000, float("inf"))
#: DynamicBatchSize buckets: powers of two up to 1024 items.
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, float("inf"))
_MODEL = ("Model", "Version")


class WorkerView(Protocol):
    """What the collector reads of one worker in a pool snapshot."""

    id: int
    state: str
    rss_bytes: int | None


class PoolView(Protocol):
    """What the collector reads of a pool snapshot (``djl.wlm.statistics.PoolStatistics``)."""

    queued: int
    restarts: int
    recycles: int

    @property
    def workers(self) -> Sequence[WorkerView]: ...


@dataclass(frozen=True, slots=True)
class ModelMetrics:
    """One model version's label children, resolved once at load: the hot path calls
    these bound methods and nothing else."""

    observe_queue_time_us: Callable[[float], None]
    observe_batch_size: Callable[[float], None]
    observe_request_latency_us: Callable[[float], None]
    #: Text generation (djl/wlm/rolling.py): per token, per decode step.
    observe_time_to_first_token_us: Callable[[float], None]
    observe_inter_token_latency_us: Callable[[float], None]
    count_generated_tokens: Callable[[float], None]
    count_prompt_tokens: Callable[[float], None]
    observe_rolling_batch_size: Callable[[float], None]
    #: LoRA adapters (djl/adapters.py): a registration on every worker; one request.
    observe_load_adapter_us: Callable[[float], None]
    count_adapter_request: Callable[[str], None]

    def batch_taken(self, now: float, enqueued_at: Iterable[float]) -> None:
        """A worker took a batch at ``now`` (trio time) of jobs queued at ``enqueued_at``."""
        count = 0
        observe = self.observe_queue_time_us
        for at in enqueued_at:
            observe((now - at) * _US)
            count += 1
        self.observe_batch_size(count)


class ServerMetrics:
    """Every metric family of one server, and its exposition."""

    def __init__(self, pools: Callable[[], Iterable[tuple[str, str, PoolView]]]) -> None:
        """``pools``: (model id, version or "", snapshot) of every pool, read per scrape."""
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._start = Counter("DJLServingStart", "Server starts", ["Version"], registry=r)
        self._startup = Gauge("StartupLatency", "Start-up time until serving (µs)",
                              ["Host"], registry=r)
        responses = {
            status_class: Counter(f"Response_{status_class}XX",
                                  f"HTTP responses with a {status_class}xx status", registry=r)
            for status_class in (2, 4, 5)
        }
        #: Status // 100 → the increment of its counter (1xx and 3xx are not counted).
        self._count_response = {k: c.inc for k, c in responses.items()}
        self._server_error = Counter("ServerError", "Inference failures of the server or "
                                     "model (HTTP status >= 500, not WlmException)", registry=r)
        self._wlm_error = Counter("WlmError", "Inference failures of the workload manager "
                                  "(WlmException: not ready, queue full, worker died)",
                                  registry=r)
        self._loading_error = Counter("ModelLoadingError", "Models that failed to load",
                                      registry=r)
        self._register = Summary("RegisterWorkflow", "Registration time (µs)", _MODEL,
                                 registry=r)
        self._download = Summary("DownloadModel", "Model download or resolution time (µs)",
                                 _MODEL, registry=r)
        self._load = Summary("LoadModel", "Model load time: preparation and the minimum "
                             "workers (µs)", _MODEL, registry=r)
        self._queue_time = Histogram("QueueTime", "Time a request waited in the queue (µs)",
                                     _MODEL, buckets=_LATENCY_BUCKETS_US, registry=r)
        self._batch_size = Histogram("DynamicBatchSize", "Requests per batch sent to a "
                                     "worker", _MODEL, buckets=_BATCH_BUCKETS, registry=r)
        self._latency = Histogram("RequestLatency", "Inference time from routing to the "
                                  "answer (µs)", _MODEL, buckets=_LATENCY_BUCKETS_US,
                                  registry=r)
        self._ttft = Histogram("TimeToFirstToken", "Time from a generation request's "
                               "arrival to its first token (µs)", _MODEL,
                               buckets=_LATENCY_BUCKETS_US, registry=r)
        self._itl = Histogram("InterTokenLatency", "Time between two tokens of a sequence "
                              "(µs)", _MODEL, buckets=_LATENCY_BUCKETS_US, registry=r)
        self._generated = Counter("GeneratedTokens", "Tokens generated", _MODEL, registry=r)
        self._prompt = Counter("PromptTokens", "Prompt tokens prefilled", _MODEL, registry=r)
        self._rolling = Histogram("RollingBatchSize", "Sequences per decode step", _MODEL,
                                  buckets=_BATCH_BUCKETS, registry=r)
        self._load_adapter = Summary("LoadAdapter", "Adapter registration time on every "
                                     "worker of its model (µs)", _MODEL, registry=r)
        self._adapter_requests = Counter("AdapterRequests", "Inference requests that "
                                         "selected a LoRA adapter", ("Model", "Adapter"),
                                         registry=r)
        r.register(_PoolCollector(pools))

    # -- server ------------------------------------------------------------------------
    def server_started(self, version: str, startup_s: float) -> None:
        self._start.labels(version).inc()
        self._startup.labels(socket.gethostname()).set(startup_s * _US)

    def count_response(self, status: int) -> None:
        inc = self._count_response.get(status // 100)
        if inc is not None:
            inc()

    def inference_failed(self, kind: Failure) -> None:
        """An inference answered with a failure of ``kind`` (errors.failure_of)."""
        (self._wlm_error if kind is Failure.WLM else self._server_error).inc()

    def model_loading_failed(self) -> None:
        self._loading_error.inc()

    # -- per model ---------------------------------------------------------------------
    def for_model(self, model_id: str, version: str | None) -> ModelMetrics:
        labels = (model_id, version or "")
        return ModelMetrics(
            self._queue_time.labels(*labels).observe,
            self._batch_size.labels(*labels).observe,
            self._latency.labels(*labels).observe,
            self._ttft.labels(*labels).observe,
            self._itl.labels(*labels).observe,
            self._generated.labels(*labels).inc,
            self._prompt.labels(*labels).inc,
            self._rolling.labels(*labels).observe,
            self._load_adapter.labels(*labels).observe,
            lambda adapter: self._adapter_requests.labels(model_id, adapter).inc(),
        )

    def registered(self, name: str, version: str | None, seconds: float) -> None:
        self._register.labels(name, version or "").observe(seconds * _US)

    def downloaded(self, model_id: str, version: str | None, seconds: float) -> None:
        self._download.labels(model_id, version or "").observe(seconds * _US)

    def loaded(self, model_id: str, version: str | None, seconds: float) -> None:
        self._load.labels(model_id, version or "").observe(seconds * _US)

    # -- exposition --------------------------------------------------------------------
    def exposition(self, names: Sequence[str] = ()) -> bytes:
        """The text format; with ``names`` only those families (a family's name or one of
        its sample names: ``Response_2XX`` and ``Response_2XX_total`` both work)."""
        return generate_latest(_Exposed(self.registry, frozenset(names)))

    def families(self, names: Iterable[str]) -> Iterator[Metric]:
        """The families ``names`` picks, as a scrape shows them (for djl.figures)."""
        return _Exposed(self.registry, frozenset(names)).collect()


class _Exposed:
    """What a scrape shows: the families ``names`` asks for (all when empty), without
    prometheus_client's ``*_created`` samples (DJL has none; in the 0.0.4 format they read
    as one more gauge family per counter)."""

    def __init__(self, registry: CollectorRegistry, names: frozenset[str]) -> None:
        self.registry = registry
        self.names = names

    def collect(self) -> Iterator[Metric]:
        names = self.names
        for family in self.registry.collect():
            if names and family.name not in names and not any(s.name in names
                                                              for s in family.samples):
                continue
            family.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield family


class _PoolCollector:
    """Gauges and counters computed at scrape time from the pools' snapshots."""

    def __init__(self, pools: Callable[[], Iterable[tuple[str, str, PoolView]]]) -> None:
        self.pools = pools

    def describe(self) -> list[Metric]:
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        queued, workers, restarts, recycles, rss = families
        for model, version, stats in self.pools():
            queued.add_metric([model, version], stats.queued)
            by_state: dict[str, int] = {}
            for worker in stats.workers:
                by_state[worker.state] = by_state.get(worker.state, 0) + 1
                if worker.rss_bytes is not None:
                    rss.add_metric([model, version, str(worker.id)], worker.rss_bytes)
            for state, count in sorted(by_state.items()):
                workers.add_metric([model, version, state], count)
            restarts.add_metric([model, version], stats.restarts)
            recycles.add_metric([model, version], stats.recycles)
        yield from families

    @staticmethod
    def _families() -> tuple[Any, Any, Any, Any, Any]:
        return (
            GaugeMetricFamily("QueueDepth", "Requests waiting in the model's queue",
                              labels=_MODEL),
            GaugeMetricFamily("Workers", "Workers listed per state (STARTING, IDLE, BUSY, "
                              "RETIRING, STOPPED)", labels=(*_MODEL, "State")),
            CounterMetricFamily("WorkerRestarts", "Workers started to replace one that "
                                "died or failed to load", labels=_MODEL),
            CounterMetricFamily("WorkerRecycles", "Workers replaced on reaching "
                                "max_worker_requests or max_worker_rss_mb", labels=_MODEL),
            GaugeMetricFamily("WorkerRSS", "Resident memory of each running worker process "
                              "(bytes)", labels=(*_MODEL, "Worker")),
        )
