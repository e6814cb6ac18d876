"""Which data path for Ray-placed workers: frames over a dial-back TCP connection, or one
Ray actor call per batch? Both measured in one run, same payloads, same cluster.

(a) ``tcp``: an actor dials back to this process and echoes length-prefixed frames (what
    djl's runtime does with its frames); one round trip = send a frame, read its echo.
(b) ``actor call``: ``ray.get(actor.echo.remote(frame))`` per frame.

Per payload size: the median and p99 round trip, and this process's CPU per round trip
(the server process is the one that must not spend it). A local 1-node cluster
(``ray.cluster_utils.Cluster``) is started and stopped by the script; only its own
processes are touched. Writes bench/results/ray_datapath.json.

    .venv/bin/python bench/ray_datapath.py [--rounds 2000]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import struct
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import import_ray, machine_info, table, write_results  # noqa: E402

HEADER_BYTES = 4  # a frame's length prefix, big-endian (as djl's frames)
SIZES = (1024, 32 * 1024)


def _exactly(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return bytes(data)


class Echo:
    """The actor: ``echo`` for (b); ``dial`` for (a), until the connection closes."""

    def echo(self, frame: bytes) -> bytes:
        return frame

    def dial(self, host: str, port: int) -> None:
        sock = socket.create_connection((host, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                header = _exactly(sock, HEADER_BYTES)
                sock.sendall(header + _exactly(sock, struct.unpack(">I", header)[0]))
        except (EOFError, ConnectionError):
            return


def summarise(samples: list[float], cpu_s: float) -> dict[str, Any]:
    ordered = sorted(samples)
    return {"n": len(samples), "p50_us": statistics.median(ordered) * 1e6,
            "p99_us": ordered[int(len(ordered) * 0.99) - 1] * 1e6,
            "cpu_us_per_call": cpu_s / len(samples) * 1e6}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000, help="round trips per point")
    args = parser.parse_args(argv)
    ray = import_ray()
    Cluster = ray.cluster_utils.Cluster  # noqa: N806 — a class

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": False, "object_store_memory": 100 * 1024 * 1024})
    points: list[dict[str, Any]] = []
    try:
        ray.init(address=cluster.address, logging_level="WARNING")
        actor_class = ray.remote(num_cpus=0)(Echo)
        caller, dialler = actor_class.remote(), actor_class.remote()
        ray.get(caller.echo.remote(b""))
        listener = socket.socket()
        listener.bind((ray.util.get_node_ip_address(), 0))
        listener.listen(1)
        done = dialler.dial.remote(*listener.getsockname())
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for size in SIZES:
            frame = struct.pack(">I", size) + b"x" * size
            for path in ("tcp", "actor call"):
                samples: list[float] = []
                for _ in range(args.rounds // 10):  # warm-up
                    if path == "tcp":
                        conn.sendall(frame)
                        _exactly(conn, len(frame))
                    else:
                        ray.get(caller.echo.remote(frame))
                cpu0 = time.process_time()
                for _ in range(args.rounds):
                    began = time.perf_counter()
                    if path == "tcp":
                        conn.sendall(frame)
                        echoed = _exactly(conn, len(frame))
                    else:
                        echoed = ray.get(caller.echo.remote(frame))
                    samples.append(time.perf_counter() - began)
                    assert len(echoed) == len(frame)
                point = summarise(samples, time.process_time() - cpu0)
                point.update(path=path, payload_bytes=size)
                points.append(point)
                print(f"{path:<10} {size:>6} B  p50 {point['p50_us']:8.1f} µs  "
                      f"p99 {point['p99_us']:8.1f} µs  "
                      f"caller CPU {point['cpu_us_per_call']:7.1f} µs/call", flush=True)
        conn.close()
        ray.get(done, timeout=10)
    finally:
        ray.shutdown()
        cluster.shutdown()
    ratios = {}
    for size in SIZES:
        tcp = next(p for p in points if p["path"] == "tcp" and p["payload_bytes"] == size)
        call = next(p for p in points if p["path"] == "actor call" and p["payload_bytes"] == size)
        ratios[f"{size} B actor call / tcp p50"] = call["p50_us"] / tcp["p50_us"]
        ratios[f"{size} B actor call / tcp caller CPU"] = (
            call["cpu_us_per_call"] / tcp["cpu_us_per_call"])
    print(table(["path", "bytes", "p50 µs", "p99 µs", "caller CPU µs"],
                [[p["path"], p["payload_bytes"], p["p50_us"], p["p99_us"],
                  p["cpu_us_per_call"]] for p in points]))
    for key, value in ratios.items():
        print(f"{key}: {value:.1f}")
    path = write_results("ray_datapath.json", {
        "bench": "ray_datapath", "settings": vars(args), "machine": machine_info(),
        "ratios": ratios, "points": points})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
