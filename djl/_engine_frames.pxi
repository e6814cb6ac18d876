# Included by _batch.pyx (one extension module): a batch's tensor requests read straight from
# its frame, and the answers written into one, for the PyTorch engine.

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
    cdef bytearray out = _new_frame(total, RESULTS)
    cdef char* buf = PyByteArray_AS_STRING(out)
    cdef Py_ssize_t pos = 5
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
