"""Blocking http(s) downloads with timeouts, a size cap and checked redirects.

Only the standard library (``http.client``) is used, so the server has no extra runtime
dependency. Callers (``djl.store``) run these functions in a worker thread.

* Connect and read timeouts are separate (``download_connect_timeout_s``,
  ``download_read_timeout_s``); the read timeout is per socket read, so a remote that
  stops sending fails after that long even mid-body.
* ``download_max_bytes`` is checked against ``Content-Length`` before reading and against
  the bytes really received while reading.
* Redirects are followed by hand (at most five): each ``Location`` must be http(s) and pass
  the caller's ``allow`` check (the ``allowed_urls`` list), so an allowed host cannot
  bounce the server to an internal one.
* A download goes to a fresh temp file, ``flock``-ed while in use (see
  ``djl.archive.locked``), that is removed on any failure or stop request.
* Large downloads report progress on the ``djl.store`` logger.

Errors are ``SourceError`` with a status per case: 404 (remote 404/410), 400 (unreachable
host, TLS failure, remote 4xx, bad redirect), 413 (too large), 502 (remote 5xx, dropped
connection, malformed response), 504 (timeout); ``Forbidden`` for a redirect that the
allow-list refuses.
"""

from __future__ import annotations

import http.client
import logging
import os
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from djl.archive import Stopped, locked
from djl.config import ServerConfig
from djl.errors import SourceError

log = logging.getLogger("djl.store")

_CHUNK = 256 * 1024
_MAX_REDIRECTS = 5
_REDIRECTS = (301, 302, 303, 307, 308)
#: Downloads at least this large (or of unknown size) log their progress.
PROGRESS_MIN_BYTES = 64 * 1024 * 1024
#: Seconds between two progress lines of one download.
PROGRESS_INTERVAL_S = 5.0


class StopEvent(threading.Event):
    """A ``threading.Event`` that also runs hooks when set.

    A worker thread blocked in ``recv`` does not look at an event; the hook a download
    registers shuts its socket down, so a cancelled registration returns at once.
    """

    def __init__(self) -> None:
        super().__init__()
        self._hooks: list[Callable[[], None]] = []
        self._hooks_lock = threading.Lock()

    def set(self) -> None:
        with self._hooks_lock:
            super().set()
            hooks = list(self._hooks)
        for hook in hooks:
            hook()

    @contextmanager
    def hook(self, fn: Callable[[], None]) -> Iterator[None]:
        """Run ``fn`` when the event is set (at once if it already is) while in this block."""
        with self._hooks_lock:
            self._hooks.append(fn)
            already = self.is_set()
        try:
            if already:
                fn()
            yield
        finally:
            with self._hooks_lock:
                self._hooks.remove(fn)


@contextmanager
def downloaded(
    url: str,
    directory: Path,
    config: ServerConfig,
    *,
    allow: Callable[[str], object],
    stop: StopEvent,
    prefix: str = ".download-",
) -> Iterator[Path]:
    """Stream ``url`` into a new temp file in ``directory``; yield its path; remove it.

    The file stays locked until the block ends (see ``djl.archive.locked``), so a server
    starting meanwhile on the same cache leaves it alone. On any failure, or once ``stop``
    is set, the exception (``SourceError``, ``Forbidden`` or ``Stopped``) propagates.
    """
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".part", dir=directory)
    os.close(fd)
    try:
        with locked(name):
            with open(name, "wb") as out, _open(url, config, allow, stop) as resp:
                _stream(url, resp, out.write, config.download_max_bytes, config, stop)
            yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def fetch_bytes(
    url: str,
    config: ServerConfig,
    *,
    max_bytes: int,
    allow: Callable[[str], object],
    stop: StopEvent,
) -> bytes:
    """The body of ``url`` in memory, at most ``max_bytes`` (else 413)."""
    parts: list[bytes] = []
    with _open(url, config, allow, stop) as resp:
        _stream(url, resp, parts.append, max_bytes, config, stop)
    return b"".join(parts)


def _stream(
    url: str,
    resp: http.client.HTTPResponse,
    write: Callable[[bytes], object],
    max_bytes: int,
    config: ServerConfig,
    stop: StopEvent,
) -> None:
    length = _content_length(resp)
    if length is not None and length > max_bytes:
        raise _too_large(url, max_bytes)
    progress = _Progress(url, length)
    received = 0
    while True:
        if stop.is_set():
            raise Stopped()
        chunk = _read(url, resp, config)
        if stop.is_set():  # the read may have ended because stopping shut the socket
            raise Stopped()
        if not chunk:
            break
        received += len(chunk)
        if received > max_bytes:
            raise _too_large(url, max_bytes)
        write(chunk)
        progress.update(received)
    if length is not None and received != length:
        raise SourceError(f"Download interrupted: {url}", status=502)
    progress.done(received)


def _read(url: str, resp: http.client.HTTPResponse, config: ServerConfig) -> bytes:
    try:
        return resp.read1(_CHUNK)
    except TimeoutError:
        raise SourceError(
            f"Download timed out: no data for {config.download_read_timeout_s:g} s from {url}",
            status=504,
        ) from None
    except (http.client.HTTPException, OSError) as exc:
        raise SourceError(f"Download interrupted: {url} ({_reason(exc)})", status=502) from None


@contextmanager
def _open(
    url: str, config: ServerConfig, allow: Callable[[str], object], stop: StopEvent
) -> Iterator[http.client.HTTPResponse]:
    """GET ``url``, following checked redirects; yields a 200 response, closed on exit."""
    for _ in range(_MAX_REDIRECTS + 1):
        if stop.is_set():
            raise Stopped()
        conn = _connect(url, config)
        # The socket itself: once a response says "close", http.client detaches it from conn.
        abort = partial(_shutdown, conn.sock)
        try:
            with stop.hook(abort):
                resp = _request(conn, url, config)
            if resp.status in _REDIRECTS:
                location = resp.getheader("Location")
                if not location:
                    raise SourceError(f"Redirect without a Location from {url}", status=502)
                url = _redirect_target(url, location)
                allow(url)
                continue
            _check_status(url, resp.status)
            with stop.hook(abort):
                yield resp
            return
        finally:
            conn.close()
    raise SourceError(f"Too many redirects: {url}", status=400)


def _connect(url: str, config: ServerConfig) -> http.client.HTTPConnection:
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise SourceError.invalid_url(url, exc) from None
    if not host:
        raise SourceError(f"Invalid URL {url}: no host", status=400)
    timeout = config.download_connect_timeout_s
    conn: http.client.HTTPConnection
    try:
        if parts.scheme.lower() == "https":
            context = ssl.create_default_context()
            conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
    except (http.client.InvalidURL, ValueError) as exc:
        raise SourceError.invalid_url(url, exc) from None
    try:
        conn.connect()
    except TimeoutError:
        conn.close()
        raise SourceError(
            f"Timed out after {timeout:g} s connecting to {host}: {url}", status=504
        ) from None
    except (OSError, http.client.HTTPException, ValueError, UnicodeError) as exc:
        conn.close()
        raise SourceError(f"Cannot reach {host} ({_reason(exc)}): {url}", status=400) from None
    assert conn.sock is not None
    conn.sock.settimeout(config.download_read_timeout_s)
    return conn


def _request(
    conn: http.client.HTTPConnection, url: str, config: ServerConfig
) -> http.client.HTTPResponse:
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request(
            "GET", target, headers={"User-Agent": "djl-serving", "Accept-Encoding": "identity"}
        )
        return conn.getresponse()
    except TimeoutError:
        raise SourceError(
            f"Timed out after {config.download_read_timeout_s:g} s waiting for {url}", status=504
        ) from None
    except (http.client.InvalidURL, ValueError, UnicodeError) as exc:
        raise SourceError.invalid_url(url, exc) from None
    except (http.client.HTTPException, OSError) as exc:
        raise SourceError(f"Bad response from {url} ({_reason(exc)})", status=502) from None


def _shutdown(sock: socket.socket | None) -> None:
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed


def _redirect_target(url: str, location: str) -> str:
    try:
        target = urljoin(url, location)
        scheme = urlsplit(target).scheme.lower()
    except ValueError:
        raise SourceError(f"Invalid redirect from {url}: {location}", status=400) from None
    if scheme not in ("http", "https"):
        raise SourceError(f"Redirect to a non-http URL refused: {target}", status=400)
    return target


def _check_status(url: str, status: int) -> None:
    if status == 200:
        return
    if status in (404, 410):
        raise SourceError(f"Model not found: {url} (HTTP {status})", status=404)
    if 400 <= status < 500:
        raise SourceError(f"Download refused by the remote: {url} (HTTP {status})", status=400)
    raise SourceError(f"Download failed: {url} (HTTP {status})", status=502)


def _content_length(resp: http.client.HTTPResponse) -> int | None:
    value = resp.getheader("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _too_large(url: str, max_bytes: int) -> SourceError:
    return SourceError(
        f"Download exceeds download_max_bytes ({max_bytes} bytes): {url}", status=413
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, socket.gaierror):
        return "host not found"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class _Progress:
    """Logs how far a large download has come, at most every ``PROGRESS_INTERVAL_S``.

    A download of unknown size starts logging once it passes ``PROGRESS_MIN_BYTES``.
    """

    def __init__(self, url: str, length: int | None) -> None:
        self.url = url
        self.length = length
        self.start = self.last = time.monotonic()
        self.enabled = False
        if length is not None and length >= PROGRESS_MIN_BYTES:
            self.enabled = True
            log.info("Downloading %s (%.1f MiB)", url, length / 2**20)

    def update(self, received: int) -> None:
        if not self.enabled:
            if self.length is not None or received < PROGRESS_MIN_BYTES:
                return
            self.enabled = True
            log.info("Downloading %s (size unknown)", self.url)
        now = time.monotonic()
        if now - self.last < PROGRESS_INTERVAL_S:
            return
        self.last = now
        if self.length:
            log.info("Downloading %s: %d%%", self.url, received * 100 // self.length)
        else:
            log.info("Downloading %s: %.1f MiB", self.url, received / 2**20)

    def done(self, received: int) -> None:
        if self.enabled:
            elapsed = time.monotonic() - self.start
            log.info("Downloaded %s: %.1f MiB in %.1f s", self.url, received / 2**20, elapsed)
