"""The head of an HTTP/1.1 answer, as bytes: status line, headers, ``date``, framing.

Written once per answer by djl's own server (``djl.http.h1``, ``djl.http.asgi``), so what
is the same for every answer is built once: the status lines at import, the ``date``
header once a second. Two implementations write the same bytes (tests/http/test_answer.py):
``answer_head_py`` and ``answer_head_c`` (djl/_answer.pxi, one allocation, a memchr per
part for the CR/LF/NUL check); the server uses the C one, which bench/answer_head.py
measured at about a fifth of the Python one's CPU per head.
"""

from __future__ import annotations

from http import HTTPStatus
from time import time
from wsgiref.handlers import format_date_time

from djl import _batch
from djl.http.codec import HeaderList

_STATUS_LINES = {int(s): b"HTTP/1.1 %d %b\r\n" % (s, s.phrase.encode("ascii")) for s in HTTPStatus}
_CLOSE = b"connection: close\r\n"
_KEEP_ALIVE = b"connection: keep-alive\r\n"
_CHUNKED = b"transfer-encoding: chunked\r\n"


class InvalidHeader(ValueError):
    """An answer header that would break the head's framing (CR, LF or NUL in it)."""


class _Date:
    """``date: <IMF-fixdate>\\r\\n`` for the current second (RFC 9110 §6.6.1)."""

    __slots__ = ("line", "second")

    def __init__(self) -> None:
        self.second = -1
        self.line = b""

    def current(self) -> bytes:
        second = int(time())
        if second != self.second:
            self.line = b"date: " + format_date_time(second).encode("ascii") + b"\r\n"
            self.second = second
        return self.line


_date = _Date()


def answer_head_py(status: int, headers: HeaderList, close: bool, keep_alive: bool = False,
                   chunked: bool = False) -> tuple[bytes, bool]:
    """(head, whether the connection closes after this answer).

    ``close``: the server's own decision; a ``connection: close`` among ``headers`` closes
    too. ``keep_alive`` adds ``connection: keep-alive`` (an HTTP/1.0 client asked for it);
    ``chunked`` the transfer-coding of a streamed body. A header value or name with CR,
    LF or NUL raises ``InvalidHeader`` (it would split the answer).
    """
    line = _STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status
    parts = [line]
    append = parts.append
    for name, value in headers:
        if name == b"connection":
            if value.lower() == b"close":
                if close:
                    continue  # written once, below
                close = True
                continue
        append(name)
        append(b": ")
        append(value)
        append(b"\r\n")
    written = (len(parts) - 1) // 4
    append(_date.current())
    if close:
        append(_CLOSE)
    elif keep_alive:
        append(_KEEP_ALIVE)
    if chunked:
        append(_CHUNKED)
    append(b"\r\n")
    head = b"".join(parts)
    # Each header is 4 parts and one line, every other part one line: three scans in C
    # find a CR, LF or NUL inside a name or value.
    lines = len(parts) - 3 * written
    if head.count(b"\n") != lines or head.count(b"\r") != lines or b"\0" in head:
        raise InvalidHeader("an answer header holds CR, LF or NUL")
    return head, close


_batch.set_status_lines(_STATUS_LINES)


def answer_head_c(status: int, headers: HeaderList, close: bool, keep_alive: bool = False,
                  chunked: bool = False) -> tuple[bytes, bool]:
    """``answer_head_py`` in C (``_batch``, djl/_answer.pxi): the same bytes."""
    made = _batch.answer_head_c(status, headers, close, keep_alive, chunked)
    if made is None:
        raise InvalidHeader("an answer header holds CR, LF or NUL")
    return made


#: The one the server uses: bench/answer_head.py is the A/B that chose it.
answer_head = answer_head_c


__all__ = ["InvalidHeader", "answer_head", "answer_head_c", "answer_head_py"]
