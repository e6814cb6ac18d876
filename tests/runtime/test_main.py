"""The worker runtime's answer path (djl/runtime/__main__.py), over a real socketpair.

The runtime must never write a frame the server's decoder refuses (issue 8, defect 2):
an answer over the item or the frame limit becomes an ERROR frame of kind ERROR_OUTPUT,
which fails that batch only.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from djl import _batch
from djl.errors import ERROR_OUTPUT
from djl.io import Output
from djl.runtime.__main__ import _send_output


def frames_sent(output: Output, *, max_item_bytes: int, max_frame: int) -> list[tuple[int, bytes]]:
    server, worker = socket.socketpair()
    with server, worker:
        _send_output(worker, output, max_item_bytes, max_frame)
        worker.shutdown(socket.SHUT_WR)
        decoder = _batch.FrameDecoder(max_frame=max_frame)
        while data := server.recv(1 << 16):
            decoder.feed(data)
        return list(decoder)  # the server's own decoder, with the server's own limit


def many(count: int, size: int) -> Output:
    output = Output()
    for i in range(count):
        output.add(b"x" * size, key=f"item{i}")
    return output


def test_an_answer_within_both_limits_is_one_response_frame():
    [(kind, payload)] = frames_sent(many(3, 100), max_item_bytes=100, max_frame=1000)
    assert kind == _batch.RESPONSE
    code, _, _, keys, values = _batch.decode_response(payload)
    assert code == 200 and keys == ["item0", "item1", "item2"] and values == [b"x" * 100] * 3


def test_items_within_the_item_limit_but_over_the_frame_limit_become_an_error_frame():
    [(kind, payload)] = frames_sent(many(3, 100), max_item_bytes=100, max_frame=250)
    assert kind == _batch.ERROR
    error_kind, message = _batch.decode_error(payload)
    assert error_kind == ERROR_OUTPUT
    assert "exceeds the limit of 250 bytes" in message


def test_an_item_over_the_item_limit_names_max_worker_item_bytes():
    [(kind, payload)] = frames_sent(many(1, 101), max_item_bytes=100, max_frame=10_000)
    assert kind == _batch.ERROR
    assert _batch.decode_error(payload) == (
        ERROR_OUTPUT, "The model's output item of 101 bytes exceeds the limit of 100 bytes "
                      "(max_worker_item_bytes)")


@pytest.mark.parametrize("size", [1, 250, 1000])
def test_stream_chunks_are_split_to_fit(size):
    output = Output().add_stream_content(iter([b"y" * size]), output_formatter=None)
    frames = frames_sent(output, max_item_bytes=100, max_frame=250)
    assert frames[0][0] == _batch.RESPONSE
    chunks = [_batch.decode_chunk(p) for _, p in frames[1:]]
    assert b"".join(data for _, data in chunks) == b"y" * size
    assert [more for more, _ in chunks][-1] is False


def test_connect_dials_the_server_sends_the_secret_then_speaks_frames():
    """``--connect`` (a worker on a Ray node): the runtime dials, sends its secret and a
    newline first, then serves the init call and requests as over an inherited socket."""
    behave = Path(__file__).parent.parent / "models" / "behave"
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(30)
        port = listener.getsockname()[1]
        worker = subprocess.Popen([
            sys.executable, "-m", "djl.runtime", "--connect", f"127.0.0.1:{port}",
            "--secret", "s3cret", "--model-dir", str(behave), "--entry-point", "model.py",
            "--max-item-bytes", "65536", "--max-frame-bytes", str(1 << 20)])
        try:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(30)
                assert conn.recv(7) == b"s3cret\n"
                decoder = _batch.FrameDecoder()

                def answer(frame: bytes) -> tuple[int, bytes]:
                    conn.sendall(frame)
                    while True:
                        for got in decoder:
                            return got
                        decoder.feed(conn.recv(1 << 16))

                kind, payload = answer(_batch.encode_request({}, [], []))  # the init call
                assert kind == _batch.RESPONSE and _batch.decode_response(payload)[0] < 300
                kind, payload = answer(_batch.encode_request({}, ["data"], [b"hi"]))
                assert _batch.decode_response(payload)[4] == [b"hi"]
            assert worker.wait(30) == 0  # the connection closed: it exits quietly
        finally:
            worker.kill()
            worker.wait()
