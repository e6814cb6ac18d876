"""The async result store (spec §3.8): tokens, paging, streamed results, its bounds."""

from __future__ import annotations

import uuid

import pytest
import trio
import trio.testing

from djl.async_results import AsyncResults
from djl.errors import AsyncResultsFull, BadRequest, OutputTooLarge, WlmError
from djl.io import Output


class Stream:
    """The server side of a streamed Output: ``receive`` chunks, ``close``."""

    def __init__(self) -> None:
        self.send, self.recv = trio.open_memory_channel[bytes](100)
        self.closed = False

    async def receive(self) -> bytes:
        return await self.recv.receive()

    def close(self) -> None:
        self.closed = True
        self.recv.close()


def store(**kwargs) -> AsyncResults:
    settings = {"max_entries": 10, "max_bytes": 1000, "ttl_s": 60.0, "cache_batch": 1,
                "chunk_timeout_s": 5.0}
    settings.update(kwargs)
    return AsyncResults(**settings)


def answer(body: bytes, code: int = 200, **headers: str):
    async def job() -> Output:
        out = Output(code)
        out.properties.update(headers)
        out.add(body)
        return out
    return job


async def test_pending_then_final_result(nursery, autojump_clock):
    results = await nursery.start(store().run)
    release = trio.Event()

    async def job() -> Output:
        await release.wait()
        return await answer(b"done", **{"x-model": "m"})()

    key = results.submit(job)
    assert str(uuid.UUID(key)) == key and len(key) == 36  # a random UUID
    page = results.poll(key)
    assert (page.status, page.body, page.next_token) == (202, b"", key)
    release.set()
    await trio.testing.wait_all_tasks_blocked()
    page = results.poll(key)
    assert (page.status, page.body, page.properties) == (200, b"done", {"x-model": "m"})
    assert page.next_token is None  # the spec's [REC]: a non-streamed result is final
    assert results.poll(key).body == b"done"  # polling again still answers


async def test_unknown_or_malformed_tokens(nursery):
    results = await nursery.start(store().run)
    for token in (str(uuid.uuid4()), "short", str(uuid.uuid4()) + "x1"):
        with pytest.raises(BadRequest, match="Invalid x-starting-token: "):
            results.poll(token)


async def test_streamed_result_item_by_item(nursery, autojump_clock):
    results = await nursery.start(store().run)
    stream = Stream()

    async def job() -> Output:
        out = Output()
        out.stream = stream  # type: ignore[assignment]
        return out

    key = results.submit(job)
    await trio.testing.wait_all_tasks_blocked()
    assert results.poll(key).status == 202  # no chunk yet
    await stream.send.send(b"a")
    await stream.send.send(b"b")
    await trio.testing.wait_all_tasks_blocked()
    page = results.poll(key, max_items=1)
    assert (page.status, page.body, page.next_token) == (200, b"a", key + "1")
    page = results.poll(page.next_token)
    assert (page.body, page.next_token) == (b"b", key + "2")
    page = results.poll(page.next_token)  # nothing new yet, not finished
    assert (page.status, page.next_token) == (202, key + "2")
    await stream.send.send(b"c")
    await stream.send.aclose()
    await trio.testing.wait_all_tasks_blocked()
    page = results.poll(key + "2")
    assert (page.body, page.next_token) == (b"c", None)
    assert stream.closed
    whole = results.poll(key)
    assert (whole.body, whole.next_token) == (b"abc", None)


async def test_cache_batch_groups_chunks(nursery, autojump_clock):
    results = await nursery.start(store(cache_batch=2).run)
    stream = Stream()
    for chunk in (b"1", b"2", b"3"):
        stream.send.send_nowait(chunk)
    stream.send.close()

    async def job() -> Output:
        out = Output()
        out.stream = stream  # type: ignore[assignment]
        return out

    key = results.submit(job)
    await trio.testing.wait_all_tasks_blocked()
    assert results.poll(key, max_items=1).body == b"12"
    assert results.poll(key + "1").body == b"3"


async def test_a_stream_that_stalls_fails_after_the_chunk_timeout(nursery, autojump_clock):
    results = await nursery.start(store().run)
    stream = Stream()
    stream.send.send_nowait(b"first")

    async def job() -> Output:
        out = Output()
        out.stream = stream  # type: ignore[assignment]
        return out

    key = results.submit(job)
    await trio.sleep(4)
    assert results.poll(key).body == b"first"
    await trio.sleep(2)
    assert "chunked_read_timeout (5s)" in str(results.poll(key).error)
    assert stream.closed


async def test_a_failure_is_the_result(nursery, autojump_clock):
    results = await nursery.start(store().run)

    async def job() -> Output:
        raise WlmError.not_ready("m")

    key = results.submit(job)
    await trio.testing.wait_all_tasks_blocked()
    assert isinstance(results.poll(key).error, WlmError)


async def test_completed_results_expire_after_the_ttl(nursery, autojump_clock):
    results = await nursery.start(store(ttl_s=30).run)
    key = results.submit(answer(b"x"))
    await trio.sleep(29)
    assert results.poll(key).body == b"x"
    await trio.sleep(2)
    with pytest.raises(BadRequest):
        results.poll(key)
    assert results.bytes == 0


async def test_full_store_drops_the_oldest_completed(nursery, autojump_clock):
    results = await nursery.start(store(max_entries=2).run)
    first = results.submit(answer(b"1"))
    second = results.submit(answer(b"2"))
    await trio.testing.wait_all_tasks_blocked()
    third = results.submit(answer(b"3"))
    await trio.testing.wait_all_tasks_blocked()
    assert len(results) == 2
    with pytest.raises(BadRequest):
        results.poll(first)
    assert results.poll(second).body == b"2" and results.poll(third).body == b"3"


async def test_only_pending_requests_refuse_a_new_one(nursery, autojump_clock):
    results = await nursery.start(store(max_entries=2).run)
    never = trio.Event()

    async def job() -> Output:
        await never.wait()
        raise AssertionError

    results.submit(job)
    results.submit(job)
    with pytest.raises(AsyncResultsFull) as caught:
        results.submit(answer(b"3"))
    assert caught.value.status == 503


async def test_bytes_bound_drops_old_results_and_refuses_one_too_large(nursery, autojump_clock):
    results = await nursery.start(store(max_bytes=100).run)
    old = results.submit(answer(b"o" * 60))
    await trio.testing.wait_all_tasks_blocked()
    new = results.submit(answer(b"n" * 60))
    await trio.testing.wait_all_tasks_blocked()
    assert results.bytes == 60
    with pytest.raises(BadRequest):
        results.poll(old)
    assert results.poll(new).body == b"n" * 60
    huge = results.submit(answer(b"h" * 101))
    await trio.testing.wait_all_tasks_blocked()
    assert isinstance(results.poll(huge).error, OutputTooLarge)
    assert results.bytes <= 100


async def test_a_stream_larger_than_the_store_fails_and_is_closed(nursery, autojump_clock):
    results = await nursery.start(store(max_bytes=10).run)
    stream = Stream()
    for _ in range(5):
        stream.send.send_nowait(b"abcd")

    async def job() -> Output:
        out = Output()
        out.stream = stream  # type: ignore[assignment]
        return out

    key = results.submit(job)
    await trio.testing.wait_all_tasks_blocked()
    assert isinstance(results.poll(key).error, OutputTooLarge)
    assert stream.closed and results.bytes == 0


async def test_stopping_the_store_cancels_its_requests(autojump_clock):
    cancelled = []

    async def job() -> Output:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.append(True)
        raise AssertionError

    async with trio.open_nursery() as nursery:
        results = await nursery.start(store().run)
        results.submit(job)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert cancelled == [True]
    assert len(results) == 0
