# Included by _batch.pyx (one extension module): the worker pipe's frame codec.

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


cdef inline bytearray _new_frame(Py_ssize_t total, int kind):
    """A frame buffer of ``total`` bytes with its length prefix and kind written; the
    payload goes from byte 5."""
    cdef bytearray out = PyByteArray_FromStringAndSize(NULL, total)
    cdef char* buf = PyByteArray_AS_STRING(out)
    cdef Py_ssize_t pos = 0
    _put_u32(buf, &pos, <uint32_t>(total - 4))
    buf[4] = <char>kind
    return out


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
        cdef bytearray out = _new_frame(total, kind)
        cdef char* buf = PyByteArray_AS_STRING(out)
        cdef Py_ssize_t pos = 5
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
