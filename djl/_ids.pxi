# Included by _batch.pyx (one extension module): request ids.

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
