# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The hot path, shared by both ends of the worker pipe: one extension module holding
four jobs, each in its own section (the tensor codecs in the included ``_tensor.pxi``).

* Queue (server side): ``Job`` and ``JobQueue``, the per-model priority queue. FIFO
  within a priority, lower priority first, the queue-full rule of spec §5.3, cancelled
  jobs dropped lazily in O(1).
* Frame codec (both sides): whole length-prefixed frames (layout below), written by the
  ``encode_*`` functions into one preallocated buffer and read by ``decode_*``;
  ``FrameDecoder`` is sans-IO — ``feed(bytes)`` then iterate — so the trio server and the
  blocking worker share it (like hypercorn's ``protocol/``). ``encode_batch`` builds one
  request out of a batch with the ``batch_NNN.`` key convention of spec §6.8;
  ``split_batch`` maps a batched response back to its jobs; ``request_items`` and
  ``encode_ok_results`` are the PyTorch engine's one-pass read of a batch and write of
  its answers.
* Request ids (server side): ``random_uuid4``, version 4 UUID strings from a pooled
  ``os.urandom`` read, formatted in C, the pool refilled in a forked child.
* Tensor codecs (worker side, ``_tensor.pxi``): ``parse_tensors`` / ``read_requests``
  check and index a request's JSON, NDList or npz payload, ``collate`` fills one
  C-contiguous array per input for a whole batch, ``encode_tensors`` / ``encode_rows``
  write the answers, ``input_format`` / ``output_format`` pick the formats, and
  ``parse_ndlist_any`` backs ``djl.ndlist``. Their formats are described there.

Frame layout (all integers big-endian)::

    u32 length      bytes that follow this field
    u8  kind        REQUEST=1 RESPONSE=2 CHUNK=3 ERROR=4 RESULTS=5
    ... payload

    REQUEST   i32 P, P x (str key, str value), i32 C, C x (str key-or-null, i32 n, n bytes)
    RESPONSE  i32 code, str message, then as REQUEST; C == -1 announces CHUNK frames
    CHUNK     u8 more, then the chunk's bytes (to the end of the frame)
    ERROR     str kind, str message
    RESULTS   i32 n, n x (i32 len, one whole RESPONSE or ERROR frame): a batch answered
              job by job, each with its own code, headers or error (the PyTorch engine)

``str`` is an i32 byte length (-1 for None) and that many UTF-8 bytes. Counts are i32
(the Java protocol's i16 caps a batch at 32767 items; ours does not need to).
"""

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_FromStringAndSize
from cpython.unicode cimport PyUnicode_DecodeASCII
from libc.stdint cimport int32_t, uint32_t
from libc.string cimport memcmp, memcpy

import os
from collections import deque

from djl.errors import Capacity, FrameError, FrameTooLarge, TranslateError

REQUEST = 1
RESPONSE = 2
CHUNK = 3
ERROR = 4
RESULTS = 5

#: The priority of a request without ``x-priority`` (spec §3.4); its lane is kept.
DEFAULT_PRIORITY = 3

#: Largest frame either side accepts; a larger length prefix means a corrupt stream.
MAX_FRAME = (1 << 31) - 1
# Bytes asked of one recv on a worker channel, both ends. Under glibc's mmap threshold
# (128 KiB): a 1 MiB recv buffer was mmapped, faulted in and unmapped on every call,
# 18 us extra for a 300-byte frame and 57 us for a 75 KB one (socketpair, this machine).
RECV_SIZE = 64 * 1024


# -- jobs and the queue -------------------------------------------------------------------


cdef class Job:
    """One request for one model: its input, priority and the slot its answer lands in.

    ``queued`` is True exactly while the job sits in a JobQueue; ``discard`` clears it so
    that a job whose client went away costs nothing more (spec §5.5 step 5).
    """

    cdef public object input
    cdef public int priority
    cdef public bint queued
    cdef public bint cancelled
    cdef public object done      # trio.Event set once result or error is filled in
    cdef public object result    # Output
    cdef public object error     # DjlError
    cdef public double enqueued_at  # trio.current_time() at submit (QueueTime metric)

    def __init__(self, input, int priority=DEFAULT_PRIORITY, done=None):
        self.input = input
        self.priority = priority
        self.queued = False
        self.cancelled = False
        self.done = done
        self.result = None
        self.error = None
        self.enqueued_at = 0.0

    cpdef bint finished(self):
        return self.result is not None or self.error is not None

    cpdef set_result(self, result):
        if self.result is None and self.error is None:
            self.result = result
            if self.done is not None:
                self.done.set()

    cpdef set_error(self, error):
        if self.result is None and self.error is None:
            self.error = error
            if self.done is not None:
                self.done.set()


cdef class JobQueue:
    """Priority queue of Jobs with a capacity (spec §5.1, §5.3).

    Jobs of equal priority leave in arrival order. ``len()`` counts live jobs only.
    """

    cdef dict _lanes          # priority -> deque of Jobs (may hold discarded jobs)
    cdef list _priorities     # sorted priorities that have a lane
    cdef Py_ssize_t _live     # jobs with queued == True
    cdef readonly Py_ssize_t capacity
    cdef readonly str model_id

    def __init__(self, Py_ssize_t capacity, str model_id=""):
        if capacity < 1:
            raise ValueError(f"queue capacity must be >= 1, got {capacity}")
        self._lanes = {}
        self._priorities = []
        self._live = 0
        self.capacity = capacity
        self.model_id = model_id

    def __len__(self):
        return self._live

    cpdef put_nowait(self, Job job, bint worker_idle=True):
        """Enqueue ``job`` or raise ``Capacity``.

        The last free slot is only usable while some worker is idle (spec §5.3), so a
        burst never parks a request behind a queue that no worker will drain in time.
        """
        cdef Py_ssize_t remaining = self.capacity - self._live
        if remaining < 1 or (remaining == 1 and not worker_idle):
            raise Capacity.queue_full(self.model_id)
        self._lane(job.priority).append(job)
        job.queued = True
        self._live += 1

    cpdef put_front(self, list jobs):
        """Put already-admitted jobs back at the head of their lanes, in the given order
        (a dead worker's batches it never started). Capacity is not checked: they were
        counted when they were first queued."""
        cdef Job job
        for job in reversed(jobs):
            self._lane(job.priority).appendleft(job)
            job.queued = True
            self._live += 1

    cdef object _lane(self, int priority):
        """The deque of ``priority``, made (and its priority ordered in) on first use."""
        lane = self._lanes.get(priority)
        if lane is None:
            lane = deque()
            self._lanes[priority] = lane
            self._priorities.append(priority)
            self._priorities.sort()
        return lane

    cpdef bint discard(self, Job job):
        """Forget a queued job (its client went away). O(1); True if it was queued."""
        if not job.queued:
            return False
        job.queued = False
        self._live -= 1
        return True

    cpdef list take(self, Py_ssize_t max_items):
        """Remove and return up to ``max_items`` live jobs, best priority first."""
        cdef list out = []
        cdef list emptied = None
        cdef Job job
        if self._live == 0 or max_items <= 0:
            return out
        for priority in self._priorities:
            lane = self._lanes[priority]
            while lane and len(out) < max_items:
                job = lane.popleft()
                if job.queued:
                    job.queued = False
                    self._live -= 1
                    out.append(job)
            if not lane and priority != DEFAULT_PRIORITY:
                # Lanes come from a client header: drop empty ones so they cannot pile up.
                if emptied is None:
                    emptied = []
                emptied.append(priority)
            if len(out) >= max_items:
                break
        if emptied is not None:
            for priority in emptied:
                del self._lanes[priority]
                self._priorities.remove(priority)
        return out

    cpdef list drain(self):
        """Remove and return every live job (unregister, shutdown)."""
        return self.take(self._live)

    cpdef fail_all(self, error):
        """Remove every live job and answer each with ``error`` (a DjlError)."""
        cdef Job job
        for job in self.take(self._live):
            job.set_error(error)


# -- encoding -----------------------------------------------------------------------------


cdef inline void _put_u32(char* buf, Py_ssize_t* pos, uint32_t v) noexcept:
    buf[pos[0]] = <char>((v >> 24) & 0xFF)
    buf[pos[0] + 1] = <char>((v >> 16) & 0xFF)
    buf[pos[0] + 2] = <char>((v >> 8) & 0xFF)
    buf[pos[0] + 3] = <char>(v & 0xFF)
    pos[0] += 4


cdef inline void _put_bytes(char* buf, Py_ssize_t* pos, const unsigned char[::1] data) noexcept:
    cdef Py_ssize_t n = data.shape[0]
    _put_u32(buf, pos, <uint32_t>n)
    if n:
        memcpy(buf + pos[0], &data[0], n)
    pos[0] += n


cdef inline void _put_literal(char* buf, Py_ssize_t* pos, const char* data,
                              Py_ssize_t n) noexcept:
    _put_u32(buf, pos, <uint32_t>n)
    memcpy(buf + pos[0], data, n)
    pos[0] += n


cdef inline bytes _utf8(object s):
    if isinstance(s, bytes):
        return <bytes>s
    return (<str>s if isinstance(s, str) else str(s)).encode("utf-8")


cdef class _Writer:
    """Collects encoded pieces, then writes them into one exactly-sized bytearray."""

    cdef list parts   # bytes-like objects, or None for a null string
    cdef Py_ssize_t size

    def __init__(self):
        self.parts = []
        self.size = 0

    cdef inline void string(self, object s):
        cdef bytes b
        if s is None:
            self.parts.append(None)
        else:
            b = _utf8(s)
            self.parts.append(b)
            self.size += len(b)
        self.size += 4

    cdef inline void blob(self, object data):
        self.parts.append(data)
        self.size += 4 + len(data)

    cdef inline void count(self, int32_t n):
        self.parts.append(n)
        self.size += 4

    cdef bytearray finish(self, int kind, Py_ssize_t max_frame):
        """The frame, or FrameTooLarge before anything is allocated."""
        cdef Py_ssize_t total = 5 + self.size
        if total - 4 > max_frame:
            raise FrameTooLarge(total - 4, max_frame)
        cdef bytearray out = PyByteArray_FromStringAndSize(NULL, total)
        cdef char* buf = PyByteArray_AS_STRING(out)
        cdef Py_ssize_t pos = 0
        _put_u32(buf, &pos, <uint32_t>(total - 4))
        buf[4] = <char>kind
        pos = 5
        for part in self.parts:
            if part is None:
                _put_u32(buf, &pos, <uint32_t>0xFFFFFFFF)
            elif isinstance(part, int):
                _put_u32(buf, &pos, <uint32_t><int32_t>part)
            else:
                _put_bytes(buf, &pos, part)
        return out


cdef inline void _write_properties(_Writer w, dict properties):
    w.count(len(properties))
    for k, v in properties.items():
        w.string(k)
        w.string(v)


def encode_request(dict properties, list keys, list values, Py_ssize_t max_frame=MAX_FRAME):
    """One request frame: ``properties`` (str -> str) and content (keys, values)."""
    cdef _Writer w = _Writer()
    _write_properties(w, properties)
    w.count(len(keys))
    for i in range(len(keys)):
        w.string(keys[i])
        w.blob(values[i])
    return w.finish(REQUEST, max_frame)


def encode_batch(list inputs, dict extra=None, Py_ssize_t max_frame=MAX_FRAME):
    """One request frame for a batch of Inputs (spec §6.8).

    A batch of one is sent unchanged. Otherwise property ``batch_size`` is added and
    every property and content key of input ``i`` is prefixed ``batch_%03d.``; a null
    content key becomes ``data``. ``extra`` properties (e.g. ``handler``) are added
    unprefixed.
    """
    cdef _Writer w = _Writer()
    cdef Py_ssize_t n = len(inputs)
    cdef Py_ssize_t nprops = 0, nitems = 0
    cdef str prefix
    if n > 999:
        raise ValueError("a batch holds at most 999 requests")
    if n == 1:
        item = inputs[0]
        props = item.properties
        if extra:
            props = dict(props)
            props.update(extra)
        return encode_request(props, item.content.keys, item.content.values, max_frame)
    for item in inputs:
        nprops += len(item.properties)
        nitems += len(item.content.keys)
    w.count(<int32_t>(nprops + 1 + (len(extra) if extra else 0)))
    w.string("batch_size")
    w.string(str(n))
    if extra:
        for k, v in extra.items():
            w.string(k)
            w.string(v)
    for i in range(n):
        prefix = f"batch_{i:03d}."
        for k, v in inputs[i].properties.items():
            w.string(prefix + k)
            w.string(v)
    w.count(<int32_t>nitems)
    for i in range(n):
        prefix = f"batch_{i:03d}."
        content = inputs[i].content
        for k, v in zip(content.keys, content.values):
            w.string(prefix + (k if k is not None else "data"))
            w.blob(v)
    return w.finish(REQUEST, max_frame)


def encode_response(int code, str message, dict properties, list keys, list values,
                    Py_ssize_t max_frame=MAX_FRAME):
    """One response frame; ``keys is None`` announces a stream of CHUNK frames."""
    cdef _Writer w = _Writer()
    w.count(code)
    w.string(message)
    _write_properties(w, properties)
    if keys is None:
        w.count(-1)
    else:
        w.count(len(keys))
        for i in range(len(keys)):
            w.string(keys[i])
            w.blob(values[i])
    return w.finish(RESPONSE, max_frame)


def encode_chunk(bint more, data):
    cdef const unsigned char[::1] view = data
    cdef Py_ssize_t n = view.shape[0]
    cdef bytearray out
    cdef char* buf
    cdef Py_ssize_t pos = 0
    if n + 2 > MAX_FRAME:
        raise FrameTooLarge(n + 2, MAX_FRAME)
    out = PyByteArray_FromStringAndSize(NULL, 6 + n)
    buf = PyByteArray_AS_STRING(out)
    _put_u32(buf, &pos, <uint32_t>(n + 2))
    buf[4] = <char>CHUNK
    buf[5] = <char>(1 if more else 0)
    if n:
        memcpy(buf + 6, &view[0], n)
    return out


def encode_error(str kind, str message):
    cdef _Writer w = _Writer()
    w.string(kind)
    w.string(message)
    return w.finish(ERROR, MAX_FRAME)


def encode_results(list frames, Py_ssize_t max_frame=MAX_FRAME):
    """One RESULTS frame from one whole RESPONSE or ERROR frame per job of a batch."""
    cdef _Writer w = _Writer()
    w.count(<int32_t>len(frames))
    for frame in frames:
        w.blob(frame)
    return w.finish(RESULTS, max_frame)


# -- decoding -----------------------------------------------------------------------------


cdef inline uint32_t _get_u32(const unsigned char[::1] buf, Py_ssize_t pos) noexcept:
    return ((<uint32_t>buf[pos] << 24) | (<uint32_t>buf[pos + 1] << 16)
            | (<uint32_t>buf[pos + 2] << 8) | <uint32_t>buf[pos + 3])


cdef class _Reader:
    cdef const unsigned char[::1] buf
    cdef object owner
    cdef Py_ssize_t pos
    cdef Py_ssize_t end

    def __init__(self, data):
        self.owner = data
        self.buf = data
        self.pos = 0
        self.end = self.buf.shape[0]

    cdef inline int32_t i32(self) except? -2147483647:
        if self.pos + 4 > self.end:
            raise FrameError("truncated frame")
        cdef int32_t v = <int32_t>_get_u32(self.buf, self.pos)
        self.pos += 4
        return v

    cdef inline object string(self):
        cdef int32_t n = self.i32()
        if n == -1:
            return None
        if n < 0 or self.pos + n > self.end:
            raise FrameError("bad string length in frame")
        s = bytes(self.buf[self.pos:self.pos + n]).decode("utf-8", "replace")
        self.pos += n
        return s

    cdef inline int32_t skip_string(self, Py_ssize_t* start) except? -2:
        """Step over a str, leaving where its bytes start in ``start``; its length, or -1
        for None (no Python object made)."""
        cdef int32_t n = self.i32()
        if n < -1 or self.pos + n > self.end:
            raise FrameError("bad string length in frame")
        start[0] = self.pos
        if n > 0:
            self.pos += n
        return n

    cdef inline object blob(self):
        cdef int32_t n = self.i32()
        if n < 0 or self.pos + n > self.end:
            raise FrameError("bad item length in frame")
        b = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return b

    cdef dict properties(self):
        cdef int32_t n = self.i32()
        cdef dict out = {}
        if n < 0:
            raise FrameError("negative property count in frame")
        for _ in range(n):
            k = self.string()
            out[k] = self.string()
        return out

    cdef tuple content(self, int32_t n):
        cdef list keys = []
        cdef list values = []
        for _ in range(n):
            keys.append(self.string())
            values.append(self.blob())
        return keys, values


def decode_request(payload):
    """(properties, keys, values) of a REQUEST payload."""
    cdef _Reader r = _Reader(payload)
    props = r.properties()
    n = r.i32()
    if n < 0:
        raise FrameError("negative item count in request frame")
    keys, values = r.content(n)
    return props, keys, values


def decode_response(payload):
    """(code, message, properties, keys, values) of a RESPONSE payload.

    ``keys`` is None when the response announces a stream of CHUNK frames.
    """
    cdef _Reader r = _Reader(payload)
    code = r.i32()
    message = r.string()
    props = r.properties()
    n = r.i32()
    if n == -1:
        return code, message, props, None, None
    if n < 0:
        raise FrameError("negative item count in response frame")
    keys, values = r.content(n)
    return code, message, props, keys, values


def decode_error(payload):
    cdef _Reader r = _Reader(payload)
    return r.string(), r.string()


def decode_results(payload):
    """[(kind, payload)] of a RESULTS payload, one per job; each kind RESPONSE or ERROR."""
    cdef _Reader r = _Reader(payload)
    cdef int32_t n = r.i32()
    cdef list out = []
    if n < 0:
        raise FrameError("negative result count in results frame")
    for _ in range(n):
        frame = r.blob()
        if len(frame) < 5 or _get_u32(frame, 0) != len(frame) - 4:
            raise FrameError("bad frame inside a results frame")
        kind = frame[4]
        if kind != RESPONSE and kind != ERROR:
            raise FrameError(f"unexpected frame kind {kind} inside a results frame")
        out.append((kind, frame[5:]))
    return out


def decode_chunk(payload):
    """(more, data) of a CHUNK payload."""
    cdef const unsigned char[::1] view = payload
    if view.shape[0] < 1:
        raise FrameError("empty chunk frame")
    return view[0] != 0, bytes(view[1:])



# -- a batch's tensor requests, straight from the frame (the PyTorch engine) ------------


cdef inline int _header_of(const unsigned char* p, Py_ssize_t n) noexcept:
    """1 for ``content-type``, 2 for ``accept`` (any ASCII case), else 0."""
    cdef const char* want
    cdef unsigned char c
    cdef int which
    if n == 12:
        want, which = b"content-type", 1
    elif n == 6:
        want, which = b"accept", 2
    else:
        return 0
    for i in range(n):
        c = p[i]
        if 65 <= c <= 90:
            c += 32
        if c != <unsigned char>want[i]:
            return 0
    return which


cdef inline Py_ssize_t _batch_index(const unsigned char* p, Py_ssize_t n) noexcept:
    """NNN of a ``batch_NNN.`` key (spec §6.8), else -1."""
    if n < 10 or memcmp(p, b"batch_", 6) != 0 or p[9] != 46:  # '.'
        return -1
    for i in range(6, 9):
        if not 48 <= p[i] <= 57:
            return -1
    return (p[6] - 48) * 100 + (p[7] - 48) * 10 + (p[8] - 48)


def request_items(payload):
    """``(content type, accept, body)`` of each request in a REQUEST payload.

    What the PyTorch engine needs of a (possibly batched) request, read in one pass over
    the frame: no dict of every request's headers, no ``str`` for a key it does not
    want. A batch (property ``batch_size``) is read with the ``batch_NNN.`` keys of spec
    §6.8; the body is the content item ``data``, else the request's first item (§3.3).
    Header names match in any case (HTTP's arrive lower-cased; a workflow may pass
    ``Content-Type``). A request without a body gets None.
    """
    cdef _Reader r = _Reader(payload)
    cdef const unsigned char* base = &r.buf[0] if r.end else NULL
    cdef int32_t nprops = r.i32()
    cdef int32_t klen, vlen, nitems
    cdef Py_ssize_t kpos, vpos, index, n = -1
    cdef int which
    cdef list found = []
    if nprops < 0:
        raise FrameError("negative property count in frame")
    for _ in range(nprops):
        klen = r.skip_string(&kpos)
        vlen = r.skip_string(&vpos)
        if klen <= 0 or vlen < 0:
            continue
        if klen == 10 and memcmp(base + kpos, b"batch_size", 10) == 0:
            n = _parse_count(base + vpos, vlen)
            continue
        index = _batch_index(base + kpos, klen)
        if index >= 0:
            which = _header_of(base + kpos + 10, klen - 10)
        else:
            which = _header_of(base + kpos, klen)
        if which:
            found.append((index, which,
                          (<bytes>base[vpos:vpos + vlen]).decode("utf-8", "replace")))
    cdef Py_ssize_t size = n if n >= 0 else 1
    cdef list content_types = [""] * size
    cdef list accepts = [""] * size
    cdef list bodies = [None] * size
    cdef list named = [False] * size
    for index, which, value in found:
        if n < 0:
            if index >= 0:
                continue
            index = 0
        elif not 0 <= index < n:
            continue
        if which == 1:
            content_types[index] = value
        else:
            accepts[index] = value
    nitems = r.i32()
    if nitems < 0:
        raise FrameError("negative item count in request frame")
    for _ in range(nitems):
        klen = r.skip_string(&kpos)
        value = r.blob()
        if n < 0:
            index = 0
            is_data = klen == 4 and memcmp(base + kpos, b"data", 4) == 0
        else:
            index = _batch_index(base + kpos, klen) if klen > 0 else -1
            if not 0 <= index < n:
                continue
            is_data = klen == 14 and memcmp(base + kpos + 10, b"data", 4) == 0
        if is_data and not named[index]:
            bodies[index] = value
            named[index] = True
        elif bodies[index] is None:
            bodies[index] = value
    return list(zip(content_types, accepts, bodies))


cdef Py_ssize_t _parse_count(const unsigned char* p, Py_ssize_t n) except -2:
    cdef Py_ssize_t value = 0
    if n < 1 or n > 4:
        raise FrameError("bad batch_size in request frame")
    for i in range(n):
        if not 48 <= p[i] <= 57:
            raise FrameError("bad batch_size in request frame")
        value = value * 10 + (p[i] - 48)
    return value


def encode_ok_results(list bodies, list content_types, Py_ssize_t max_item,
                      Py_ssize_t max_frame=MAX_FRAME):
    """A RESULTS frame of one ``200 OK`` RESPONSE per body, written in one buffer.

    Each response carries ``content-type`` and the one item ``data``, exactly what
    ``encode_response`` writes for such an Output. None when a body is over
    ``max_item`` or the frame over ``max_frame``: the caller then answers item by item,
    refusing only what is too large.
    """
    cdef Py_ssize_t n = len(bodies)
    cdef Py_ssize_t total = 9, size
    cdef list types = []
    cdef bytes ct
    for i in range(n):
        if len(bodies[i]) > max_item:
            return None
        ct = _utf8(content_types[i])
        types.append(ct)
        # i32 len, u32 len, kind, code, "OK", P=1, key, value, C=1, "data", blob
        total += 4 + 5 + 4 + 6 + 4 + 16 + 4 + len(ct) + 4 + 8 + 4 + len(bodies[i])
    if total - 4 > max_frame:
        return None
    cdef bytearray out = PyByteArray_FromStringAndSize(NULL, total)
    cdef char* buf = PyByteArray_AS_STRING(out)
    cdef Py_ssize_t pos = 0
    _put_u32(buf, &pos, <uint32_t>(total - 4))
    buf[4] = <char>RESULTS
    pos = 5
    _put_u32(buf, &pos, <uint32_t>n)
    for i in range(n):
        ct = <bytes>types[i]
        size = 5 + 4 + 6 + 4 + 16 + 4 + len(ct) + 4 + 8 + 4 + len(bodies[i])
        _put_u32(buf, &pos, <uint32_t>size)
        _put_u32(buf, &pos, <uint32_t>(size - 4))
        buf[pos] = <char>RESPONSE
        pos += 1
        _put_u32(buf, &pos, 200)
        _put_literal(buf, &pos, b"OK", 2)
        _put_u32(buf, &pos, 1)
        _put_literal(buf, &pos, b"content-type", 12)
        _put_literal(buf, &pos, ct, len(ct))
        _put_u32(buf, &pos, 1)
        _put_literal(buf, &pos, b"data", 4)
        _put_bytes(buf, &pos, bodies[i])
    return out


cdef class FrameDecoder:
    """Sans-IO frame splitter: ``feed(data)``, then iterate ``(kind, payload)`` pairs.

    Iteration stops when the buffered bytes hold no complete frame; it never blocks.
    A frame larger than ``max_frame`` raises FrameError (the peer is broken or hostile).
    """

    cdef bytearray _buf
    cdef Py_ssize_t _start
    cdef readonly Py_ssize_t max_frame

    def __init__(self, Py_ssize_t max_frame=MAX_FRAME):
        if not 1 <= max_frame <= MAX_FRAME:
            raise ValueError(f"max_frame must be within 1..{MAX_FRAME}, got {max_frame}")
        self._buf = bytearray()
        self._start = 0
        self.max_frame = max_frame

    def feed(self, data):
        if self._start and self._start == len(self._buf):
            self._buf.clear()
            self._start = 0
        self._buf += data

    @property
    def buffered(self):
        return len(self._buf) - self._start

    def __iter__(self):
        return self

    def __next__(self):
        cdef Py_ssize_t avail = len(self._buf) - self._start
        cdef const unsigned char[::1] view
        cdef uint32_t length
        if avail < 5:
            self._compact()
            raise StopIteration
        view = self._buf
        length = _get_u32(view, self._start)
        if length < 1:
            raise FrameError("empty frame: a frame holds at least its kind byte")
        if length > <uint32_t>self.max_frame:
            raise FrameTooLarge(length, self.max_frame)
        if avail < 4 + <Py_ssize_t>length:
            # Release the buffer export first: a bytearray cannot shrink while viewed.
            view = None
            self._compact()
            raise StopIteration
        kind = view[self._start + 4]
        payload = bytes(view[self._start + 5:self._start + 4 + length])
        view = None
        self._start += 4 + length
        return kind, payload

    cdef void _compact(self):
        if self._start:
            del self._buf[:self._start]
            self._start = 0


# -- batch results ------------------------------------------------------------------------


def split_batch(Py_ssize_t n, list keys, list values):
    """Map a batched response's items back to its n requests (spec §6.8).

    Returns a list of n ``(key, value)`` pairs. Raises TranslateError when the count
    differs from n or a key is not ``batch_<i>.<name>``.
    """
    cdef list out = [None] * n
    cdef Py_ssize_t index
    if len(keys) != n:
        raise TranslateError.batch_size_mismatch(n, len(keys))
    for key, value in zip(keys, values):
        if key is None or not key.startswith("batch_"):
            raise TranslateError.unexpected_key(str(key))
        head, dot, name = key.partition(".")
        digits = head[6:]
        # ASCII digits only, as djl.io reads them: int() would also take " 1", "+1" and
        # "1_0"; compared as a Python int first, so a huge index cannot overflow.
        if not dot or not digits.isascii() or not digits.isdigit() or int(digits) >= n:
            raise TranslateError.unexpected_key(key)
        index = int(digits)
        if out[index] is not None:
            raise TranslateError.unexpected_key(key)
        out[index] = (name if name else "data", value)
    return out


# -- request ids ----------------------------------------------------------------------------

cdef enum:
    _RANDOM_POOL = 4096

cdef unsigned char _random[_RANDOM_POOL]
cdef Py_ssize_t _random_used = _RANDOM_POOL
cdef const char* _HEX = b"0123456789abcdef"


def _refill_after_fork():
    global _random_used
    _random_used = _RANDOM_POOL  # a child must not hand out its parent's ids


os.register_at_fork(after_in_child=_refill_after_fork)


def random_uuid4():
    """A random (version 4) UUID string, as ``str(uuid.uuid4())`` writes it: 16 bytes of
    a pooled ``os.urandom`` read (one getrandom call per 256 ids, not one per id),
    formatted here (every inference request without an id gets one)."""
    global _random_used
    cdef unsigned char b[16]
    cdef char out[36]
    cdef int i, k = 0
    if _random_used + 16 > _RANDOM_POOL:
        fresh = os.urandom(_RANDOM_POOL)
        memcpy(_random, <const char*>fresh, _RANDOM_POOL)
        _random_used = 0
    memcpy(b, _random + _random_used, 16)
    _random_used += 16
    b[6] = (b[6] & 0x0F) | 0x40  # version 4
    b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
    for i in range(16):
        if i == 4 or i == 6 or i == 8 or i == 10:
            out[k] = 45  # -
            k += 1
        out[k] = _HEX[b[i] >> 4]
        out[k + 1] = _HEX[b[i] & 15]
        k += 2
    return PyUnicode_DecodeASCII(out, 36, NULL)


include "_tensor.pxi"
include "_answer.pxi"
include "_head.pxi"
include "_json.pxi"
