"""WorkerPool in virtual time (spec §5.2-§5.6, §6.9): no processes are spawned.

``take_batch`` is driven with a stand-in that has the attributes it reads; the scaling,
restart and shutdown tests run ``WorkerPool.run`` with ``SimWorker`` as its worker factory
(in place of ``djl.wlm.worker.Worker``): it pulls batches like the real one and "serves"
each by sleeping, under pytest-trio's ``autojump_clock``, so a 60 s idle timeout costs
nothing.
"""

from __future__ import annotations

import datetime
import itertools
from pathlib import Path

import pytest
import trio
import trio.testing

from djl.config import RegisterParams, ServerConfig, build_model_config
from djl.errors import ModelLoadError, WlmError, WorkerDied
from djl.io import Input
from djl.wlm.devices import Device
from djl.wlm.pool import ModelStatus, WorkerPool
from djl.wlm.seams import PooledWorker
from djl.wlm.slots import BACKOFF_RESET_S, RESTART_BACKOFF_BASE_S
from djl.wlm.statistics import WorkerStatistics
from djl.wlm.worker import ExitReason, WorkerCommand, WorkerState

CPU = Device("cpu", -1)


def make_pool(
    *, batch_size: int = 1, delay_ms: int = 100, idle_s: int = 60, queue: int = 1000,
    min_workers: int = 1, max_workers: int = 1, retry_threshold: int = 3,
    properties: dict[str, str] | None = None, worker: type[SimWorker] | None = None,
) -> WorkerPool:
    """A pool whose workers are ``worker`` (SimWorker unless given)."""
    params = RegisterParams(
        url="file:/models/m", batch_size=batch_size, max_batch_delay_ms=delay_ms,
        max_idle_time_s=idle_s, job_queue_size=queue, min_workers=min_workers,
        max_workers=max_workers,
    )
    config = build_model_config(ServerConfig(retry_threshold=retry_threshold),
                                properties or {}, params)
    command = WorkerCommand(
        python="python", model_dir=Path("/nonexistent"), entry_point="model.py",
        init_properties={},
    )
    return WorkerPool("m", None, config, command, [CPU], worker_factory=worker or SimWorker)


def ready_pool(**kwargs) -> WorkerPool:
    """A pool whose ``run`` is not running: only submit/take_batch are exercised."""
    pool = make_pool(**kwargs)
    pool.status = ModelStatus.READY
    return pool


def request(name: str, **properties: str) -> Input:
    inp = Input({"name": name, **properties})
    inp.add(name.encode())
    return inp


def names(batch) -> list[str]:
    return [job.input.properties["name"] for job in batch]


class Puller:
    """The attributes of a Worker that ``WorkerPool.take_batch`` reads and writes."""

    def __init__(self, permanent: bool = True) -> None:
        self.permanent = permanent
        self.retiring = False
        self.state = WorkerState.IDLE
        self.last_active = trio.current_time()
        self.inflight: list = []
        self.label = "m/puller"
        self.running = True

    def hold(self, jobs: list) -> None:
        self.inflight = jobs
        self.state = WorkerState.BUSY


# -- batch aggregation (spec §5.5) ---------------------------------------------------------


async def test_batch_size_one_never_waits(autojump_clock):
    pool = ready_pool(batch_size=1, delay_ms=10_000)
    worker = Puller()
    for i in range(3):
        pool.submit(request(f"j{i}"))
    start = trio.current_time()
    for i in range(3):
        assert names(await pool.take_batch(worker)) == [f"j{i}"]
    assert trio.current_time() == start  # not a moment of max_batch_delay spent


async def test_full_batch_from_the_queue_goes_at_once_then_the_rest_waits(autojump_clock):
    pool = ready_pool(batch_size=4, delay_ms=100)
    worker = Puller()
    for i in range(6):
        pool.submit(request(f"j{i}"))
    start = trio.current_time()
    assert names(await pool.take_batch(worker)) == ["j0", "j1", "j2", "j3"]
    assert trio.current_time() == start
    assert names(await pool.take_batch(worker)) == ["j4", "j5"]
    assert trio.current_time() - start == pytest.approx(0.1)
    assert len(pool.queue) == 0


async def test_a_lone_job_waits_exactly_max_batch_delay(autojump_clock):
    pool = ready_pool(batch_size=8, delay_ms=200)
    pool.submit(request("only"))
    start = trio.current_time()
    assert names(await pool.take_batch(Puller())) == ["only"]
    assert trio.current_time() - start == pytest.approx(0.2)


async def test_arrivals_join_within_the_budget_and_not_after(autojump_clock):
    """One budget for the whole batch, from the first job: not reset per arrival."""
    pool = ready_pool(batch_size=8, delay_ms=100)
    start = trio.current_time()
    pool.submit(request("t0"))

    async def arrivals():
        for at in (0.03, 0.06, 0.099, 0.15):
            await trio.sleep_until(start + at)
            pool.submit(request(f"t{at}"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(arrivals)
        batch = await pool.take_batch(Puller())
        assert trio.current_time() - start == pytest.approx(0.1)
    assert names(batch) == ["t0", "t0.03", "t0.06", "t0.099"]
    assert names(pool.queue.take(10)) == ["t0.15"]


async def test_a_batch_that_fills_goes_before_the_budget_ends(autojump_clock):
    pool = ready_pool(batch_size=3, delay_ms=1000)
    start = trio.current_time()
    pool.submit(request("a"))

    async def arrivals():
        await trio.sleep(0.01)
        pool.submit(request("b"))
        pool.submit(request("c"))
        pool.submit(request("d"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(arrivals)
        batch = await pool.take_batch(Puller())
    assert names(batch) == ["a", "b", "c"]
    assert trio.current_time() - start == pytest.approx(0.01)
    assert len(pool.queue) == 1


async def test_the_delay_budget_starts_with_the_first_job(autojump_clock):
    """A permanent worker waits for its first job without a timeout (step 1)."""
    pool = ready_pool(batch_size=2, delay_ms=100)
    start = trio.current_time()

    async def late():
        await trio.sleep(500)
        pool.submit(request("late"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(late)
        batch = await pool.take_batch(Puller())
    assert names(batch) == ["late"]
    assert trio.current_time() - start == pytest.approx(500.1)


async def test_batch_is_in_priority_order(autojump_clock):
    pool = ready_pool(batch_size=4, delay_ms=50)
    for name, priority in [("p3", 3), ("p1", 1), ("p9", 9), ("p0", 0)]:
        pool.submit(request(name), priority)
    assert names(await pool.take_batch(Puller())) == ["p0", "p1", "p3", "p9"]


async def test_jobs_whose_client_left_are_dropped(autojump_clock):
    """Step 5: cancelled jobs never reach the engine, queued or already collected."""
    pool = ready_pool(batch_size=4, delay_ms=100)
    a = pool.submit(request("a"))
    gone = pool.submit(request("gone-while-queued"))
    pool.discard(gone)
    assert len(pool.queue) == 1
    start = trio.current_time()

    async def client_leaves():
        await trio.sleep(0.05)
        b = pool.submit(request("b"))
        await trio.sleep(0.01)
        pool.discard(a)  # already collected into the forming batch
        assert not b.cancelled

    worker = Puller()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client_leaves)
        batch = await pool.take_batch(worker)
    assert names(batch) == ["b"]
    assert worker.inflight == batch
    assert trio.current_time() - start == pytest.approx(0.1)


async def test_a_batch_of_only_cancelled_jobs_is_empty(autojump_clock):
    pool = ready_pool(batch_size=2, delay_ms=100)
    job = pool.submit(request("a"))

    async def leave():
        await trio.sleep(0.01)
        pool.discard(job)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(leave)
        assert await pool.take_batch(Puller()) == []


async def test_a_collecting_worker_keeps_its_jobs_in_inflight(autojump_clock):
    """Regression: a worker killed while its batch filled lost the jobs it had taken,
    and their clients waited forever. They are its in-flight jobs from the first take,
    which Worker.run's ``finally`` answers with 503."""
    pool = ready_pool(batch_size=4, delay_ms=100)
    job = pool.submit(request("a"))
    worker = Puller()
    with trio.move_on_after(0.05):
        await pool.take_batch(worker)
    assert worker.inflight == [job] and not job.finished()
    assert worker.state is WorkerState.BUSY  # scale-down lets it finish, never kills it
    assert len(pool.queue) == 0


async def test_retiring_worker_or_closing_pool_gets_none(autojump_clock):
    pool = ready_pool()
    pool.submit(request("a"))
    worker = Puller()
    worker.retiring = True
    assert await pool.take_batch(worker) is None
    pool.dispatch.closing = True  # what aclose sets first
    assert await pool.take_batch(Puller()) is None


# -- idle scale-down (spec §5.5 step 1) -----------------------------------------------------


async def test_temporary_worker_retires_after_max_idle_time(autojump_clock):
    pool = ready_pool(idle_s=2)
    worker = Puller(permanent=False)
    start = trio.current_time()
    assert await pool.take_batch(worker) is None
    assert trio.current_time() - start == pytest.approx(2)
    assert pool.statistics().idle_workers == 0


async def test_temporary_worker_serves_a_job_then_retires_idle_from_then(autojump_clock):
    pool = ready_pool(idle_s=2)
    worker = Puller(permanent=False)
    start = trio.current_time()

    async def job_at(at: float):
        await trio.sleep_until(start + at)
        pool.submit(request("work"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(job_at, 1.5)
        assert names(await pool.take_batch(worker)) == ["work"]
    assert trio.current_time() - start == pytest.approx(1.5)
    worker.last_active = trio.current_time()  # Worker._serve does this after the batch
    assert await pool.take_batch(worker) is None
    assert trio.current_time() - start == pytest.approx(3.5)


async def test_permanent_worker_never_retires(autojump_clock):
    pool = ready_pool(idle_s=1)
    worker = Puller(permanent=True)
    with trio.move_on_after(1000) as scope:
        await pool.take_batch(worker)
    assert scope.cancelled_caught
    assert pool.statistics().idle_workers == 0


async def test_parked_workers_count_as_idle_for_the_last_slot(autojump_clock):
    """Spec §5.3: the last queue slot is usable only while some worker waits for work."""
    pool = ready_pool(queue=2)
    pool.submit(request("a"))
    with pytest.raises(WlmError) as info:
        pool.submit(request("b"))  # remaining 1, no idle worker
    assert info.value.message == "Worker queue capacity exceeded for model: m"
    assert info.value.status == 503
    pool.queue.drain()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pool.take_batch, Puller())
        await trio.testing.wait_all_tasks_blocked()
        assert pool.statistics().idle_workers == 1
        pool.submit(request("x"))
        pool.submit(request("y"))  # remaining 1, but a worker is parked: accepted
    assert pool.statistics().idle_workers == 0
    assert names(list(pool.queue.take(5))) == ["y"]  # the worker took "x"
    pool.submit(request("y2"))
    with pytest.raises(WlmError):
        pool.submit(request("z"))  # remaining 1 and the worker is gone


# -- the pool with simulated workers --------------------------------------------------------

_sim_ids = itertools.count(1000)


class SimWorker:
    """Stands in for djl.wlm.worker.Worker: same attributes, batches served by sleeping.

    A job whose input has property ``crash`` kills the worker when served (like
    ``os._exit`` in the model): its batch gets WorkerDied and ``exit_reason`` is DIED.
    ``alive`` holds the workers whose "process" exists: from ``run`` until ``stop_s``
    after they stopped (the real Worker kills and reaps its process in that window).
    """

    start_s = 0.5
    serve_s = 1.0
    stop_s = 0.0
    alive: set[SimWorker] = set()
    most_alive = 0
    created: list[SimWorker] = []

    def __init__(self, pool, device, *, permanent: bool, launcher=None) -> None:
        self.id = next(_sim_ids)
        self.node = None
        self.failure = None
        self.pool = pool
        self.device = device
        self.permanent = permanent
        self.state = WorkerState.STARTING
        self.retiring = False
        self.exit_reason: ExitReason | None = None
        self.stopped_at: float | None = None
        self.last_active = trio.current_time()
        self.inflight: list = []
        self.label = f"m/{self.id}"
        #: What it hands the pool as itself (a Seam in the seam test).
        self.face: object = self
        self.process_gone = False
        self.pid: int | None = None
        self.requests = 0
        self.start_time = datetime.datetime.now(datetime.UTC)
        #: What rss_bytes reports (the memory-recycling tests set it).
        self.rss: int | None = None
        self.created_at = trio.current_time()
        self.batches: list[int] = []
        self._cancel_scope = trio.CancelScope()
        SimWorker.created.append(self)

    @property
    def running(self) -> bool:
        return self.state is not WorkerState.STOPPED

    def kill(self) -> None:
        self._cancel_scope.cancel()

    def retire(self) -> None:
        self.retiring = True
        if self.state is not WorkerState.BUSY:
            self.kill()

    def rss_bytes(self) -> int | None:
        return self.rss

    def snapshot(self, *, rss: bool) -> WorkerStatistics:
        state = "RETIRING" if self.running and self.retiring else self.state.value
        return WorkerStatistics(self.id, self.start_time, state, self.pid, self.requests,
                                self.rss if rss and self.running else None, self.node)

    def hold(self, jobs: list) -> None:
        self.inflight = jobs
        self.state = WorkerState.BUSY

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        SimWorker.alive.add(self)
        SimWorker.most_alive = max(SimWorker.most_alive, len(SimWorker.alive))
        try:
            with self._cancel_scope:
                await trio.sleep(self.start_s)
                self.state = WorkerState.IDLE
                self.last_active = trio.current_time()
                task_status.started()
                await self._serve()
            if self.exit_reason is None:
                self.exit_reason = ExitReason.CANCELLED
        finally:
            self.state = WorkerState.STOPPED
            self.stopped_at = trio.current_time()
            jobs, self.inflight = self.inflight, []
            for job in jobs:
                job.set_error(WlmError.shutting_down())
            with trio.CancelScope(shield=True):
                await trio.sleep(self.stop_s)
            SimWorker.alive.discard(self)
            self.process_gone = True

    async def _serve(self) -> None:
        while True:
            batch = await self.pool.take_batch(self.face)
            if batch is None:
                self.exit_reason = ExitReason.RETIRED
                return
            if not batch:
                self.state = WorkerState.IDLE
                continue
            self.hold(batch)
            await trio.sleep(self.serve_s)
            if any(job.input.properties.get("crash") for job in batch):
                self.exit_reason = ExitReason.DIED
                jobs, self.inflight = self.inflight, []
                for job in jobs:
                    job.set_error(WorkerDied("Python worker disconnected."))
                return
            for job in batch:
                job.set_result((self.id, len(batch)))
            self.batches.append(len(batch))
            self.inflight = []
            self.requests += len(batch)
            self.state = WorkerState.IDLE
            self.last_active = trio.current_time()
            self.pool.batch_done(self.face)


@pytest.fixture
def sim(monkeypatch):
    """SimWorker with its bookkeeping reset and its timings restored after the test."""
    SimWorker.alive = set()
    SimWorker.most_alive = 0
    SimWorker.created = []
    monkeypatch.setattr(SimWorker, "start_s", 0.5)
    monkeypatch.setattr(SimWorker, "serve_s", 1.0)
    monkeypatch.setattr(SimWorker, "stop_s", 0.0)
    return SimWorker


async def call(pool: WorkerPool, inp: Input):
    """What ModelManager.call_model does: submit, wait, discard if we leave early."""
    job = pool.submit(inp)
    try:
        await job.done.wait()
    finally:
        if not job.finished():
            pool.discard(job)
    if job.error is not None:
        raise job.error
    return job.result


def listed(pool: WorkerPool) -> list[tuple[bool, str]]:
    """(permanent, READY/UNLOADING) per listed worker, as describe would show them."""
    pool.statistics()  # describe purges stale stopped workers first (spec §5.7)
    return [
        (w.permanent, "READY" if w.running and not w.retiring else "UNLOADING")
        for w in pool.all_workers()
    ]


async def test_run_loads_min_workers_before_ready(autojump_clock, sim):
    pool = make_pool(min_workers=2, max_workers=4)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        assert pool.status is ModelStatus.READY
        assert trio.current_time() - start == pytest.approx(2 * sim.start_s)
        assert listed(pool) == [(True, "READY"), (True, "READY")]
        await pool.aclose()
    assert pool.closed.is_set() and not sim.alive


async def test_scale_up_to_max_under_load_then_back_to_min_when_idle(autojump_clock, sim):
    """Spec §5.2 step 4, §5.4, §5.5 step 1: temporary workers come with the queue and go
    after max_idle_time; permanent ones stay."""
    pool = make_pool(batch_size=1, min_workers=1, max_workers=3, idle_s=5)
    results = []
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)

        async def client():
            for i in range(8):
                results.append(await call(pool, request(f"r{i}")))

        load_start = trio.current_time()
        async with trio.open_nursery() as clients:
            for _ in range(8):
                clients.start_soon(client)
        load_end = trio.current_time()
        assert len(results) == 64
        assert sim.most_alive == 3  # max_worker reached, never passed
        assert len({worker_id for worker_id, _ in results}) == 3
        # 64 one-second jobs on up to 3 workers: well under the 64 s of one worker.
        assert load_end - load_start < 30
        assert sorted(listed(pool)) == [(False, "READY"), (False, "READY"), (True, "READY")]

        temporary = [w for w in sim.created if not w.permanent]
        await trio.sleep_until(max(w.last_active for w in temporary) + 5 + 0.001)
        await trio.testing.wait_all_tasks_blocked()
        assert all(w.exit_reason is ExitReason.RETIRED for w in temporary)
        for w in temporary:
            assert w.stopped_at - w.last_active == pytest.approx(5)
        assert [w.permanent for w in pool.running_workers()] == [True]
        # Stopped workers stay listed as UNLOADING (spec §5.7) and the model stays healthy.
        assert sorted(listed(pool)) == [(False, "UNLOADING"), (False, "UNLOADING"),
                                        (True, "READY")]
        assert pool.healthy()

        # An hour idle later the permanent worker is still there.
        await trio.sleep(3600)
        assert [w.permanent for w in pool.running_workers()] == [True]
        assert listed(pool) == [(True, "READY")]  # stopped ones purged after 60 s
        await pool.aclose()


async def test_a_burst_of_submits_adds_one_worker_at_a_time(autojump_clock, sim):
    """Regression: the scale-up task is started with start_soon, so until it ran no worker
    was STARTING and every submit of a burst started another: 19 workers for max 3."""
    pool = make_pool(batch_size=1, min_workers=1, max_workers=3)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        jobs = [pool.submit(request(f"b{i}")) for i in range(20)]
        await trio.testing.wait_all_tasks_blocked()
        assert len(pool.all_workers()) == 2
        for job in jobs:
            await job.done.wait()
        assert sim.most_alive <= 3
        assert all(job.error is None for job in jobs)
        await pool.aclose()


async def test_scaling_never_blocks_what_running_workers_can_serve(autojump_clock, sim):
    """A worker that takes 100 s to start does not delay jobs the others can take."""
    pool = make_pool(batch_size=1, min_workers=1, max_workers=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        sim.start_s = 100.0
        start = trio.current_time()
        async with trio.open_nursery() as clients:
            for i in range(4):
                clients.start_soon(call, pool, request(f"q{i}"))
        assert trio.current_time() - start == pytest.approx(4 * sim.serve_s)
        assert len(pool.all_workers()) == 2  # the slow one is still starting
        await pool.aclose()


async def test_crashed_worker_is_replaced_with_back_off(autojump_clock, sim):
    """Spec §5.6/§6.9 [REC]: the crash's batch gets 503 at once; a permanent worker comes
    back after RESTART_BACKOFF_BASE_S × 2^(n-1) while failures stay within the threshold."""
    pool = make_pool(batch_size=1, min_workers=1, max_workers=1, retry_threshold=3)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        for n in range(1, 4):
            [before] = pool.running_workers()
            with pytest.raises(WorkerDied) as info:
                await call(pool, request("boom", crash="1"))
            assert info.value.status == 503 and info.value.type == "WlmException"
            assert info.value.message == "Python worker disconnected."
            died = trio.current_time()
            await trio.testing.wait_all_tasks_blocked()  # the pool counts it after the 503
            assert before.exit_reason is ExitReason.DIED and not before.running
            assert pool.failures == n and pool.status is ModelStatus.READY
            worker_id, _ = await call(pool, request("after"))
            [after] = pool.running_workers()
            assert worker_id == after.id != before.id
            assert after.permanent
            backoff = RESTART_BACKOFF_BASE_S * 2 ** (n - 1)
            assert after.created_at - died == pytest.approx(backoff)
        assert [state for _, state in listed(pool)] == ["UNLOADING"] * 3 + ["READY"]
        await pool.aclose()


async def test_back_off_starts_afresh_after_a_long_healthy_run(autojump_clock, sim):
    """Crashes hours apart are unrelated: a worker that lived BACKOFF_RESET_S before dying
    is replaced after the base delay, not after the grown one."""
    pool = make_pool(batch_size=1, min_workers=1, max_workers=1, retry_threshold=5)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        for _ in range(2):  # two quick crashes grow the back-off to 2 × base
            with pytest.raises(WorkerDied):
                await call(pool, request("boom", crash="1"))
            await call(pool, request("after"))
        await trio.sleep(BACKOFF_RESET_S)
        with pytest.raises(WorkerDied):
            await call(pool, request("boom", crash="1"))
        died = trio.current_time()
        await call(pool, request("after"))
        [after] = pool.running_workers()
        assert after.created_at - died == pytest.approx(RESTART_BACKOFF_BASE_S)
        await pool.aclose()


async def test_no_extra_worker_while_a_dead_one_is_being_stopped(autojump_clock, sim):
    """Regression: a dead worker is STOPPED before its process is reaped; a submit in
    that window saw no running worker and started a temporary one, and the permanent
    replacement then made two processes for max_worker=1."""
    pool = make_pool(batch_size=1, min_workers=1, max_workers=1)
    sim.stop_s = 1.0
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        with pytest.raises(WorkerDied):
            await call(pool, request("boom", crash="1"))
        died = trio.current_time()
        worker_id, _ = await call(pool, request("during the stop"))
        [replacement] = pool.running_workers()
        assert worker_id == replacement.id and replacement.permanent
        assert replacement.created_at - died == pytest.approx(1.0 + RESTART_BACKOFF_BASE_S)
        assert sim.most_alive == 1
        assert len(sim.created) == 2
        await pool.aclose()


async def test_failures_past_retry_threshold_turn_the_model_failed(autojump_clock, sim):
    """Spec §6.9: failed > retry_threshold → FAILED; queued jobs and new requests get
    503 "Model is not ready"; no replacement is started."""
    pool = make_pool(batch_size=1, min_workers=1, max_workers=1, retry_threshold=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        with pytest.raises(WorkerDied):
            await call(pool, request("boom", crash="1"))
        assert pool.status is ModelStatus.READY  # 1 failure: within the threshold
        outcomes = []

        async def record(inp):
            try:
                outcomes.append(await call(pool, inp))
            except WlmError as exc:
                outcomes.append(exc.message)

        async with trio.open_nursery() as clients:
            clients.start_soon(record, request("boom", crash="1"))
            await trio.testing.wait_all_tasks_blocked()
            clients.start_soon(record, request("queued"))
        assert pool.failures == 2 and pool.status is ModelStatus.FAILED
        assert sorted(outcomes) == ["Model is not ready: m", "Python worker disconnected."]
        with pytest.raises(WlmError) as info:
            pool.submit(request("later"))
        assert info.value.message == "Model is not ready: m" and info.value.status == 503
        await trio.sleep(61)  # stopped workers are listed (and count) for 60 s
        assert pool.running_workers() == [] and not sim.alive
        assert not pool.healthy()
        await pool.aclose()


async def test_temporary_worker_crash_is_not_replaced(autojump_clock, sim):
    pool = make_pool(batch_size=1, min_workers=0, max_workers=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        assert pool.all_workers() == []
        # No worker at all: the job waits for the temporary worker its submit starts.
        worker_id, _ = await call(pool, request("first"))
        [temporary] = pool.all_workers()
        assert worker_id == temporary.id and not temporary.permanent
        with pytest.raises(WorkerDied):
            await call(pool, request("boom", crash="1"))
        await trio.sleep(10)
        assert pool.running_workers() == [] and pool.failures == 1
        await pool.aclose()


async def test_aclose_answers_queued_and_inflight_jobs(autojump_clock, sim):
    """Unregister: in-flight jobs finish within the grace, queued ones get 503
    "Worker shutting down", and every worker stops."""
    pool = make_pool(batch_size=2, delay_ms=10, min_workers=2, max_workers=2)
    outcomes: dict[str, object] = {}

    async def record(name):
        try:
            outcomes[name] = await call(pool, request(name))
        except WlmError as exc:
            outcomes[name] = exc.message

    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        async with trio.open_nursery() as clients:
            for i in range(8):
                clients.start_soon(record, f"r{i}")
            await trio.sleep(0.5)  # two batches of two in flight, four queued
            assert len(pool.queue) == 4
            await pool.aclose(grace_s=5)
    assert pool.closed.is_set() and not sim.alive
    served = [k for k, v in outcomes.items() if isinstance(v, tuple)]
    refused = [k for k, v in outcomes.items() if v == "Worker shutting down"]
    assert len(served) == 4 and len(refused) == 4 and len(outcomes) == 8
    assert all(not w.running for w in pool.all_workers())
    with pytest.raises(WlmError):
        pool.submit(request("after"))


async def test_aclose_without_grace_fails_inflight_jobs(autojump_clock, sim):
    pool = make_pool(batch_size=4, delay_ms=100, min_workers=1, max_workers=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        collecting = pool.submit(request("collecting"))
        await trio.sleep(0.05)  # the worker is filling its batch
        [worker] = pool.running_workers()
        assert worker.inflight == [collecting]
        await pool.aclose()
    assert collecting.error is not None
    assert collecting.error.message == "Worker shutting down"


async def test_scale_down_retires_idle_workers_first(autojump_clock, sim):
    """Spec §2.7: surplus permanent workers go; a busy one finishes its batch."""
    pool = make_pool(batch_size=1, min_workers=2, max_workers=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        busy_job = pool.submit(request("busy"))
        await trio.testing.wait_all_tasks_blocked()
        busy = [w for w in pool.running_workers() if w.state is WorkerState.BUSY]
        assert len(busy) == 1
        await pool.scale(1, 2)
        await busy_job.done.wait()
        assert busy_job.error is None and busy_job.result[0] == busy[0].id
        [survivor] = pool.running_workers()
        assert survivor is busy[0]
        await pool.aclose()


# -- regressions --------------------------------------------------------------------------------


class CannotLoad(SimWorker):
    """A SimWorker that fails to load when ``fails()`` says so, the way the real Worker
    does: ModelLoadError out of ``run``, exit_reason LOAD_FAILED."""

    def fails(self) -> bool:
        raise NotImplementedError

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        if not self.fails():
            return await super().run(task_status=task_status)
        try:
            await trio.sleep(self.start_s)
            self.exit_reason = ExitReason.LOAD_FAILED
            raise ModelLoadError("Failed to initialize model: cannot load twice")
        finally:
            self.state = WorkerState.STOPPED
            self.stopped_at = trio.current_time()
            self.process_gone = True


class TemporaryCannotLoad(CannotLoad):
    """Temporary (scale-up) instances fail to load their model."""

    def fails(self) -> bool:
        return not self.permanent


@pytest.mark.parametrize("threshold", [
    100,
    3,
])
async def test_a_scale_up_worker_that_cannot_load_is_not_the_pools_failure(
    autojump_clock, sim, threshold
):
    pool = make_pool(batch_size=1, min_workers=1, max_workers=2, retry_threshold=threshold,
                     worker=TemporaryCannotLoad)
    results = []

    async def client(name: str) -> None:
        results.append(await call(pool, request(name)))

    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        [permanent] = pool.running_workers()
        async with trio.open_nursery() as clients:
            for i in range(8):  # 8 one-second jobs: the queue calls for a second worker
                clients.start_soon(client, f"j{i}")
        assert any(not w.permanent for w in sim.created)  # a scale-up was tried
        assert pool.status is ModelStatus.READY
        assert results == [(permanent.id, 1)] * 8
        assert pool.running_workers() == [permanent]
        await pool.aclose()


async def test_scale_ups_that_cannot_load_back_off_and_fail_a_model_nobody_serves(
    autojump_clock, sim
):
    """min_workers=0 and no worker can load: each retry waits longer than the last, the
    failures count since nothing serves the model, and the queued job is answered when the
    model turns FAILED rather than waiting forever."""
    sim.start_s = 0.01
    pool = make_pool(batch_size=1, min_workers=0, max_workers=1, retry_threshold=3,
                     worker=TemporaryCannotLoad)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        start = trio.current_time()
        with trio.fail_after(60):
            with pytest.raises(WlmError) as caught:
                await call(pool, request("lonely"))
        assert caught.value.message == f"Model is not ready: {pool.model_id}"
        assert pool.status is ModelStatus.FAILED and len(sim.created) == 4
        born = [w.stopped_at for w in sim.created]
        gaps = [b - a for a, b in zip(born, born[1:], strict=False)]
        assert gaps == sorted(gaps) and gaps[-1] > 2 * gaps[0], gaps
        assert trio.current_time() - start < 5
        await pool.aclose()


async def test_concurrent_scales_are_serialised(autojump_clock, sim):
    """A scale-down while a scale-up is still starting workers waits for it; it used to
    retire the starting worker: RuntimeError (child exited without started())."""
    sim.start_s = 1.0
    pool = make_pool(batch_size=1, min_workers=1, max_workers=3)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        async with trio.open_nursery() as requests:
            requests.start_soon(pool.scale, 3, 3)
            await trio.sleep(0.5)
            requests.start_soon(pool.scale, 1, 3)
        [group] = pool.groups.values()
        assert (group.min_workers, group.max_workers) == (1, 3)
        assert len(group.permanent()) == 1 and len(pool.running_workers()) == 1
        await pool.aclose()


async def test_a_job_queued_behind_a_dying_temporary_worker_gets_a_new_one(
    autojump_clock, sim
):
    """min_workers=0: the only worker (temporary) dies with a job still queued; a new
    temporary worker takes it instead of it waiting forever."""
    pool = make_pool(batch_size=1, min_workers=0, max_workers=1)
    outcomes: dict[str, object] = {}

    async def record(name: str, **props: str):
        try:
            outcomes[name] = await call(pool, request(name, **props))
        except WlmError as exc:
            outcomes[name] = exc.message

    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        with trio.fail_after(60):
            async with trio.open_nursery() as clients:
                clients.start_soon(lambda: record("boom", crash="1"))
                await trio.testing.wait_all_tasks_blocked()
                clients.start_soon(record, "queued")
        assert outcomes["boom"] == "Python worker disconnected."
        [first, second] = sim.created
        assert outcomes["queued"] == (second.id, 1) and not second.permanent
        await pool.aclose()


async def test_aclose_cancelled_during_the_grace_still_stops_the_workers(autojump_clock, sim):
    """DELETE whose client hangs up: the grace wait is cancelled, the workers stop anyway."""
    sim.serve_s = 10.0
    pool = make_pool(batch_size=1, min_workers=2, max_workers=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        job = pool.submit(request("long"))
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(0.5) as scope:
            await pool.aclose(grace_s=5)
        assert scope.cancelled_caught
        assert pool.closed.is_set() and not sim.alive
        assert job.error is not None and job.error.message == "Worker shutting down"


async def test_a_failed_scale_up_is_not_retried_while_the_queue_is_short(
    autojump_clock, sim
):
    """A burst asks for a second worker that cannot load; once the queue is back to one job
    (no reason to scale up, and the permanent worker serves), no more doomed loads are
    started: each would be a whole model load (a GPU out of memory, say)."""
    sim.serve_s = 5.0
    pool = make_pool(batch_size=1, min_workers=1, max_workers=2, retry_threshold=3,
                     worker=TemporaryCannotLoad)

    async def steady() -> None:
        while True:
            await call(pool, request("x"))

    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        async with trio.open_nursery() as clients:
            for _ in range(4):  # 3 queued > 2 x batch_size: one scale-up, which fails
                clients.start_soon(steady)
            await trio.sleep(30)
            clients.cancel_scope.cancel()
        tried = sum(not w.permanent for w in sim.created)
        assert tried >= 1
        async with trio.open_nursery() as clients:
            for _ in range(2):  # one served, one queued
                clients.start_soon(steady)
            await trio.sleep(600)
            clients.cancel_scope.cancel()
        assert sum(not w.permanent for w in sim.created) == tried
        assert pool.status is ModelStatus.READY
        await pool.aclose()


async def test_a_pool_cancelled_from_outside_with_jobs_queued_ends(autojump_clock, sim):
    """Its nursery cancelled (not aclose) while jobs wait: it stops, answering them, instead
    of starting a replacement worker for each cancelled one, forever."""

    class Counted(SimWorker):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            if len(SimWorker.created) > 50:
                raise AssertionError("a worker started for every cancelled one")

    sim.serve_s = 100.0
    pool = make_pool(batch_size=1, min_workers=1, max_workers=1, worker=Counted)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        jobs = [pool.submit(request(f"j{i}")) for i in range(3)]
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert pool.closed.is_set() and len(sim.created) == 1
    assert all(job.error is not None for job in jobs)


# -- health (issue 11.6) ------------------------------------------------------------------------


class LoadsOnce(CannotLoad):
    """The first worker loads; every later one fails to load (a broken model update, a
    GPU that no longer has room)."""

    def fails(self) -> bool:
        return self is not SimWorker.created[0]


async def test_a_model_whose_replacements_cannot_load_is_unhealthy(
    autojump_clock, sim
):
    """Regression (issue 11.6): the dead worker and the failed replacements stay listed
    (UNLOADING, spec §5.7) but do not count; they used to keep the model Healthy."""
    pool = make_pool(batch_size=1, min_workers=1, max_workers=1, retry_threshold=100,
                     worker=LoadsOnce)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        assert pool.healthy() and pool.statistics().health == "Healthy"
        with pytest.raises(WorkerDied):
            await call(pool, request("boom", crash="1"))
        # Replacements fail at +0.7, 1.6, 2.9 and 5.0 s (back-off 0.2 × 2^n, then a 0.5 s
        # load); at +5.5 s the next one is still in its back-off.
        await trio.sleep(5.5)
        stats = pool.statistics()
        assert "STARTING" not in [w.state for w in stats.workers]
        assert len(sim.created) >= 3 and stats.restarts == len(sim.created) - 1
        assert stats.status is ModelStatus.READY
        assert not pool.healthy() and stats.health == "Unhealthy"
        assert [w.alive for w in stats.workers] == [False] * len(stats.workers)
        await pool.aclose()


async def test_a_starting_replacement_counts_a_retiring_worker_does_not(autojump_clock, sim):
    pool = make_pool(batch_size=1, min_workers=1, max_workers=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        [first] = pool.running_workers()
        with pytest.raises(WorkerDied):
            await call(pool, request("boom", crash="1"))
        await trio.testing.wait_all_tasks_blocked()
        assert not pool.healthy()  # in the restart back-off: nothing alive
        await trio.sleep(RESTART_BACKOFF_BASE_S + 0.01)
        [replacement] = pool.running_workers()
        assert replacement.state is WorkerState.STARTING and pool.healthy()
        await trio.sleep(sim.start_s)
        replacement.retiring = True
        assert not pool.healthy()
        assert [w.state for w in pool.statistics().workers] == ["STOPPED", "RETIRING"]
        replacement.retiring = False
        await pool.aclose()


# -- recycling (issue 11.7) ---------------------------------------------------------------------


async def test_a_worker_is_recycled_after_max_worker_requests(autojump_clock, sim):
    """The replacement loads while the old worker serves; then the old one retires. Every
    request is answered, each worker answers at least the limit, never an error."""
    pool = make_pool(batch_size=1, min_workers=1, max_workers=1,
                     properties={"option.max_worker_requests": "3"})
    results = []
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)

        async def client(i: int) -> None:
            results.append(await call(pool, request(f"r{i}")))

        async with trio.open_nursery() as clients:
            for i in range(12):
                clients.start_soon(client, i)
                await trio.sleep(0.25)  # a steady stream, 4 per served second
        served = [worker_id for worker_id, _ in results]
        assert len(served) == 12
        ids = sorted(set(served))
        assert len(ids) >= 3
        assert all(served.count(i) >= 3 for i in ids[:-1])
        assert sim.most_alive == 2  # the replacement started before the old one left
        stats = pool.statistics()
        assert stats.recycles == len(sim.created) - 1 and stats.failures == 0
        assert all(w.exit_reason is ExitReason.RETIRED or w.exit_reason is ExitReason.CANCELLED
                   for w in sim.created[:-1])
        assert [w.permanent for w in pool.running_workers()] == [True]
        await pool.aclose()


async def test_a_worker_is_recycled_when_its_memory_passes_the_limit(autojump_clock, sim):
    pool = make_pool(batch_size=1, min_workers=1, max_workers=1,
                     properties={"option.max_worker_rss_mb": "100",
                                 "option.worker_rss_check_interval": "1"})
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        [first] = pool.running_workers()
        first.rss = 99 * 1024 * 1024
        await trio.sleep(10)
        assert pool.running_workers() == [first] and pool.recycles == 0
        first.rss = 101 * 1024 * 1024
        await trio.sleep(1 + sim.start_s + 0.01)
        [second] = pool.running_workers()
        assert second is not first and pool.recycles == 1
        assert first.exit_reason is ExitReason.CANCELLED  # idle: stopped at once
        worker_id, _ = await call(pool, request("after"))
        assert worker_id == second.id
        await pool.aclose()


async def test_a_replacement_that_cannot_load_leaves_the_old_worker_serving(
    autojump_clock, sim
):
    pool = make_pool(batch_size=1, min_workers=1, max_workers=1,
                     properties={"option.max_worker_requests": "2"}, worker=LoadsOnce)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        [first] = pool.running_workers()
        for i in range(6):
            worker_id, _ = await call(pool, request(f"r{i}"))
            assert worker_id == first.id
        assert len(sim.created) == 2  # one try, then RECYCLE_RETRY_S before the next
        assert pool.recycles == 0 and pool.status is ModelStatus.READY and pool.healthy()
        await pool.aclose()


# -- the seam: the pool sees a worker only as a PooledWorker -------------------------------------

SEAM = frozenset(PooledWorker.__annotations__) | {
    name for name in vars(PooledWorker) if not name.startswith("_")}


class Seam:
    """A SimWorker that lets the pool read, write and call only PooledWorker's members; any
    other reach is recorded in ``reaches`` (and refused)."""

    reaches: list[str] = []

    def __init__(self, inner: SimWorker) -> None:
        object.__setattr__(self, "inner", inner)
        inner.face = self

    def __getattr__(self, name: str):
        if name not in SEAM:
            Seam.reaches.append(f"read {name}")
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __setattr__(self, name: str, value) -> None:
        if name not in SEAM:
            Seam.reaches.append(f"wrote {name}")
            raise AttributeError(name)
        setattr(self.inner, name, value)


def seam_worker(*args, **kwargs) -> Seam:
    return Seam(SimWorker(*args, **kwargs))


async def test_the_pool_reaches_its_workers_only_through_the_seam(autojump_clock, sim):
    """Scale-up under a burst, a crash and its restart, recycling by requests and by memory,
    a scale up and down, the snapshot with memory, health and unregister: each touches a
    worker only through PooledWorker (djl/wlm/seams.py), so any worker with those members
    (a remote one, this simulation) serves the pool unchanged."""
    Seam.reaches = []
    pool = make_pool(batch_size=1, min_workers=1, max_workers=3, idle_s=5,
                     properties={"option.max_worker_requests": "4",
                                 "option.max_worker_rss_mb": "100",
                                 "option.worker_rss_check_interval": "1"},
                     worker=seam_worker)
    answered = []

    async def client(name: str, **props: str) -> None:
        try:
            answered.append(await call(pool, request(name, **props)))
        except WorkerDied:
            answered.append("died")

    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        async with trio.open_nursery() as clients:
            for i in range(12):
                clients.start_soon(client, f"r{i}")
        assert len(sim.created) > 2  # scaled up, recycled
        await client("boom", crash="1")
        await trio.sleep(1)
        [worker] = [w for w in sim.created if w.running and w.permanent]
        worker.rss = 200 * 1024 * 1024
        await trio.sleep(3)
        await pool.scale(2, 3)
        stats = pool.statistics(rss=True)
        assert pool.healthy() and stats.restarts >= 1 and stats.recycles >= 2
        await pool.scale(1, 1)
        await client("after")
        await pool.aclose()
    assert Seam.reaches == []
    assert len(answered) == 14 and answered.count("died") == 1
