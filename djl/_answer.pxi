# The head of an HTTP/1.1 answer in C (included by _batch.pyx): what
# djl/http/answer.py's ``answer_head`` does, one allocation and memcpy per part.
# Returns None for a header holding CR, LF or NUL; the caller raises.

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.string cimport memchr

from time import time as _time
from wsgiref.handlers import format_date_time as _format_date_time

cdef dict _STATUS_LINES = {}
cdef long _date_second = -1
cdef bytes _date_line = b""


def set_status_lines(dict lines):
    """The status lines by code (answer.py builds them once, from http.HTTPStatus)."""
    global _STATUS_LINES
    _STATUS_LINES = dict(lines)


cdef inline bint _splits(bytes part):
    cdef const char* p = PyBytes_AS_STRING(part)
    cdef Py_ssize_t n = len(part)
    return (memchr(p, 13, n) != NULL or memchr(p, 10, n) != NULL
            or memchr(p, 0, n) != NULL)


cdef inline char* _put(char* at, bytes part):
    cdef Py_ssize_t n = len(part)
    memcpy(at, PyBytes_AS_STRING(part), n)
    return at + n


def answer_head_c(int status, list headers, bint close, bint keep_alive=False,
                  bint chunked=False):
    """(head, close), or None when a header would split the head."""
    global _date_second, _date_line
    cdef bytes line = _STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d \r\n" % status
    cdef Py_ssize_t size = len(line) + 2
    cdef Py_ssize_t i, count = len(headers)
    cdef tuple pair
    cdef bytes name, value
    cdef list keep = []
    for i in range(count):
        pair = <tuple>headers[i]
        name = <bytes>pair[0]
        value = <bytes>pair[1]
        if name == b"connection" and value.lower() == b"close":
            close = True
            continue
        if _splits(name) or _splits(value):
            return None
        keep.append(pair)
        size += len(name) + len(value) + 4
    cdef long second = <long>_time()
    if second != _date_second:
        _date_line = b"date: " + _format_date_time(second).encode("ascii") + b"\r\n"
        _date_second = second
    size += len(_date_line)
    if close:
        size += 19  # connection: close\r\n
    elif keep_alive:
        size += 24  # connection: keep-alive\r\n
    if chunked:
        size += 28  # transfer-encoding: chunked\r\n
    cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
    cdef char* at = PyBytes_AS_STRING(out)
    at = _put(at, line)
    for pair in keep:
        at = _put(at, <bytes>pair[0])
        memcpy(at, b": ", 2)
        at = _put(at + 2, <bytes>pair[1])
        memcpy(at, b"\r\n", 2)
        at += 2
    at = _put(at, _date_line)
    if close:
        memcpy(at, b"connection: close\r\n", 19)
        at += 19
    elif keep_alive:
        memcpy(at, b"connection: keep-alive\r\n", 24)
        at += 24
    if chunked:
        memcpy(at, b"transfer-encoding: chunked\r\n", 28)
        at += 28
    memcpy(at, b"\r\n", 2)
    return out, close
