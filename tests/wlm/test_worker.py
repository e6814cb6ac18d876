"""Worker against a fake BatchSource: a real model process, no WorkerPool.

The source hands out prepared batches and records what the worker reports (ready, done,
jobs given back), so these tests pin the seam a pool or any other source relies on.
"""

from __future__ import annotations

import sys
from pathlib import Path

import trio

from djl import _batch
from djl.config import ServerConfig, build_model_config
from djl.errors import WorkerDied
from djl.io import Input
from djl.wlm.devices import Device
from djl.wlm.worker import ExitReason, Worker, WorkerCommand, WorkerState

BEHAVE = Path(__file__).parent.parent / "models" / "behave"


class FakeSource:
    """A BatchSource serving ``batches`` in order, then telling the worker to stop."""

    def __init__(self, batches: list[list[_batch.Job]], *, pipelined: int = 0) -> None:
        self.model_id = "fake"
        self.config = build_model_config(ServerConfig(predict_timeout_s=30), {})
        self.command = WorkerCommand(python=sys.executable, model_dir=BEHAVE,
                                     entry_point="model.py", init_properties={},
                                     pipeline_depth=1 + pipelined)
        self.batches = list(batches)
        self.ready: list[Worker] = []
        self.done = 0
        self.given_back: list[_batch.Job] = []
        self.held: list[list[_batch.Job]] = []

    async def take_batch(self, worker: Worker) -> list[_batch.Job] | None:
        if not self.batches:
            return None
        batch = self.batches.pop(0)
        worker.hold(batch)
        self.held.append(list(worker.inflight))
        return batch

    def take_ready(self, worker: Worker, max_batches: int) -> list[list[_batch.Job]]:
        ready, self.batches = self.batches[:max_batches], self.batches[max_batches:]
        return ready

    def give_back(self, jobs: list[_batch.Job]) -> None:
        self.given_back.extend(jobs)

    def worker_ready(self, worker: Worker) -> None:
        self.ready.append(worker)

    def batch_done(self, worker: Worker) -> None:
        self.done += 1


def job(data: bytes, action: str = "echo") -> _batch.Job:
    inputs = Input({})
    inputs.add(action, key="action")
    inputs.add(data, key="data")
    return _batch.Job(inputs, _batch.DEFAULT_PRIORITY, trio.Event())


def body(j: _batch.Job) -> bytes:
    assert j.error is None, j.error
    return j.result.content.values[0]


async def run_worker(source: FakeSource) -> Worker:
    worker = Worker(source, Device("cpu", -1), permanent=True)
    with trio.fail_after(60):
        await worker.run()
    return worker


async def test_a_worker_serves_what_its_source_hands_out_and_reports_back():
    a, b, c = job(b"a"), job(b"b"), job(b"c")
    source = FakeSource([[a, b], [c]])
    worker = await run_worker(source)
    assert [body(j) for j in (a, b, c)] == [b"a", b"b", b"c"]
    assert source.ready == [worker] and source.done == 2
    assert source.held == [[a, b], [c]]  # taken through hold(), as the protocol says
    assert worker.exit_reason is ExitReason.RETIRED  # the source said stop (None)
    assert worker.state is WorkerState.STOPPED and worker.process_gone
    assert worker.inflight == [] and source.given_back == []


async def test_a_crash_fails_the_batch_it_was_answering_and_gives_back_the_rest():
    """Spec §5.6: only the batch the process was on is lost with it; the batches pipelined
    behind it go back to the source, unanswered, for another worker."""
    first = job(b"1")
    crash = job(b"", action="exit")
    behind = [job(b"x"), job(b"y")]

    class FastSource(FakeSource):
        def worker_ready(self, worker: Worker) -> None:
            super().worker_ready(worker)
            worker.service_s = 0.0  # a fast model: the worker pipelines from the start

    source = FastSource([[first], [crash], [behind[0]], [behind[1]]], pipelined=3)
    worker = await run_worker(source)
    assert body(first) == b"1"
    assert isinstance(crash.error, WorkerDied), crash.error
    assert worker.exit_reason is ExitReason.DIED and worker.process_gone
    assert source.given_back == behind
    assert not any(j.finished() for j in behind)
    assert source.done == 1
