"""Live figures for the console: each model's request rate, latency percentiles, batch size
and generated tokens per second over the last seconds, and a few minutes of their history.

They come from the cumulative numbers ``GET /server/metrics`` exposes (djl.metrics'
registry: ``RequestLatency``, ``DynamicBatchSize``, and ``GeneratedTokens`` where a text
generation model counts them), sampled when the console asks rather than by a task of
their own: nothing runs while nobody looks, and however many pages poll, a sample is taken
at most every ``FIGURES_SAMPLE_S``. A rate is the difference of two samples over the time
between them; a percentile is read from the difference of two histograms, interpolated
within its bucket as Prometheus' ``histogram_quantile`` does, so it is as coarse as the
buckets are (djl.metrics: 100 µs to 60 s, about 2.5 per decade).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from prometheus_client.metrics_core import Metric

from djl.config import FIGURES_HISTORY_S, FIGURES_SAMPLE_S, FIGURES_WINDOW_S

#: A model as its metrics label it: (``Model``, ``Version``), the version "" when none.
Key = tuple[str, str]

#: The families read, by name (any other is skipped).
LATENCY, BATCH_SIZE, GENERATED_TOKENS = "RequestLatency", "DynamicBatchSize", "GeneratedTokens"
FAMILIES = (LATENCY, BATCH_SIZE, GENERATED_TOKENS)


@dataclass(slots=True)
class _Totals:
    """One model's cumulative counts at one sample."""

    requests: float = 0.0
    #: RequestLatency's cumulative buckets: upper bound (µs) → requests at most that slow.
    latency: dict[float, float] = field(default_factory=dict)
    batched_items: float = 0.0
    batches: float = 0.0
    #: None: the model has generated no token (it is no text generation model).
    tokens: float | None = None


@dataclass(frozen=True, slots=True)
class Figures:
    """One model's figures over a span of time; None where there was nothing to measure."""

    requests_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    #: Requests per batch a worker took, on average.
    batch_size: float | None
    tokens_per_s: float | None


@dataclass(frozen=True, slots=True)
class History:
    """A model's figures now and between successive samples of the last few minutes."""

    #: Over the latest ``FIGURES_WINDOW_S`` (or what there is of it).
    now: Figures
    #: When each point ends, in seconds before the latest sample (≤ 0, ascending).
    ago_s: tuple[float, ...]
    points: tuple[Figures, ...]


@dataclass(slots=True)
class _Sample:
    at: float
    totals: dict[Key, _Totals]
    #: Figures between the previous sample and this one (empty for the first).
    since_previous: dict[Key, Figures]


class LiveFigures:
    """The sampled history of one server's metrics; ``read`` is all there is to call."""

    def __init__(self, families: Callable[[Iterable[str]], Iterable[Metric]], *,
                 window_s: float = FIGURES_WINDOW_S, history_s: float = FIGURES_HISTORY_S,
                 sample_s: float = FIGURES_SAMPLE_S) -> None:
        """``families(names)``: the named metric families as a scrape would show them."""
        self.families = families
        self.window_s = window_s
        self.history_s = history_s
        self.sample_s = sample_s
        #: Oldest first, at least ``sample_s`` apart, none older than ``history_s``.
        self._samples: deque[_Sample] = deque()

    def read(self, now: float) -> dict[Key, History]:
        """Every model's history at ``now`` (any monotonic clock, in seconds), after taking
        a sample when the latest is ``sample_s`` old. Empty until two samples exist."""
        samples = self._samples
        if not samples or now - samples[-1].at >= self.sample_s:
            totals = _totals(self.families(FAMILIES))
            previous = samples[-1] if samples else None
            since = ({} if previous is None
                     else _all_figures(previous.totals, totals, now - previous.at))
            samples.append(_Sample(now, totals, since))
        while now - samples[0].at > self.history_s:
            samples.popleft()
        latest = samples[-1]
        base = samples[0]
        for sample in samples:
            if latest.at - sample.at < self.window_s:
                break
            base = sample
        if base is latest:
            return {}
        current = _all_figures(base.totals, latest.totals, latest.at - base.at)
        history = {}
        for key, figures in current.items():
            ago: list[float] = []
            points: list[Figures] = []
            for sample in samples:
                point = sample.since_previous.get(key)
                if point is not None:
                    ago.append(sample.at - latest.at)
                    points.append(point)
            history[key] = History(figures, tuple(ago), tuple(points))
        return history


def _totals(families: Iterable[Metric]) -> dict[Key, _Totals]:
    totals: dict[Key, _Totals] = {}

    def of(labels: dict[str, str]) -> _Totals:
        key = (labels.get("Model", ""), labels.get("Version", ""))
        found = totals.get(key)
        if found is None:
            found = totals[key] = _Totals()
        return found

    for family in families:
        for sample in family.samples:
            suffix = sample.name[len(family.name):]
            if family.name == LATENCY:
                if suffix == "_bucket":
                    of(sample.labels).latency[float(sample.labels["le"])] = sample.value
                elif suffix == "_count":
                    of(sample.labels).requests = sample.value
            elif family.name == BATCH_SIZE:
                if suffix == "_sum":
                    of(sample.labels).batched_items = sample.value
                elif suffix == "_count":
                    of(sample.labels).batches = sample.value
            elif (family.name == GENERATED_TOKENS and suffix in ("", "_total", "_sum")
                  and sample.value > 0):
                # A counter (_total), a gauge or untyped value, or a histogram's _sum. Every
                # model may have the counter; one that never generated is no text
                # generation model (its column stays empty rather than reading 0).
                entry = of(sample.labels)
                entry.tokens = (entry.tokens or 0.0) + sample.value
    return totals


_NOTHING = _Totals()


def _all_figures(before: dict[Key, _Totals], after: dict[Key, _Totals],
                 seconds: float) -> dict[Key, Figures]:
    return {key: _figures(before.get(key, _NOTHING), totals, seconds)
            for key, totals in after.items()}


def _figures(before: _Totals, after: _Totals, seconds: float) -> Figures:
    buckets = sorted((bound, count - before.latency.get(bound, 0.0))
                     for bound, count in after.latency.items())
    batches = after.batches - before.batches
    tokens = None
    if after.tokens is not None:
        tokens = (after.tokens - (before.tokens or 0.0)) / seconds
    return Figures(
        requests_per_s=(after.requests - before.requests) / seconds,
        p50_ms=_ms(quantile(0.5, buckets)),
        p99_ms=_ms(quantile(0.99, buckets)),
        batch_size=(after.batched_items - before.batched_items) / batches if batches else None,
        tokens_per_s=tokens,
    )


def _ms(us: float | None) -> float | None:
    return None if us is None else us / 1000


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of a histogram given as ascending (upper bound, cumulative
    count) pairs ending with +Inf; None when it counts nothing. Linear within a bucket;
    in the +Inf bucket, the highest finite bound (as ``histogram_quantile``)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound = lower_count = 0.0
    for bound, count in buckets:
        if count >= rank and count > lower_count:
            if math.isinf(bound):
                return lower_bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


__all__ = ["FAMILIES", "Figures", "History", "Key", "LiveFigures", "quantile"]
