"""djl.metrics without a server: families, the name[] filter, scrape-time pool gauges."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from djl.metrics import ServerMetrics


@dataclass
class FakeWorker:
    id: int
    state: str
    rss_bytes: int | None


@dataclass
class FakePool:
    queued: int
    restarts: int
    recycles: int
    workers: tuple[FakeWorker, ...]


def parse(text: bytes) -> dict[str, dict[str, float]]:
    return {f.name: {s.name + str(sorted(s.labels.items())): s.value for s in f.samples}
            for f in text_string_to_metric_families(text.decode())}


def test_responses_by_class_and_no_created_samples():
    metrics = ServerMetrics(lambda: [])
    for status in (200, 201, 404, 400, 503, 101, 302):
        metrics.count_response(status)
    families = parse(metrics.exposition(["Response_2XX", "Response_4XX_total", "Response_5XX"]))
    assert families == {"Response_2XX": {"Response_2XX_total[]": 2},
                        "Response_4XX": {"Response_4XX_total[]": 2},
                        "Response_5XX": {"Response_5XX_total[]": 1}}


def test_pool_gauges_are_read_at_scrape_time():
    pool = FakePool(3, 1, 2, (FakeWorker(7, "IDLE", 50 << 20), FakeWorker(8, "BUSY", 60 << 20),
                              FakeWorker(6, "STOPPED", None)))
    pools = [("m", "v1", pool)]
    metrics = ServerMetrics(lambda: pools)
    families = parse(metrics.exposition())
    labels = "[('Model', 'm'), ('Version', 'v1')]"
    assert families["QueueDepth"] == {"QueueDepth" + labels: 3}
    assert families["WorkerRestarts"] == {"WorkerRestarts_total" + labels: 1}
    assert families["WorkerRecycles"] == {"WorkerRecycles_total" + labels: 2}
    assert sorted(families["Workers"].values()) == [1, 1, 1]
    assert sorted(families["WorkerRSS"].values()) == [50 << 20, 60 << 20]
    pool.queued = 0
    assert parse(metrics.exposition(["QueueDepth"])) == {"QueueDepth": {"QueueDepth" + labels: 0}}


def test_model_children_observe_batches_and_latency():
    metrics = ServerMetrics(lambda: [])
    model = metrics.for_model("m", None)
    model.batch_taken(10.0, [9.999, 9.5])  # waited 1 ms and 500 ms
    model.observe_request_latency_us(1234)
    families = parse(metrics.exposition(["QueueTime", "DynamicBatchSize", "RequestLatency"]))
    labels = "[('Model', 'm'), ('Version', '')]"
    assert families["QueueTime"]["QueueTime_count" + labels] == 2
    assert abs(families["QueueTime"]["QueueTime_sum" + labels] - 501_000) < 1
    assert families["DynamicBatchSize"]["DynamicBatchSize_sum" + labels] == 2
    assert families["DynamicBatchSize"]["DynamicBatchSize_count" + labels] == 1
    assert families["RequestLatency"]["RequestLatency_sum" + labels] == 1234


def test_two_servers_never_share_counts():
    a, b = ServerMetrics(lambda: []), ServerMetrics(lambda: [])
    a.model_loading_failed()
    assert parse(b.exposition(["ModelLoadingError"])) == {
        "ModelLoadingError": {"ModelLoadingError_total[]": 0}}
