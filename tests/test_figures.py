"""djl.figures on a real ServerMetrics registry, with a hand-driven clock."""

from __future__ import annotations

import math

import pytest
from prometheus_client import Counter

from djl.figures import LiveFigures, quantile
from djl.metrics import ServerMetrics


def live(metrics: ServerMetrics) -> LiveFigures:
    return LiveFigures(metrics.families, window_s=10, history_s=60, sample_s=1)


def test_rate_percentiles_and_batch_size_over_the_window():
    metrics = ServerMetrics(lambda: [])
    figures = live(metrics)
    model = metrics.for_model("m", "1")
    model.observe_request_latency_us(300)  # before the first sample: never counted
    assert figures.read(0.0) == {}  # one sample: no span to measure over
    for _ in range(100):
        model.observe_request_latency_us(800)  # the (500, 1000] µs bucket
    for _ in range(25):
        model.observe_batch_size(4)
    history = figures.read(10.0)
    now = history[("m", "1")].now
    assert now.requests_per_s == 10.0
    # Linear within the bucket: the 50th of 100 requests sits half-way through it.
    assert now.p50_ms == pytest.approx(0.75)
    assert now.p99_ms == pytest.approx(0.995)
    assert now.batch_size == 4
    assert now.tokens_per_s is None
    assert history[("m", "1")].ago_s == (0.0,)

    # Idle for a window: nothing to measure, and a rate of zero.
    assert figures.read(15.0)[("m", "1")].now.requests_per_s == pytest.approx(100 / 15)
    idle = figures.read(25.0)[("m", "1")]
    assert idle.now.requests_per_s == 0
    assert (idle.now.p50_ms, idle.now.batch_size) == (None, None)
    assert idle.ago_s == (-15.0, -10.0, 0.0)
    assert [p.requests_per_s for p in idle.points] == [10.0, 0.0, 0.0]


def test_samples_at_most_every_sample_s_and_history_is_bounded():
    metrics = ServerMetrics(lambda: [])
    figures = live(metrics)
    model = metrics.for_model("m", None)
    figures.read(0.0)
    model.observe_request_latency_us(800)
    first = figures.read(2.0)[("m", "")]
    model.observe_request_latency_us(800)
    # Half a second later: the same sample, so the new request does not show yet.
    assert figures.read(2.5)[("m", "")] == first
    for t in range(3, 80):
        figures.read(float(t))
    kept = figures.read(80.0)[("m", "")]
    assert kept.ago_s[0] == -60 and len(kept.points) == 61
    # After a gap longer than the history, nothing is left to measure against.
    assert figures.read(200.0) == {}
    assert figures.read(201.0)[("m", "")].now.requests_per_s == 0


def test_generated_tokens_are_a_rate_where_a_model_counts_them():
    metrics = ServerMetrics(lambda: [])
    tokens = Counter("GeneratedTokens", "Tokens generated", ["Model", "Version"],
                     registry=metrics.registry)
    figures = live(metrics)
    metrics.for_model("plain", None).observe_request_latency_us(800)
    tokens.labels("plain", "").inc(0)  # the counter exists for it, but it generates nothing
    figures.read(0.0)
    tokens.labels("lm", "").inc(500)
    history = figures.read(10.0)
    assert history[("lm", "")].now.tokens_per_s == 50.0
    assert history[("plain", "")].now.tokens_per_s is None


def test_quantile_edges():
    inf = math.inf
    assert quantile(0.5, []) is None
    assert quantile(0.5, [(100.0, 0.0), (inf, 0.0)]) is None
    # Everything past the last finite bound: that bound, as histogram_quantile says.
    assert quantile(0.99, [(100.0, 0.0), (1000.0, 0.0), (inf, 5.0)]) == 1000.0
    # The first bucket interpolates from zero; empty buckets are skipped.
    assert quantile(0.5, [(100.0, 4.0), (250.0, 4.0), (inf, 4.0)]) == 50.0
    assert quantile(1.0, [(100.0, 2.0), (250.0, 2.0), (500.0, 4.0), (inf, 4.0)]) == 500.0
