"""Builders of honest and hostile archives, and a local HTTP server, for tests/test_store.py."""

from __future__ import annotations

import http.server
import io
import os
import ssl
import struct
import tarfile
import threading
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

# -- archives ---------------------------------------------------------------------------------

#: An entry: ("file", name, data), ("dir", name), ("sym", name, target),
#: ("hard", name, target), ("fifo", name) or ("chr", name).
Entry = tuple


def tar_bytes(entries: list[Entry], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, format=tarfile.PAX_FORMAT) as tf:
        for kind, name, *rest in entries:
            info = tarfile.TarInfo(name)
            data = None
            if kind == "file":
                data = rest[0]
                info.size = len(data)
                info.mode = 0o644
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
            elif kind == "sym":
                info.type = tarfile.SYMTYPE
                info.linkname = rest[0]
            elif kind == "hard":
                info.type = tarfile.LNKTYPE
                info.linkname = rest[0]
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            elif kind == "chr":
                info.type = tarfile.CHRTYPE
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def zip_bytes(entries: list[Entry], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for kind, name, *rest in entries:
            if kind == "file":
                zf.writestr(name, rest[0])
            elif kind == "dir":
                zf.writestr(zipfile.ZipInfo(name.rstrip("/") + "/"), b"")
            elif kind == "sym":
                info = zipfile.ZipInfo(name)
                info.create_system = 3
                info.external_attr = 0o120777 << 16
                zf.writestr(info, rest[0])
    return buf.getvalue()


def zip_bomb(uncompressed: int) -> bytes:
    """One deflated entry of zeros: about 1000:1."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open("zeros.bin", "w", force_zip64=True) as out:
            chunk = bytes(1 << 20)
            for _ in range(uncompressed >> 20):
                out.write(chunk)
    return buf.getvalue()


def layered_bomb(entries: list[Entry], zeros: int = 10 << 20, pad: int = 96 << 10) -> bytes:
    """A zip whose only entry is a zip: ``entries``, ``zeros`` zero bytes deflated and ``pad``
    zero bytes stored. Each layer alone expands less than 200:1 (the stored pad dilutes the
    inner one; the outer one compresses the pad away), together about 9000:1."""
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        for _, name, data in entries:
            zf.writestr(name, data)
        zf.writestr("zeros.bin", bytes(zeros), compress_type=zipfile.ZIP_DEFLATED,
                    compresslevel=9)
        zf.writestr("pad.bin", bytes(pad))
    return zip_bytes([("file", "inner.zip", inner.getvalue())])


def tar_pax_bomb(header_bytes: int) -> bytes:
    """A tar.gz whose pax header (read whole into memory by tarfile) is ``header_bytes`` long."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("model.py")
        info.pax_headers = {"comment": "x" * header_bytes}
        tf.addfile(info, io.BytesIO(b""))
    return buf.getvalue()


def zip_local_name_mismatch() -> bytes:
    """The local header says ``evil.py`` where the central directory says ``model.py``."""
    data = bytearray(zip_bytes([("file", "model.py", b"print('hi')\n")]))
    at = data.index(b"model.py")  # the local header comes first
    data[at : at + 8] = b"evil.py_"
    return bytes(data)


def zip_overlapping() -> bytes:
    """Two central-directory entries sharing one local entry (a non-recursive bomb's trick)."""
    data = zip_bytes([("file", "a.txt", b"x" * 100)])
    eocd = data.rindex(b"PK\x05\x06")
    _, _, _, _, count, cd_size, cd_offset, _ = struct.unpack("<4s4H2LH", data[eocd : eocd + 22])
    central = data[cd_offset : cd_offset + cd_size]
    second = bytearray(central)
    at = second.index(b"a.txt", 46)
    second[at : at + 5] = b"b.txt"
    new_cd = central + bytes(second)
    end = struct.pack(
        "<4s4H2LH", b"PK\x05\x06", 0, 0, count * 2, count * 2, len(new_cd), cd_offset, 0
    )
    return data[:cd_offset] + new_cd + end


def snapshot(root: Path) -> set[str]:
    """Every path under ``root``, relative: to prove nothing was written or left behind."""
    return {
        os.path.relpath(os.path.join(d, n), root) for d, ds, fs in os.walk(root) for n in ds + fs
    }


# -- a local HTTP server ----------------------------------------------------------------------


@dataclass
class Site:
    """What the test server serves: ``files`` by path, plus behaviours chosen by prefix."""

    files: dict[str, bytes] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    release: threading.Event = field(default_factory=threading.Event)
    base: str = ""


class _Handler(http.server.BaseHTTPRequestHandler):
    site: Site

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        try:
            self._get()
        except (KeyError, ValueError):  # a fuzzed request: answer, never drop the connection
            self.send_error(400)

    def _get(self) -> None:
        parts = urlsplit(self.path)
        path = parts.path
        self.site.hits[path] += 1
        mode, _, name = path.lstrip("/").partition("/")
        if mode == "redirect":
            location = parse_qs(parts.query)["to"][0]
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if mode == "status":
            code = int(name.split("/")[0])
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = self.site.files.get("/" + name)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        if mode != "unsized":
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode == "slow":
            self.wfile.write(body[:10])
            self.wfile.flush()
            self.site.release.wait(10)
            return
        if mode == "drop":
            self.wfile.write(body[: len(body) // 2])
            return
        self.wfile.write(body)


class ServerThread:
    """``http.server`` on 127.0.0.1, port 0, in a daemon thread; with ``tls`` (a server
    side ``ssl.SSLContext``) it speaks https."""

    def __init__(self, site: Site, tls: ssl.SSLContext | None = None) -> None:
        handler = type("Handler", (_Handler,), {"site": site})
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        scheme = "https" if tls is not None else "http"
        site.base = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
