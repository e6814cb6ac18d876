"""djl._batch: the job queue (spec §5.1, §5.3), the frame codec and batch keys (§6.8)."""

from __future__ import annotations

import pytest

from djl import _batch
from djl.errors import Capacity, FrameError, FrameTooLarge, TranslateError
from djl.io import Input


def job(name: str, priority: int = 3) -> _batch.Job:
    return _batch.Job(name, priority)


def names(jobs: list[_batch.Job]) -> list[str]:
    return [j.input for j in jobs]


# -- Job ----------------------------------------------------------------------------------


class FakeEvent:
    def __init__(self) -> None:
        self.sets = 0

    def set(self) -> None:
        self.sets += 1


def test_job_answer_is_set_once():
    done = FakeEvent()
    j = _batch.Job("x", 3, done)
    assert not j.finished() and j.priority == 3 and not j.queued and not j.cancelled
    j.set_result("first")
    j.set_error(RuntimeError("late"))
    j.set_result("second")
    assert j.finished() and j.result == "first" and j.error is None
    assert done.sets == 1


def test_job_error_wins_when_first():
    j = _batch.Job("x", done=FakeEvent())
    j.set_error(ValueError("boom"))
    j.set_result("late")
    assert j.result is None and isinstance(j.error, ValueError) and j.finished()


# -- JobQueue -----------------------------------------------------------------------------


def test_queue_lower_priority_first_fifo_within_priority():
    """Spec §5.1: lower runs first; [REC] FIFO among equal priorities."""
    q = _batch.JobQueue(100)
    for name, priority in [("a3", 3), ("b1", 1), ("c3", 3), ("d5", 5), ("e1", 1), ("f3", 3)]:
        q.put_nowait(job(name, priority))
    assert len(q) == 6
    assert names(q.take(100)) == ["b1", "e1", "a3", "c3", "f3", "d5"]
    assert len(q) == 0


def test_put_front_returns_jobs_to_the_head_of_their_lanes_past_capacity():
    """A dead worker's unstarted batches go back first in line, in their order, even when
    the queue has filled meanwhile (they were admitted before)."""
    q = _batch.JobQueue(3)
    for name in ("q1", "q2", "q3"):
        q.put_nowait(job(name, 3))
    taken = q.take(2)
    q.put_nowait(job("q4", 3))
    q.put_nowait(job("h0", 0))
    q.put_front(taken + [job("r1", 1)])
    assert len(q) == 6
    assert names(q.drain()) == ["h0", "r1", "q1", "q2", "q3", "q4"]


def test_queue_negative_and_large_priorities():
    q = _batch.JobQueue(10)
    for name, priority in [("big", 1 << 30), ("neg", -5), ("zero", 0)]:
        q.put_nowait(job(name, priority))
    assert names(q.drain()) == ["neg", "zero", "big"]


def test_take_up_to_n_keeps_the_rest_in_order():
    q = _batch.JobQueue(100)
    for i in range(7):
        q.put_nowait(job(f"j{i}"))
    assert names(q.take(3)) == ["j0", "j1", "j2"]
    assert len(q) == 4
    assert q.take(0) == [] and q.take(-1) == []
    assert names(q.take(10)) == ["j3", "j4", "j5", "j6"]
    assert q.take(5) == []


def test_take_crosses_priorities_and_marks_jobs_unqueued():
    q = _batch.JobQueue(100)
    jobs = [job("p1", 1), job("p3a"), job("p3b"), job("p9", 9)]
    for j in jobs:
        q.put_nowait(j)
        assert j.queued
    taken = q.take(3)
    assert names(taken) == ["p1", "p3a", "p3b"]
    assert all(not j.queued for j in taken) and jobs[3].queued


def test_capacity_rejects_with_the_spec_message():
    """Spec §5.3: remaining < 1 → WlmCapacityException."""
    q = _batch.JobQueue(2, "mlp")
    q.put_nowait(job("a"))
    q.put_nowait(job("b"))
    with pytest.raises(Capacity) as info:
        q.put_nowait(job("c"))
    assert info.value.message == "Worker queue capacity exceeded for model: mlp"
    assert info.value.status == 503 and info.value.config_key == "throttle_error_http_code"
    assert len(q) == 2


def test_last_slot_needs_an_idle_worker():
    """Spec §5.3: with one slot left, the job is accepted only while a worker is idle."""
    q = _batch.JobQueue(3, "m")
    q.put_nowait(job("a"), False)  # remaining 3
    q.put_nowait(job("b"), False)  # remaining 2
    rejected = job("c")
    with pytest.raises(Capacity):
        q.put_nowait(rejected, False)  # remaining 1, nobody idle
    assert not rejected.queued and len(q) == 2
    q.put_nowait(job("c"), True)  # remaining 1, a worker is idle
    assert len(q) == 3
    with pytest.raises(Capacity):
        q.put_nowait(job("d"), True)  # remaining 0


def test_queue_of_one_with_a_busy_worker_rejects():
    """[TEST: throttle] job_queue_size=1 and a single busy worker."""
    q = _batch.JobQueue(1, "m")
    with pytest.raises(Capacity):
        q.put_nowait(job("a"), False)
    q.put_nowait(job("a"), True)


def test_discard_frees_the_slot_and_is_skipped_by_take():
    q = _batch.JobQueue(2)
    a, b, c = job("a"), job("b"), job("c")
    q.put_nowait(a)
    q.put_nowait(b)
    assert q.discard(a) is True
    assert q.discard(a) is False  # already gone
    assert not a.queued and len(q) == 1
    q.put_nowait(c)  # the discarded job's slot is free again
    assert names(q.take(5)) == ["b", "c"]
    assert q.discard(b) is False  # taken jobs are not queued


def test_discard_everything_leaves_an_empty_queue():
    q = _batch.JobQueue(10)
    jobs = [job(str(i)) for i in range(4)]
    for j in jobs:
        q.put_nowait(j)
    for j in jobs:
        q.discard(j)
    assert len(q) == 0 and not q
    assert q.take(10) == [] and q.drain() == []


def test_drain_returns_every_live_job_in_order():
    q = _batch.JobQueue(10)
    for name, priority in [("x", 4), ("y", 2), ("z", 4)]:
        q.put_nowait(job(name, priority))
    dropped = job("gone")
    q.put_nowait(dropped)
    q.discard(dropped)
    assert names(q.drain()) == ["y", "x", "z"]
    assert len(q) == 0


def test_capacity_validation():
    with pytest.raises(ValueError):
        _batch.JobQueue(0)
    q = _batch.JobQueue(1, "m")
    assert q.capacity == 1 and q.model_id == "m"
    q.put_nowait(job("a"))
    with pytest.raises(Capacity):
        q.put_nowait(job("b"))


# -- frames -------------------------------------------------------------------------------


def frames_of(data: bytes, chunk: int) -> list[tuple[int, bytes]]:
    decoder = _batch.FrameDecoder()
    out: list[tuple[int, bytes]] = []
    for start in range(0, len(data), chunk):
        decoder.feed(data[start : start + chunk])
        out.extend(decoder)
    assert decoder.buffered == 0
    return out


def test_request_round_trip():
    props = {"content-type": "text/plain", "x": "é"}
    frame = bytes(_batch.encode_request(props, [None, "k"], [b"one", b""]))
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    assert frame[4] == _batch.REQUEST
    [(kind, payload)] = frames_of(frame, len(frame))
    assert kind == _batch.REQUEST
    assert _batch.decode_request(payload) == (props, [None, "k"], [b"one", b""])


def test_response_round_trip_and_stream_announcement():
    frame = bytes(_batch.encode_response(424, "bad", {"a": "b"}, ["data"], [b"\x00\xff"]))
    [(kind, payload)] = frames_of(frame, 3)
    assert kind == _batch.RESPONSE
    assert _batch.decode_response(payload) == (424, "bad", {"a": "b"}, ["data"], [b"\x00\xff"])
    frame = bytes(_batch.encode_response(200, "OK", {}, None, None))
    [(_, payload)] = frames_of(frame, 1)
    assert _batch.decode_response(payload) == (200, "OK", {}, None, None)


def test_chunk_and_error_round_trip():
    data = bytes(_batch.encode_chunk(True, b"abc")) + bytes(_batch.encode_chunk(False, b""))
    data += bytes(_batch.encode_error("oom", "out of memory"))
    (k1, p1), (k2, p2), (k3, p3) = frames_of(data, 2)
    assert (k1, k2, k3) == (_batch.CHUNK, _batch.CHUNK, _batch.ERROR)
    assert _batch.decode_chunk(p1) == (True, b"abc")
    assert _batch.decode_chunk(p2) == (False, b"")
    assert _batch.decode_error(p3) == ("oom", "out of memory")


@pytest.mark.parametrize("chunk", [1, 2, 5, 7, 64, 10_000])
def test_decoder_reassembles_frames_split_across_feeds(chunk):
    """A frame followed by part of the next one: the first comes out, the rest waits."""
    frames = [
        bytes(_batch.encode_request({"i": str(i)}, ["data"], [bytes([i]) * (i * 37)]))
        for i in range(6)
    ]
    decoded = frames_of(b"".join(frames), chunk)
    assert [_batch.decode_request(p)[0] for _, p in decoded] == [{"i": str(i)} for i in range(6)]


def test_decoder_partial_frame_after_a_whole_one():
    """Regression: compacting the buffer while it was still viewed raised BufferError."""
    a = bytes(_batch.encode_error("k", "m"))
    b = bytes(_batch.encode_error("k2", "m2"))
    decoder = _batch.FrameDecoder()
    decoder.feed(a + b[:7])
    assert [_batch.decode_error(p) for _, p in decoder] == [("k", "m")]
    assert decoder.buffered == 7
    decoder.feed(b[7:])
    assert [_batch.decode_error(p) for _, p in decoder] == [("k2", "m2")]
    assert decoder.buffered == 0


@pytest.mark.parametrize("max_frame", [0, -1, _batch.MAX_FRAME + 1])
def test_decoder_refuses_a_limit_outside_the_frame_format(max_frame):
    with pytest.raises(ValueError, match="max_frame must be within"):
        _batch.FrameDecoder(max_frame=max_frame)


def test_encoder_refuses_a_frame_over_the_limit_it_is_given():
    """The sender checks what the receiver's decoder would refuse, before allocating."""
    frame = _batch.encode_response(200, "OK", {}, ["a", "b"], [b"x" * 50, b"y" * 50])
    size = len(frame) - 4
    assert bytes(_batch.encode_response(200, "OK", {}, ["a", "b"], [b"x" * 50, b"y" * 50],
                                        size)) == bytes(frame)
    with pytest.raises(FrameTooLarge) as caught:
        _batch.encode_response(200, "OK", {}, ["a", "b"], [b"x" * 50, b"y" * 50], size - 1)
    assert (caught.value.size, caught.value.limit) == (size, size - 1)
    with pytest.raises(FrameTooLarge):
        _batch.encode_request({}, ["a"], [b"x" * 50], 10)
    decoder = _batch.FrameDecoder(max_frame=size - 1)
    decoder.feed(frame)
    with pytest.raises(FrameTooLarge):
        next(decoder)


def test_decoder_rejects_oversized_and_empty_frames():
    decoder = _batch.FrameDecoder(max_frame=16)
    assert decoder.max_frame == 16
    decoder.feed(bytes(_batch.encode_chunk(True, b"x" * 14)))  # length 16: accepted
    assert len(list(decoder)) == 1
    decoder.feed((17).to_bytes(4, "big") + b"\x03")  # only the header: rejected already
    with pytest.raises(FrameError):
        next(decoder)
    empty = _batch.FrameDecoder()
    empty.feed(b"\x00\x00\x00\x00\x01")
    with pytest.raises(FrameError):
        list(empty)
    huge = _batch.FrameDecoder()
    huge.feed(b"\xff\xff\xff\xff\x01")  # 4 GiB: beyond MAX_FRAME
    with pytest.raises(FrameError):
        list(huge)


def test_decoder_waits_for_a_whole_header():
    decoder = _batch.FrameDecoder()
    frame = bytes(_batch.encode_chunk(False, b"tail"))
    decoder.feed(frame[:4])
    assert list(decoder) == []
    decoder.feed(frame[4:])
    assert [_batch.decode_chunk(p) for _, p in decoder] == [(False, b"tail")]


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x00\x00", b"\x00\x00\x00\x01\x00\x00\x00\x09ab", b"\xff\xff\xff\xfe"],
)
def test_truncated_or_corrupt_payloads_raise_frame_error(payload):
    with pytest.raises(FrameError):
        _batch.decode_request(payload)


def test_negative_counts_raise_frame_error():
    with pytest.raises(FrameError):
        _batch.decode_request(b"\x00\x00\x00\x00\xff\xff\xff\xfe")
    with pytest.raises(FrameError):
        _batch.decode_response(b"\x00\x00\x00\xc8\xff\xff\xff\xff\x00\x00\x00\x00\xff\xff\xff\xfe")
    with pytest.raises(FrameError):
        _batch.decode_chunk(b"")


# -- batches (spec §6.8) ------------------------------------------------------------------


def request(props: dict[str, str], *items: tuple[str | None, bytes]) -> Input:
    inp = Input(dict(props))
    for key, value in items:
        inp.add(value, key=key)
    return inp


def test_encode_batch_of_one_is_sent_unchanged():
    single = request({"content-type": "text/plain"}, (None, b"hi"))
    frame = bytes(_batch.encode_batch([single]))
    assert frame == bytes(_batch.encode_request(single.properties, [None], [b"hi"]))
    [(_, payload)] = frames_of(frame, len(frame))
    assert _batch.decode_request(payload) == ({"content-type": "text/plain"}, [None], [b"hi"])


def test_encode_batch_of_one_adds_extra_without_touching_the_input():
    single = request({"a": "1"}, ("data", b"x"))
    props, keys, values = decode(_batch.encode_batch([single], {"handler": "handle"}))
    assert props == {"a": "1", "handler": "handle"}
    assert (keys, values) == (["data"], [b"x"])
    assert single.properties == {"a": "1"}


def decode(frame: bytearray) -> tuple[dict[str, str], list[str | None], list[bytes]]:
    [(kind, payload)] = frames_of(bytes(frame), len(frame))
    assert kind == _batch.REQUEST
    return _batch.decode_request(payload)


def test_encode_batch_prefixes_every_key():
    inputs = [
        request({"content-type": "text/plain"}, (None, b"zero")),
        request({"x-priority": "1", "h": "v"}, ("data", b"one"), ("extra", b"more")),
        request({}, (None, b"two")),
    ]
    props, keys, values = decode(_batch.encode_batch(inputs, {"handler": "handle"}))
    assert props == {
        "batch_size": "3",
        "handler": "handle",
        "batch_000.content-type": "text/plain",
        "batch_001.x-priority": "1",
        "batch_001.h": "v",
    }
    assert list(props)[:2] == ["batch_size", "handler"]
    assert keys == ["batch_000.data", "batch_001.data", "batch_001.extra", "batch_002.data"]
    assert values == [b"zero", b"one", b"more", b"two"]


def test_encode_batch_numbers_past_99_and_the_999_limit():
    inputs = [request({}, (None, str(i).encode())) for i in range(101)]
    props, keys, values = decode(_batch.encode_batch(inputs))
    assert props == {"batch_size": "101"}
    assert keys[0] == "batch_000.data" and keys[9] == "batch_009.data"
    assert keys[99] == "batch_099.data" and keys[100] == "batch_100.data"
    assert values[100] == b"100"
    with pytest.raises(ValueError):
        _batch.encode_batch([request({}, (None, b""))] * 1000)


def test_split_batch_maps_items_back_in_index_order():
    keys = ["batch_1.data", "batch_0.out", "batch_002.data", "batch_3."]
    out = _batch.split_batch(4, keys, [b"b", b"a", b"c", b"d"])
    assert out == [("out", b"a"), ("data", b"b"), ("data", b"c"), ("data", b"d")]


@pytest.mark.parametrize(("n", "count"), [(3, 2), (2, 3), (2, 0)])
def test_split_batch_count_mismatch(n, count):
    keys = [f"batch_{i}.data" for i in range(count)]
    with pytest.raises(TranslateError) as info:
        _batch.split_batch(n, keys, [b""] * count)
    assert info.value.message == f"Batch output size mismatch, expected: {n}, actual: {count}"
    assert info.value.status == 400 and info.value.type == "TranslateException"


@pytest.mark.parametrize(
    "key",
    [
        "data",  # no prefix
        None,  # a null key
        "batch_2.data",  # index out of range
        "batch_0.dup",  # index used twice (batch_0.data comes first)
        "batch_x.data",  # not a number
        "batch_1",  # no dot
        "batch_.data",  # no digits
        "batch_-1.data",
        "batch_+1.data",
        "batch_ 1.data",
        "batch_1_0.data",
        "batch_99999999999999999999999.data",  # regression: was OverflowError
    ],
)
def test_split_batch_unexpected_key(key):
    with pytest.raises(TranslateError) as info:
        _batch.split_batch(2, ["batch_0.data", key], [b"", b""])
    assert info.value.message == f"Unexpected batch output key: {key}"


def test_random_uuid4_is_a_fresh_version_4_uuid():
    """Request ids: 1,000 ids (the 4 KiB random pool refilled three times) are distinct
    RFC 4122 version 4 UUIDs written as str(uuid.UUID) writes them; a forked child does
    not hand out the ids its parent's pool still holds."""
    import os
    import uuid

    ids = [_batch.random_uuid4() for _ in range(1000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == text
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: write its next id and leave at once
        os.write(write, _batch.random_uuid4().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    assert uuid.UUID(child).version == 4
    assert child != _batch.random_uuid4()
