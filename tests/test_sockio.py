"""djl.sockio.FastStream over real socket pairs: the bytes and errors of trio's own stream
methods, a write larger than the socket's buffer finished through trio (back-pressure), no
read of a closed stream's descriptor, and a peer that never stops sending cannot keep
other tasks from running."""

from __future__ import annotations

import socket

import pytest
import trio

from djl.sockio import IMMEDIATE_LIMIT, FastStream


def _pair() -> tuple[trio.SocketStream, socket.socket]:
    ours, theirs = socket.socketpair()
    return trio.SocketStream(trio.socket.from_stdlib_socket(ours)), theirs


async def test_reads_what_was_sent_and_the_end_as_empty():
    stream, peer = _pair()
    fast = FastStream(stream)
    peer.sendall(b"hello")
    assert await fast.receive_some(100) == b"hello"

    async def later() -> None:
        await trio.sleep(0.05)
        peer.sendall(b"world")
        peer.shutdown(socket.SHUT_WR)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(later)
        assert await fast.receive_some(100) == b"world"  # waited for it, in trio
    assert await fast.receive_some(100) == b""
    peer.close()
    await stream.aclose()


async def test_a_write_larger_than_the_buffer_waits_for_the_reader():
    stream, peer = _pair()
    fast = FastStream(stream)
    data = bytes(range(256)) * 40_000  # 10 MB: far past a socket pair's buffer
    received = bytearray()
    peer.setblocking(False)

    async def drain() -> None:
        while len(received) < len(data):
            await trio.lowlevel.wait_readable(peer)
            received.extend(peer.recv(1 << 20))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        await fast.send_all(data)
    assert bytes(received) == data
    peer.close()
    await stream.aclose()


async def test_errors_are_the_streams():
    stream, peer = _pair()
    fast = FastStream(stream)
    peer.close()
    with pytest.raises(trio.BrokenResourceError):
        for _ in range(100):  # the first write may still land in the buffer
            await fast.send_all(b"x" * 65536)
    await stream.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await fast.receive_some(10)
    with pytest.raises(trio.ClosedResourceError):
        await fast.send_all(b"x")


async def test_a_closed_stream_is_never_read_through_a_reused_descriptor():
    stream, peer = _pair()
    fast = FastStream(stream)
    number = stream.socket.fileno()
    await stream.aclose()
    other, other_peer = socket.socketpair()  # likely takes the freed number
    other_peer.sendall(b"not yours")
    with pytest.raises(trio.ClosedResourceError):
        await fast.receive_some(100)
    assert other.recv(100) == b"not yours", (number, other.fileno())
    for s in (other, other_peer, peer):
        s.close()


async def test_a_peer_that_never_pauses_cannot_hold_the_loop():
    """Every read finds data at once; another task still runs long before the reads end.
    (Each IMMEDIATE_LIMIT-th read yields; trio runs a batch of tasks in either order, so
    the other task may come after one or a few such yields, never after none: without
    the yield it runs only once the reader's loop is over.)"""
    stream, peer = _pair()
    fast = FastStream(stream)
    peer.sendall(b"x" * 100_000)
    reads = 0
    ran_after: list[int] = []

    async def other() -> None:
        ran_after.append(reads)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        while reads < 40 * IMMEDIATE_LIMIT:
            assert await fast.receive_some(1) == b"x"
            reads += 1
    assert ran_after and ran_after[0] < 40 * IMMEDIATE_LIMIT, ran_after
    peer.close()
    await stream.aclose()
