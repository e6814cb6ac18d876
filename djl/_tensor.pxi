# Included by _batch.pyx (one extension module, msgpack's _cmsgpack.pyx style).
"""Tensor codecs and collation: the PyTorch engine's hot path.

A request's payload is read once by ``parse_tensors``, which checks it completely and
records per input its dtype, shape and where its values lie, without creating a Python
object per number. ``collate`` then allocates one C-contiguous array per input for the
whole batch and fills it straight from the payloads: JSON numbers are converted in C
(Clinger's exact fast path, else CPython's correctly rounded ``PyOS_string_to_double``,
then rounded to float32 like DJL's ``float[]``), NDList and npz data are memcpy'd.
``encode_tensors`` / ``encode_rows`` write answers in C: floats as the shortest decimal
that round-trips at the array's own precision (Ryu for float32, CPython's repr for
float64), ints as ints, bools as ``true``/``false``, NaN/Infinity as Python's json does.

Formats (DJL's default serving translator, ``NoopServingTranslatorFactory``):

* JSON in: an array of numbers (any rectangular nesting, float32), or an object whose
  ``inputs`` key (else ``instance``) holds one; other keys are checked and skipped.
* JSON out: ``{"predictions":<nested list>}`` for one array; for several,
  ``{"predictions":[["<name>",<nested list>],...]}`` where an unnamed output is called
  ``arr_<i>`` (numpy's npz default, so JSON and npz name outputs alike).
* NDList: spec Appendix D (``djl.ndlist`` delegates here).
* npz: zip archives of ``.npy`` entries, stored or deflated (``np.savez`` /
  ``np.savez_compressed``); written stored, in the order given, named ``arr_<i>`` unless
  named.

Every malformed payload raises ``djl.errors.BadInput`` (400 ``TranslateException``, also a
``ValueError``) whose message names the format, what is wrong and where. Every length is
checked against the bytes that remain, so an allocation never exceeds what the payload
can fill (deflate's ratio bounds npz entries).
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.conversion cimport Py_DTSF_ADD_DOT_0, PyOS_double_to_string, PyOS_string_to_double
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.stdint cimport int8_t, int16_t, int64_t, uint8_t, uint16_t, uint64_t
from libc.stdint cimport INT64_MAX, int32_t, uint32_t
from libc.string cimport memcmp, memcpy, memset, strlen

import zlib

from djl.errors import BadInput

#: Payload formats (``parse_tensors`` / ``encode_tensors``).
FORMAT_JSON = 1
FORMAT_NDLIST = 2
FORMAT_NPZ = 3

#: The content type each format is answered with.
CONTENT_TYPES = {
    FORMAT_JSON: "application/json",
    FORMAT_NDLIST: "tensor/ndlist",
    FORMAT_NPZ: "tensor/npz",
}

cdef enum:
    _MAX_NDIM = 64           # numpy 2's limit; a larger header is corrupt input
    _MAX_JSON_DEPTH = 64     # JSON arrays of numbers
    _MAX_SKIP_DEPTH = 512    # any other JSON value the skipper walks over
    _MAX_NPY_HEADER = 10000  # numpy's own max_header_size

# -- dtypes --------------------------------------------------------------------------------

cdef enum:
    DT_F32 = 0
    DT_F64
    DT_F16
    DT_I8
    DT_U8
    DT_I16
    DT_U16
    DT_I32
    DT_U32
    DT_I64
    DT_U64
    DT_BOOL
    DT_C64
    DT_C128
    DT_COUNT

#: Java ``DataType`` names, by code (None: NDList has no name for it).
_NDLIST_NAMES = ("FLOAT32", "FLOAT64", "FLOAT16", "INT8", "UINT8", "INT16", "UINT16",
                 "INT32", "UINT32", "INT64", "UINT64", "BOOLEAN", "COMPLEX64", None)
_NDLIST_CODES = {name: code for code, name in enumerate(_NDLIST_NAMES) if name}
_NDLIST_CODES["BOOL"] = DT_BOOL  # what djl_python's str(dtype).upper() writes
_NPY_CHARS = "fdebBhHiIlLq?FD"

cdef object _numpy = None
cdef tuple _DTYPES = ()       # numpy dtype (native order) by code
cdef tuple _DTYPE_NAMES = ()  # 'float32', ... by code
cdef dict _CODES = {}         # (kind, itemsize) -> code
cdef int _ITEMSIZE[DT_COUNT]
_ITEMSIZE[:] = [4, 8, 2, 1, 1, 2, 2, 4, 4, 8, 8, 1, 8, 16]


cdef object _np():
    """numpy, imported on first use: the server process imports _batch without it."""
    global _numpy, _DTYPES, _DTYPE_NAMES, _CODES
    if _numpy is None:
        import numpy
        dtypes = tuple(numpy.dtype(c) for c in ("float32", "float64", "float16", "int8",
                                                 "uint8", "int16", "uint16", "int32",
                                                 "uint32", "int64", "uint64", "bool",
                                                 "complex64", "complex128"))
        _DTYPES = dtypes
        _DTYPE_NAMES = tuple(d.name for d in dtypes)
        _CODES = {(d.kind, d.itemsize): code for code, d in enumerate(dtypes)}
        _numpy = numpy
    return _numpy


cdef int _code_of(dtype) except -2:
    """The code of a numpy dtype, or -1 when these codecs do not carry it."""
    _np()
    return _CODES.get((dtype.kind, dtype.itemsize), -1)


# -- the parsed form of one request ---------------------------------------------------------

cdef enum:
    KIND_RAW = 0       # bytes in native order, C order: memcpy
    KIND_JSON = 1      # a JSON array of numbers, converted while it was checked: _floats
    KIND_NUMPY = 2     # other byte order or Fortran order: numpy converts at collate time


cdef class ParsedTensors:
    """One request's inputs, checked, with their dtype, shape and where their values lie.

    ``signature`` is hashable and equal for items ``collate`` can stack; ``names`` holds a
    name or None per input; ``len()`` is the number of inputs. A JSON input's numbers are
    converted as they are checked and kept here; an NDList or npz input's bytes stay in the
    payload, whose buffer is held (a bytearray cannot be resized) until this object goes
    away.
    """

    cdef Py_buffer _view
    cdef bint _has_view
    cdef readonly int format
    cdef readonly tuple signature
    cdef readonly tuple names
    cdef list _bases       # per input: the object whose buffer holds its data
    cdef list _offsets     # per input: where its data starts (RAW/NUMPY; 0 for JSON)
    cdef list _sizes       # per input: data bytes (RAW/NUMPY) or number count (JSON)
    cdef float* _floats    # a JSON input's values, row-major (one pass reads and converts)
    cdef Py_ssize_t _nfloats
    cdef Py_ssize_t _floats_cap
    cdef list _kinds
    cdef list _orders      # per input: (byte order char, fortran) for KIND_NUMPY
    cdef list _sig         # signature and names while parsing
    cdef list _names

    def __cinit__(self):
        self._has_view = False
        self._floats = NULL
        self._nfloats = 0
        self._floats_cap = 0

    def __init__(self):
        raise TypeError("ParsedTensors come from parse_tensors()")

    def __dealloc__(self):
        if self._has_view:
            PyBuffer_Release(&self._view)
            self._has_view = False
        PyMem_Free(self._floats)
        self._floats = NULL

    def __len__(self):
        return len(self.signature)

    def __repr__(self):
        return f"ParsedTensors(format={self.format}, signature={self.signature!r})"

    def arrays(self):
        """The inputs as fresh, writable numpy arrays (native byte order)."""
        return [batch[0, ...] for batch in collate((self,))]

    cdef void _add(self, int code, tuple shape, name, base, Py_ssize_t offset,
                   Py_ssize_t size, int kind, order):
        self._bases.append(base)
        self._offsets.append(offset)
        self._sizes.append(size)
        self._kinds.append(kind)
        self._orders.append(order)
        self._sig.append((_DTYPE_NAMES[code], shape))
        self._names.append(name)


cdef int _push_float(ParsedTensors p, float value) except -1:
    cdef Py_ssize_t cap
    cdef float* grown
    if p._nfloats == p._floats_cap:
        cap = p._floats_cap * 2 if p._floats_cap else 256
        grown = <float*>PyMem_Realloc(p._floats, cap * sizeof(float))
        if grown == NULL:
            raise MemoryError()
        p._floats = grown
        p._floats_cap = cap
    p._floats[p._nfloats] = value
    p._nfloats += 1
    return 0


cdef ParsedTensors _new_parsed(payload, int fmt):
    cdef ParsedTensors p = ParsedTensors.__new__(ParsedTensors)
    _np()
    try:
        PyObject_GetBuffer(payload, &p._view, PyBUF_SIMPLE)
    except (TypeError, BufferError) as exc:
        raise TypeError(f"payload must be a contiguous bytes-like object, not "
                        f"{type(payload).__name__}") from exc
    p._has_view = True
    p.format = fmt
    p._bases = []
    p._offsets = []
    p._sizes = []
    p._kinds = []
    p._orders = []
    p._sig = []
    p._names = []
    return p


cdef void _finish(ParsedTensors p):
    p.signature = tuple(p._sig)
    p.names = tuple(p._names)
    p._sig = None
    p._names = None


def parse_tensors(payload, int fmt):
    """Check one request's payload and record its inputs (see ParsedTensors)."""
    cdef ParsedTensors p = _new_parsed(payload, fmt)
    if fmt == FORMAT_JSON:
        _parse_json(p, payload)
    elif fmt == FORMAT_NDLIST:
        _parse_ndlist(p, payload, False)
    elif fmt == FORMAT_NPZ:
        _parse_npz(p, payload)
    else:
        raise ValueError(f"unknown tensor format {fmt}")
    _finish(p)
    return p


def parse_ndlist_any(payload):
    """Like ``parse_tensors(payload, FORMAT_NDLIST)`` but an NDList of no arrays is
    accepted (``djl.ndlist.decode_ndlist`` returns ``[]`` for it)."""
    cdef ParsedTensors p = _new_parsed(payload, FORMAT_NDLIST)
    _parse_ndlist(p, payload, True)
    _finish(p)
    return p


# -- JSON in ------------------------------------------------------------------------------

cdef inline bint _digit(unsigned char c) noexcept nogil:
    return c >= 48 and c <= 57


cdef inline Py_ssize_t _skip_ws(const unsigned char* s, Py_ssize_t pos,
                                Py_ssize_t end) noexcept nogil:
    while pos < end and (s[pos] == 32 or s[pos] == 10 or s[pos] == 13 or s[pos] == 9):
        pos += 1
    return pos


cdef inline bint _literal(const unsigned char* s, Py_ssize_t pos, Py_ssize_t end,
                          const char* word, Py_ssize_t n) noexcept nogil:
    return end - pos >= n and memcmp(s + pos, word, n) == 0


cdef Py_ssize_t _scan_number(const unsigned char* s, Py_ssize_t pos,
                             Py_ssize_t end) noexcept nogil:
    """End of the JSON number (or NaN, Infinity, -Infinity) at pos; -1 if there is none."""
    cdef Py_ssize_t start
    if pos < end and s[pos] == 78:  # N
        return pos + 3 if _literal(s, pos, end, "NaN", 3) else -1
    if pos < end and s[pos] == 45:  # -
        pos += 1
    if pos < end and s[pos] == 73:  # I
        return pos + 8 if _literal(s, pos, end, "Infinity", 8) else -1
    if pos >= end or not _digit(s[pos]):
        return -1
    if s[pos] == 48:
        pos += 1
    else:
        while pos < end and _digit(s[pos]):
            pos += 1
    if pos < end and s[pos] == 46:  # .
        pos += 1
        start = pos
        while pos < end and _digit(s[pos]):
            pos += 1
        if pos == start:
            return -1
    if pos < end and (s[pos] == 101 or s[pos] == 69):  # e E
        pos += 1
        if pos < end and (s[pos] == 43 or s[pos] == 45):
            pos += 1
        start = pos
        while pos < end and _digit(s[pos]):
            pos += 1
        if pos == start:
            return -1
    return pos


cdef double[23] _POW10
_POW10[:] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13,
             1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22]

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    /* The 128-bit product of two 64-bit words (Eisel-Lemire needs the high half). */
    static inline uint64_t djl_mul64(uint64_t a, uint64_t b, uint64_t *lo) {
        unsigned __int128 p = (unsigned __int128)a * b;
        *lo = (uint64_t)p;
        return (uint64_t)(p >> 64);
    }
    static inline double djl_bits_to_double(uint64_t bits) {
        double d;
        memcpy(&d, &bits, 8);
        return d;
    }
    """
    uint64_t djl_mul64(uint64_t a, uint64_t b, uint64_t* lo) noexcept nogil
    double djl_bits_to_double(uint64_t bits) noexcept nogil
    int __builtin_clzll(unsigned long long) noexcept nogil

# 10**e for e in [-348, 347] as 128-bit mantissas rounded down (hi, lo), the table of the
# Eisel-Lemire algorithm (Lemire, "Number Parsing at a Gigabyte per Second", 2021).
cdef enum:
    _P10_MIN = -348
    _P10_MAX = 347
cdef uint64_t _P10_HI[696]
cdef uint64_t _P10_LO[696]


cdef _pow10_table():
    for e in range(_P10_MIN, _P10_MAX + 1):
        if e >= 0:
            v = 10 ** e
            shift = v.bit_length() - 128
            m = v >> shift if shift >= 0 else v << -shift
        else:
            d = 10 ** -e
            m = (1 << (d.bit_length() + 127)) // d
        _P10_HI[e - _P10_MIN] = m >> 64
        _P10_LO[e - _P10_MIN] = m & 0xFFFFFFFFFFFFFFFF


_pow10_table()


cdef bint _eisel_lemire(uint64_t man, int e10, double* out) noexcept nogil:
    """man * 10**e10 correctly rounded to a double; False where it cannot tell (rare)."""
    cdef int clz
    cdef uint64_t ret_exp2, x_hi, x_lo, y_hi, y_lo, merged_hi, merged_lo, msb, mantissa
    if man == 0:
        out[0] = 0.0
        return True
    if e10 < _P10_MIN or e10 > _P10_MAX:
        return False
    clz = __builtin_clzll(man)
    man <<= clz
    ret_exp2 = <uint64_t>(((217706 * e10) >> 16) + 64 + 1023) - <uint64_t>clz
    x_hi = djl_mul64(man, _P10_HI[e10 - _P10_MIN], &x_lo)
    if (x_hi & 0x1FF) == 0x1FF and x_lo + man < man:
        y_hi = djl_mul64(man, _P10_LO[e10 - _P10_MIN], &y_lo)
        merged_hi = x_hi
        merged_lo = x_lo + y_hi
        if merged_lo < x_lo:
            merged_hi += 1
        if (merged_hi & 0x1FF) == 0x1FF and merged_lo + 1 == 0 and y_lo + man < man:
            return False
        x_hi = merged_hi
        x_lo = merged_lo
    msb = x_hi >> 63
    mantissa = x_hi >> (msb + 9)
    ret_exp2 -= 1 ^ msb
    if x_lo == 0 and (x_hi & 0x1FF) == 0 and (mantissa & 3) == 1:
        return False
    mantissa += mantissa & 1
    mantissa >>= 1
    if mantissa >> 53:
        mantissa >>= 1
        ret_exp2 += 1
    if ret_exp2 - 1 >= 0x7FF - 1:  # subnormal or infinite: the slow path decides
        return False
    out[0] = djl_bits_to_double((ret_exp2 << 52) | (mantissa & ((<uint64_t>1 << 52) - 1)))
    return True


cdef Py_ssize_t _read_number(const unsigned char* s, Py_ssize_t pos, Py_ssize_t end,
                             double* out) except -2:
    """``_scan_number`` and the token's value, correctly rounded, in one pass: the end of
    the JSON number at pos (its value in out), or -1 where there is none."""
    cdef bint neg = False
    cdef uint64_t mant = 0
    cdef int digits = 0
    cdef long e10 = 0
    cdef long ex = 0
    cdef bint ex_neg = False
    cdef Py_ssize_t p = pos, start, stop
    if p < end and s[p] == 45:
        neg = True
        p += 1
    if p >= end or not _digit(s[p]):  # NaN, Infinity, -Infinity, or no number
        stop = _scan_number(s, pos, end)
        if stop >= 0:
            out[0] = float("nan") if s[pos] == 78 else (float("-inf") if neg else float("inf"))
        return stop
    if s[p] == 48:
        p += 1
    else:
        while p < end and _digit(s[p]):
            digits += 1
            if digits <= 19:
                mant = mant * 10 + (s[p] - 48)
            else:
                e10 += 1
            p += 1
    if p < end and s[p] == 46:  # .
        p += 1
        start = p
        while p < end and _digit(s[p]):
            if mant or s[p] != 48:
                digits += 1
                if digits <= 19:
                    mant = mant * 10 + (s[p] - 48)
                    e10 -= 1
            else:
                e10 -= 1
            p += 1
        if p == start:
            return -1
    if p < end and (s[p] == 101 or s[p] == 69):  # e E
        p += 1
        if p < end and (s[p] == 45 or s[p] == 43):
            ex_neg = s[p] == 45
            p += 1
        start = p
        while p < end and _digit(s[p]):
            if ex < 100000:
                ex = ex * 10 + (s[p] - 48)
            p += 1
        if p == start:
            return -1
        e10 = e10 - ex if ex_neg else e10 + ex
    stop = p
    out[0] = _compose(neg, mant, digits, e10, s, pos, stop)
    return stop


cdef double _compose(bint neg, uint64_t mant, int digits, long e10, const unsigned char* s,
                     Py_ssize_t pos, Py_ssize_t stop) except? -1.0:
    """The value of the number token s[pos:stop], read as ``mant * 10**e10`` (its first 19
    significant digits of ``digits``), correctly rounded."""
    cdef char small[64]
    cdef double value, upper
    if mant == 0:
        return -0.0 if neg else 0.0
    if digits <= 19 and mant <= (<uint64_t>1 << 53) and -22 <= e10 <= 22:
        # Clinger's fast path: both operands exact, so one IEEE operation rounds correctly.
        value = <double>mant
        value = value * _POW10[e10] if e10 >= 0 else value / _POW10[-e10]
        return -value if neg else value
    if -400 < e10 < 400:
        if digits <= 19:
            if _eisel_lemire(mant, <int>e10, &value):
                return -value if neg else value
        elif mant != <uint64_t>0 - 1:
            # truncated to 19 digits: the value lies in [mant, mant + 1) * 10**e10
            if (_eisel_lemire(mant, <int>e10, &value)
                    and _eisel_lemire(mant + 1, <int>e10, &upper) and value == upper):
                return -value if neg else value
    if stop - pos < 63:
        memcpy(small, s + pos, stop - pos)
        small[stop - pos] = 0
        return PyOS_string_to_double(small, NULL, NULL)
    token = PyBytes_FromStringAndSize(<const char*>s + pos, stop - pos)
    return PyOS_string_to_double(PyBytes_AS_STRING(token), NULL, NULL)


cdef class _JsonScan:
    """One pass over a JSON payload: checks it, finds the array's shape and converts its
    numbers into ``out``'s float buffer (so collating is a copy)."""

    cdef ParsedTensors out
    cdef const unsigned char* s
    cdef Py_ssize_t end
    cdef int ndim
    cdef Py_ssize_t shape[_MAX_JSON_DEPTH]
    cdef Py_ssize_t path[_MAX_JSON_DEPTH]

    cdef fail(self, str message, Py_ssize_t pos):
        if pos >= self.end:
            raise BadInput(f"JSON input: {message}: the payload ends at byte {self.end}")
        raise BadInput(f"JSON input: {message} at byte {pos}")

    cdef str where(self, int depth):
        if depth == 1:
            return f"row {self.path[0]}"
        return "array at " + "".join([f"[{self.path[i]}]" for i in range(depth)])

    cdef str first(self, int depth):
        if depth == 1:
            return "row 0"
        return "".join(["[0]" for _ in range(depth)])

    cdef str element(self, int depth):
        return "".join([f"[{self.path[i]}]" for i in range(depth)])

    cdef Py_ssize_t array(self, Py_ssize_t pos, int depth) except -1:
        """Check the array of numbers at pos (a '['); the position after it."""
        cdef const unsigned char* s = self.s
        cdef Py_ssize_t count = 0
        cdef Py_ssize_t stop
        cdef double value
        if depth >= _MAX_JSON_DEPTH:
            self.fail(f"arrays nested deeper than {_MAX_JSON_DEPTH}", pos)
        pos = _skip_ws(s, pos + 1, self.end)
        if pos < self.end and s[pos] == 93:
            if depth == 0:
                self.fail("empty array", pos)
            self.fail(f"{self.where(depth)} is empty", pos)
        while True:
            pos = _skip_ws(s, pos, self.end)
            self.path[depth] = count
            if pos < self.end and s[pos] == 91:  # [
                if self.ndim and depth + 1 >= self.ndim:
                    self.fail(f"element {self.element(depth + 1)} is an array where a "
                              "number was expected", pos)
                pos = self.array(pos, depth + 1)
            else:
                stop = _read_number(s, pos, self.end, &value)
                if stop < 0:
                    self.fail("expected a number", pos)
                if not self.ndim:
                    self.ndim = depth + 1
                elif depth + 1 != self.ndim:
                    self.fail(f"element {self.element(depth + 1)} is a number where an "
                              "array was expected", pos)
                _push_float(self.out, <float>value)
                pos = stop
            count += 1
            pos = _skip_ws(s, pos, self.end)
            if pos < self.end and s[pos] == 44:  # ,
                pos += 1
                continue
            if pos < self.end and s[pos] == 93:  # ]
                pos += 1
                break
            self.fail("expected ',' or ']'", pos)
        if self.shape[depth] < 0:
            self.shape[depth] = count
        elif self.shape[depth] != count:
            raise BadInput(f"JSON input: {self.where(depth)} has {_values(count)}, "
                           f"{self.first(depth)} has {_values(self.shape[depth])}")
        return pos

    cdef Py_ssize_t string(self, Py_ssize_t pos) except -1:
        """Check the string at pos (a '"'), escapes and UTF-8; the position after it."""
        cdef const unsigned char* s = self.s
        cdef unsigned char c
        cdef int need = 0, k
        cdef uint64_t cp = 0
        pos += 1
        while True:
            if pos >= self.end:
                self.fail("unterminated string", pos)
            c = s[pos]
            if c == 34:  # "
                return pos + 1
            if c == 92:  # backslash
                if pos + 1 >= self.end:
                    self.fail("unterminated string", pos + 1)
                c = s[pos + 1]
                if c == 117:  # u
                    for k in range(4):
                        if pos + 2 + k >= self.end or s[pos + 2 + k] not in b"0123456789abcdefABCDEF":
                            self.fail("invalid \\u escape", pos)
                    pos += 6
                elif c in b'"\\/bfnrt':
                    pos += 2
                else:
                    self.fail("invalid escape in a string", pos)
            elif c < 32:
                self.fail("control character in a string", pos)
            elif c < 128:
                pos += 1
            else:
                if c >= 0xF0 and c <= 0xF4:
                    need = 3
                    cp = c & 0x07
                elif c >= 0xE0 and c <= 0xEF:
                    need = 2
                    cp = c & 0x0F
                elif c >= 0xC2 and c <= 0xDF:
                    need = 1
                    cp = c & 0x1F
                else:
                    self.fail("invalid UTF-8", pos)
                if pos + need >= self.end:
                    self.fail("invalid UTF-8", pos)
                for k in range(1, need + 1):
                    if s[pos + k] & 0xC0 != 0x80:
                        self.fail("invalid UTF-8", pos)
                    cp = (cp << 6) | (s[pos + k] & 0x3F)
                if ((need == 2 and (cp < 0x800 or 0xD800 <= cp <= 0xDFFF))
                        or (need == 3 and (cp < 0x10000 or cp > 0x10FFFF))):
                    self.fail("invalid UTF-8", pos)
                pos += need + 1

    cdef Py_ssize_t value(self, Py_ssize_t pos, int depth) except -1:
        """Check (and skip) any JSON value at pos; the position after it."""
        cdef const unsigned char* s = self.s
        cdef Py_ssize_t stop
        cdef unsigned char close
        pos = _skip_ws(s, pos, self.end)
        if depth >= _MAX_SKIP_DEPTH:
            self.fail(f"values nested deeper than {_MAX_SKIP_DEPTH}", pos)
        if pos >= self.end:
            self.fail("expected a value", pos)
        if s[pos] == 34:
            return self.string(pos)
        if s[pos] == 91 or s[pos] == 123:  # [ {
            close = 93 if s[pos] == 91 else 125
            pos = _skip_ws(s, pos + 1, self.end)
            if pos < self.end and s[pos] == close:
                return pos + 1
            while True:
                if close == 125:
                    pos = _skip_ws(s, pos, self.end)
                    if pos >= self.end or s[pos] != 34:
                        self.fail("expected a string key", pos)
                    pos = _skip_ws(s, self.string(pos), self.end)
                    if pos >= self.end or s[pos] != 58:
                        self.fail("expected ':'", pos)
                    pos += 1
                pos = _skip_ws(s, self.value(pos, depth + 1), self.end)
                if pos < self.end and s[pos] == 44:
                    pos += 1
                elif pos < self.end and s[pos] == close:
                    return pos + 1
                else:
                    self.fail("expected ',' or ']'" if close == 93 else "expected ',' or '}'",
                              pos)
        if s[pos] == 116 and _literal(s, pos, self.end, "true", 4):
            return pos + 4
        if s[pos] == 102 and _literal(s, pos, self.end, "false", 5):
            return pos + 5
        if s[pos] == 110 and _literal(s, pos, self.end, "null", 4):
            return pos + 4
        stop = _scan_number(s, pos, self.end)
        if stop < 0:
            self.fail("expected a value", pos)
        return stop


cdef str _values(Py_ssize_t n):
    return "1 value" if n == 1 else f"{n} values"


cdef _parse_json(ParsedTensors p, payload):
    cdef _JsonScan scan = _JsonScan.__new__(_JsonScan)
    cdef const unsigned char* s = <const unsigned char*>p._view.buf
    cdef Py_ssize_t end = p._view.len
    cdef Py_ssize_t pos, key_start, start = -1, inputs = -1, instance = -1
    cdef Py_ssize_t i, count
    scan.out = p
    scan.s = s
    scan.end = end
    scan.ndim = 0
    for i in range(_MAX_JSON_DEPTH):
        scan.shape[i] = -1
    pos = _skip_ws(s, 0, end)
    if pos < end and s[pos] == 123:  # {: find "inputs" / "instance" (the last of each wins)
        pos = _skip_ws(s, pos + 1, end)
        if pos < end and s[pos] == 125:
            pos += 1
        else:
            while True:
                pos = _skip_ws(s, pos, end)
                if pos >= end or s[pos] != 34:
                    scan.fail("expected a string key", pos)
                key_start = pos
                pos = scan.string(pos)
                key = _json_key(s, key_start, pos)
                pos = _skip_ws(s, pos, end)
                if pos >= end or s[pos] != 58:
                    scan.fail("expected ':'", pos)
                pos = _skip_ws(s, pos + 1, end)
                if key == "inputs":
                    inputs = pos
                elif key == "instance":
                    instance = pos
                pos = _skip_ws(s, scan.value(pos, 1), end)
                if pos < end and s[pos] == 44:
                    pos += 1
                elif pos < end and s[pos] == 125:
                    pos += 1
                    break
                else:
                    scan.fail("expected ',' or '}'", pos)
        if _skip_ws(s, pos, end) != end:
            scan.fail("unexpected data after the JSON value", _skip_ws(s, pos, end))
        start = inputs if inputs >= 0 else instance
        if start < 0:
            raise BadInput('JSON input: the object has no "inputs" (or "instance") key')
        if s[start] != 91:
            key = "inputs" if inputs >= 0 else "instance"
            raise BadInput(f'JSON input: "{key}" is not an array of numbers '
                           f"(at byte {start})")
        scan.array(start, 0)
    elif pos < end and s[pos] == 91:
        start = pos
        pos = _skip_ws(s, scan.array(pos, 0), end)
        if pos != end:
            scan.fail("unexpected data after the JSON array", pos)
    elif pos >= end:
        raise BadInput("JSON input: the payload is empty")
    else:
        scan.fail('expected an array of numbers or an object with "inputs"', pos)
    shape = tuple([scan.shape[i] for i in range(scan.ndim)])
    count = 1
    for i in range(scan.ndim):
        count *= scan.shape[i]
    if count != p._nfloats:  # never, given the checks: collate copies count values
        raise BadInput(f"JSON input: read {p._nfloats} numbers for shape {list(shape)}")
    p._add(DT_F32, shape, None, None, 0, count, KIND_JSON, None)


cdef str _json_key(const unsigned char* s, Py_ssize_t start, Py_ssize_t stop):
    """The text of the checked string token s[start:stop] (with its quotes)."""
    cdef Py_ssize_t i
    raw = PyBytes_FromStringAndSize(<const char*>s + start + 1, stop - start - 2)
    if b"\\" not in raw:
        return raw.decode("utf-8")
    import json
    return json.loads(PyBytes_FromStringAndSize(<const char*>s + start, stop - start))


# -- NDList in ----------------------------------------------------------------------------

cdef class _TensorReader:
    """Bounds-checked big-endian reads; failures name the array and the byte offset."""

    cdef const unsigned char* s
    cdef Py_ssize_t end
    cdef Py_ssize_t pos
    cdef Py_ssize_t array
    cdef str label

    cdef fail(self, str message):
        if self.label == "NDList":
            where = "NDList header" if self.array < 0 else f"NDList array {self.array}"
            raise BadInput(f"Malformed NDList data: {where}: {message} (at byte {self.pos})")
        raise BadInput(f"{self.label}: {message} (at byte {self.pos})")

    cdef Py_ssize_t take(self, Py_ssize_t size, str what) except -1:
        cdef Py_ssize_t at = self.pos
        if size > self.end - self.pos:
            self.fail(f"truncated {what}: need {size} bytes, {self.end - self.pos} left")
        self.pos += size
        return at

    cdef uint64_t be(self, int size, str what) except? 0:
        cdef Py_ssize_t at = self.take(size, what)
        cdef uint64_t v = 0
        cdef int i
        for i in range(size):
            v = (v << 8) | self.s[at + i]
        return v

    cdef int i32(self, str what) except? -1:
        return <int>(<uint32_t>self.be(4, what))

    cdef str string(self, str what):
        cdef Py_ssize_t length = <Py_ssize_t>self.be(2, f"{what} length")
        cdef Py_ssize_t at = self.take(length, what)
        try:
            return PyBytes_FromStringAndSize(<const char*>self.s + at, length).decode("utf-8")
        except UnicodeDecodeError:
            self.fail(f"{what} is not valid UTF-8")


cdef int64_t _checked_size(_TensorReader r, tuple shape, int itemsize) except -1:
    """Elements of shape; fails when numpy could not allocate even an empty array of it."""
    cdef int64_t size = 1
    cdef int64_t bound = 1
    cdef int64_t limit = INT64_MAX // itemsize
    for dim in shape:
        if dim:
            if <int64_t>dim > limit // bound:
                r.fail(f"shape {shape} is too large")
            bound *= <int64_t>dim
        size *= <int64_t>dim
    return size


cdef _parse_ndlist(ParsedTensors p, payload, bint allow_empty):
    cdef _TensorReader r = _TensorReader.__new__(_TensorReader)
    cdef int count, index, version, ndim, code, layout_len, flag
    cdef Py_ssize_t at
    cdef int64_t size, nbytes
    cdef unsigned char order
    r.s = <const unsigned char*>p._view.buf
    r.end = p._view.len
    r.pos = 0
    r.array = -1
    r.label = "NDList"
    count = r.i32("array count")
    if count < 0:
        r.fail(f"negative array count {count}")
    if count == 0 and not allow_empty:
        r.fail("no arrays")
    for index in range(count):
        r.array = index
        magic = r.string("magic")
        if magic != "NDAR":
            r.fail(f"expected magic 'NDAR', got {magic!r}")
        version = r.i32("version")
        if not 1 <= version <= 3:
            r.fail(f"unsupported encode version {version}")
        name = None
        if version > 1:
            flag = <int>r.be(1, "name flag")
            if flag == 1:
                name = r.string("name")
            elif flag != 0:
                r.fail(f"invalid name flag {flag}")
        r.string("sparse format")  # ignored, as Java does
        dtype_name = r.string("dtype")
        code = _NDLIST_CODES.get(dtype_name.upper(), -1)
        if code < 0:
            r.fail(f"unsupported dtype {dtype_name!r}")
        ndim = r.i32("ndim")
        if not 0 <= ndim <= _MAX_NDIM:
            r.fail(f"invalid ndim {ndim}")
        dims = []
        for _ in range(ndim):
            dims.append(<int64_t>r.be(8, "shape"))
        shape = tuple(dims)
        for dim in shape:
            if dim < 0:
                r.fail(f"negative dimension in shape {shape}")
        layout_len = r.i32("layout length")
        if layout_len < 0:
            r.fail(f"negative layout length {layout_len}")
        r.take(2 * <Py_ssize_t>layout_len, "layout")
        order = 60  # '<'
        if version > 2:
            order = <unsigned char>r.be(1, "byte order")
            if order != 60 and order != 62:
                r.fail(f"invalid byte order {chr(order)!r}")
        nbytes = r.i32("data length")
        size = _checked_size(r, shape, _ITEMSIZE[code])
        if nbytes != size * _ITEMSIZE[code]:
            r.fail(f"data length {nbytes} does not match {dtype_name} shape {shape}")
        at = r.take(nbytes, "data")
        if order == 62 and _ITEMSIZE[code] > 1 and code != DT_BOOL:
            p._add(code, shape, name, payload, at, nbytes, KIND_NUMPY, (">", False))
        else:
            p._add(code, shape, name, payload, at, nbytes, KIND_RAW, None)
    r.array = -1
    if r.pos != r.end:
        r.fail(f"{r.end - r.pos} unexpected bytes after {count} arrays")


# -- npz in -------------------------------------------------------------------------------

cdef uint64_t _read_le(const unsigned char* s, Py_ssize_t at, int size) noexcept nogil:
    cdef uint64_t v = 0
    cdef int i
    for i in range(size - 1, -1, -1):
        v = (v << 8) | s[at + i]
    return v


cdef _parse_npz(ParsedTensors p, payload):
    cdef const unsigned char* s = <const unsigned char*>p._view.buf
    cdef Py_ssize_t end = p._view.len
    cdef Py_ssize_t eocd = -1, at, data_at, i, lo, hi
    cdef uint64_t entries, cd_size, cd_offset, csize, usize, offset, crc
    cdef int method, flags, nlen, elen, clen, k, field, flen
    if end < 4 or memcmp(s, b"PK", 2) != 0:
        raise BadInput("npz input: not a zip archive (no 'PK' signature at byte 0)")
    lo = end - 22 - 65535 if end > 22 + 65535 else 0
    i = end - 22
    while i >= lo:
        if s[i] == 0x50 and s[i + 1] == 0x4B and s[i + 2] == 5 and s[i + 3] == 6:
            eocd = i
            break
        i -= 1
    if eocd < 0:
        raise BadInput("npz input: truncated archive: no end of central directory record")
    entries = _read_le(s, eocd + 10, 2)
    cd_size = _read_le(s, eocd + 12, 4)
    cd_offset = _read_le(s, eocd + 16, 4)
    if entries == 0xFFFF or cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF:
        at = eocd - 20  # zip64 end of central directory locator
        if at < 0 or memcmp(s + at, b"PK\x06\x07", 4) != 0:
            raise BadInput("npz input: truncated zip64 archive: no zip64 locator")
        offset = _read_le(s, at + 8, 8)
        if end < 56 or offset > <uint64_t>(end - 56) or memcmp(s + offset, b"PK\x06\x06", 4) != 0:
            raise BadInput(f"npz input: no zip64 end of central directory at byte {offset}")
        entries = _read_le(s, offset + 32, 8)
        cd_size = _read_le(s, offset + 40, 8)
        cd_offset = _read_le(s, offset + 48, 8)
    if cd_offset > <uint64_t>eocd or cd_size > <uint64_t>eocd - cd_offset:
        raise BadInput(f"npz input: central directory at byte {cd_offset} ({cd_size} bytes) "
                       f"lies outside the archive")
    if entries == 0:
        raise BadInput("npz input: the archive holds no arrays")
    at = <Py_ssize_t>cd_offset
    for index in range(entries):
        if at + 46 > <Py_ssize_t>(cd_offset + cd_size) or memcmp(s + at, b"PK\x01\x02", 4) != 0:
            raise BadInput(f"npz input: central directory entry {index} is missing or "
                           f"corrupt (at byte {at})")
        flags = <int>_read_le(s, at + 8, 2)
        method = <int>_read_le(s, at + 10, 2)
        crc = _read_le(s, at + 16, 4)
        csize = _read_le(s, at + 20, 4)
        usize = _read_le(s, at + 24, 4)
        nlen = <int>_read_le(s, at + 28, 2)
        elen = <int>_read_le(s, at + 30, 2)
        clen = <int>_read_le(s, at + 32, 2)
        offset = _read_le(s, at + 42, 4)
        if at + 46 + nlen + elen + clen > <Py_ssize_t>(cd_offset + cd_size):
            raise BadInput(f"npz input: central directory entry {index} is truncated")
        raw_name = PyBytes_FromStringAndSize(<const char*>s + at + 46, nlen)
        name = raw_name.decode("utf-8" if flags & 0x800 else "cp437", "replace")
        k = 0  # zip64 extra field: the sizes and offset that did not fit in 32 bits
        while k + 4 <= elen:
            field = <int>_read_le(s, at + 46 + nlen + k, 2)
            flen = <int>_read_le(s, at + 48 + nlen + k, 2)
            if field == 1:
                lo = at + 50 + nlen + k
                hi = lo + flen
                if usize == 0xFFFFFFFF and lo + 8 <= hi:
                    usize = _read_le(s, lo, 8)
                    lo += 8
                if csize == 0xFFFFFFFF and lo + 8 <= hi:
                    csize = _read_le(s, lo, 8)
                    lo += 8
                if offset == 0xFFFFFFFF and lo + 8 <= hi:
                    offset = _read_le(s, lo, 8)
            k += 4 + flen
        at += 46 + nlen + elen + clen
        if flags & 1:
            raise BadInput(f"npz input: entry {name!r} is encrypted")
        if end < 30 or offset > <uint64_t>(end - 30) or memcmp(s + offset, b"PK\x03\x04", 4) != 0:
            raise BadInput(f"npz input: entry {name!r}: no local header at byte {offset}")
        data_at = <Py_ssize_t>(offset + 30 + _read_le(s, offset + 26, 2) + _read_le(s, offset + 28, 2))
        if data_at > end or csize > <uint64_t>(end - data_at):
            raise BadInput(f"npz input: entry {name!r} is truncated: {csize} bytes claimed "
                           f"at byte {data_at}, the archive has {end} bytes")
        if method == 0:
            if usize != csize:
                raise BadInput(f"npz input: stored entry {name!r} has sizes {csize} and "
                               f"{usize}")
            base, base_at = payload, data_at
        elif method == 8:
            # deflate expands at most ~1032:1, so the claim is bounded by the payload
            if usize > csize * 1032 + 1024:
                raise BadInput(f"npz input: entry {name!r} claims {usize} bytes from {csize} "
                               f"compressed bytes")
            inflater = zlib.decompressobj(-15)
            try:
                # (max_length 0 would mean "no limit", so an empty entry asks for 1)
                base = inflater.decompress(
                    memoryview(payload).cast("B")[data_at:data_at + csize], usize or 1)
            except zlib.error as exc:
                raise BadInput(f"npz input: entry {name!r} is corrupt: {exc}") from None
            if len(base) != usize or not inflater.eof:
                raise BadInput(f"npz input: entry {name!r} is corrupt: it inflates to "
                               f"{len(base)} bytes, not {usize}")
            base_at = 0
        else:
            raise BadInput(f"npz input: entry {name!r} uses unsupported compression {method}")
        view = memoryview(base).cast("B")[base_at:base_at + usize]
        if zlib.crc32(view) != crc:
            raise BadInput(f"npz input: entry {name!r} fails its CRC check")
        _parse_npy(p, name, base, base_at, <Py_ssize_t>usize)


cdef _parse_npy(ParsedTensors p, str name, base, Py_ssize_t at, Py_ssize_t size):
    """One .npy entry of base[at:at+size]: check its header and record its data."""
    cdef Py_buffer view
    cdef const unsigned char* s
    cdef Py_ssize_t hlen, header_at, data_at
    cdef int major, code
    cdef int64_t count
    cdef _TensorReader r
    label = f"npz input: entry {name!r}"
    if not name.endswith(".npy"):
        raise BadInput(f"{label} is not a .npy array")
    PyObject_GetBuffer(base, &view, PyBUF_SIMPLE)
    try:
        s = <const unsigned char*>view.buf + at
        if size < 10 or memcmp(s, b"\x93NUMPY", 6) != 0:
            raise BadInput(f"{label}: not a .npy array (bad magic)")
        major = s[6]
        if major == 1:
            hlen = <Py_ssize_t>_read_le(s, 8, 2)
            header_at = 10
        elif major == 2 or major == 3:
            if size < 12:
                raise BadInput(f"{label}: truncated .npy header")
            hlen = <Py_ssize_t>_read_le(s, 8, 4)
            header_at = 12
        else:
            raise BadInput(f"{label}: unsupported .npy version {major}")
        if hlen > _MAX_NPY_HEADER or header_at + hlen > size:
            raise BadInput(f"{label}: .npy header of {hlen} bytes does not fit")
        header_bytes = PyBytes_FromStringAndSize(<const char*>s + header_at, hlen)
    finally:
        PyBuffer_Release(&view)
    data_at = at + header_at + hlen
    known = _NPY_HEADERS.get((major, header_bytes))
    if known is None:
        known = _npy_meaning(label, header_bytes, major)
        if len(_NPY_HEADERS) >= 1024:  # clients repeat a handful of headers
            _NPY_HEADERS.clear()
        _NPY_HEADERS[(major, header_bytes)] = known
    dtype, code, fortran, shape = known
    r = _TensorReader.__new__(_TensorReader)
    r.label = label
    r.pos = data_at
    count = _checked_size(r, shape, _ITEMSIZE[code])
    if count * _ITEMSIZE[code] != size - (data_at - at):
        raise BadInput(f"{label}: {size - (data_at - at)} data bytes, shape {shape} of "
                       f"{dtype.name} needs {count * _ITEMSIZE[code]}")
    swapped = dtype.byteorder == ">" and dtype.itemsize > 1
    stem = name[:len(name) - 4]
    nbytes = count * _ITEMSIZE[code]
    if swapped or (fortran and len(shape) > 1):
        p._add(code, shape, stem, base, data_at, nbytes, KIND_NUMPY,
               (">" if swapped else "<", bool(fortran)))
    else:
        p._add(code, shape, stem, base, data_at, nbytes, KIND_RAW, None)


#: (version, .npy header bytes) -> (dtype, code, fortran_order, shape), checked.
cdef dict _NPY_HEADERS = {}


cdef tuple _npy_meaning(str label, bytes raw, int major):
    descr, fortran, shape = _npy_header(label, raw, major)
    np = _np()
    try:
        dtype = np.dtype(descr)
    except (TypeError, ValueError):
        raise BadInput(f"{label}: unsupported dtype {descr!r}") from None
    code = _code_of(dtype) if dtype.fields is None and dtype.subdtype is None else -1
    if code < 0:
        raise BadInput(f"{label}: unsupported dtype {descr!r}")
    return dtype, code, fortran, shape


cdef tuple _npy_header(str label, bytes raw, int major):
    import ast
    try:
        text = raw.decode("utf-8" if major == 3 else "latin1")
        header = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError, UnicodeDecodeError):
        raise BadInput(f"{label}: the .npy header is not a Python literal") from None
    if (not isinstance(header, dict)
            or set(header) != {"descr", "fortran_order", "shape"}
            or not isinstance(header["fortran_order"], bool)
            or not isinstance(header["shape"], tuple)
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                       for d in header["shape"])
            or len(header["shape"]) > _MAX_NDIM
            or not isinstance(header["descr"], str)):
        raise BadInput(f"{label}: invalid .npy header {text[:200]!r}")
    return header["descr"], header["fortran_order"], header["shape"]


# -- collation ----------------------------------------------------------------------------

def collate(items):
    """Stack items of one signature: one C-contiguous array per input, shape (n, *shape).

    Each array is allocated once and filled straight from the payloads. Raises ValueError
    when the items' signatures differ or there are none.
    """
    cdef Py_ssize_t n = len(items)
    cdef ParsedTensors first, item
    cdef Py_ssize_t k, i, row_bytes, offset
    cdef Py_buffer dst, src
    cdef char* out
    cdef int kind, code
    if n == 0:
        raise ValueError("collate: no items")
    first = items[0]
    signature = first.signature
    for i in range(1, n):
        item = items[i]
        if item.signature is not signature and item.signature != signature:
            raise ValueError(f"collate: item {i} has signature {item.signature!r}, item 0 "
                             f"has {signature!r}")
    np = _np()
    result = []
    for k in range(len(signature)):
        dtype_name, shape = signature[k]
        try:
            batch = np.empty((n,) + shape, dtype=dtype_name)
        except (ValueError, MemoryError) as exc:
            raise BadInput(f"input {k} of shape {shape}: {exc}") from None
        code = _code_of(batch.dtype)
        row_bytes = batch.nbytes // n if n else 0
        PyObject_GetBuffer(batch, &dst, PyBUF_WRITABLE)
        try:
            out = <char*>dst.buf
            for i in range(n):
                item = items[i]
                kind = item._kinds[k]
                offset = item._offsets[k]
                if kind == KIND_JSON:
                    if row_bytes:
                        memcpy(out + i * row_bytes, item._floats, row_bytes)
                elif kind == KIND_RAW:
                    if row_bytes == 0:
                        continue
                    PyObject_GetBuffer(item._bases[k], &src, PyBUF_SIMPLE)
                    try:
                        if offset + row_bytes > src.len:
                            raise BadInput("tensor input: the payload changed while it was "
                                           "being read")
                        if code == DT_BOOL:  # any non-zero byte is true, as DJL reads it
                            _copy_bools(<const unsigned char*>src.buf + offset,
                                        <unsigned char*>out + i * row_bytes, row_bytes)
                        else:
                            memcpy(out + i * row_bytes, <const char*>src.buf + offset,
                                   row_bytes)
                    finally:
                        PyBuffer_Release(&src)
                else:
                    order, fortran = item._orders[k]
                    flat = np.frombuffer(item._bases[k], batch.dtype.newbyteorder(order),
                                         row_bytes // batch.itemsize, offset)
                    if code == DT_BOOL:
                        flat = flat.view(np.uint8) != 0
                    batch[i] = (flat.reshape(shape[::-1]).T if fortran
                                else flat.reshape(shape))
        finally:
            PyBuffer_Release(&dst)
        result.append(batch)
    return result


cdef void _copy_bools(const unsigned char* src, unsigned char* dst, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        dst[i] = src[i] != 0


# -- output buffer --------------------------------------------------------------------------

cdef struct _TensorOut:
    char* data
    Py_ssize_t len
    Py_ssize_t cap


cdef int _out_reserve(_TensorOut* o, Py_ssize_t extra) except -1:
    cdef Py_ssize_t cap
    cdef char* grown
    if o.len + extra <= o.cap:
        return 0
    cap = o.cap * 2 if o.cap else 256
    while cap < o.len + extra:
        cap *= 2
    grown = <char*>PyMem_Realloc(o.data, cap)
    if grown == NULL:
        raise MemoryError()
    o.data = grown
    o.cap = cap
    return 0


cdef inline int _out_put(_TensorOut* o, const char* text, Py_ssize_t n) except -1:
    if o.len + n > o.cap:
        _out_reserve(o, n)
    memcpy(o.data + o.len, text, n)
    o.len += n
    return 0


cdef inline int _out_char(_TensorOut* o, char c) except -1:
    if o.len + 1 > o.cap:
        _out_reserve(o, 1)
    o.data[o.len] = c
    o.len += 1
    return 0


cdef int _out_be(_TensorOut* o, uint64_t v, int size) except -1:
    cdef int i
    _out_reserve(o, size)
    for i in range(size):
        o.data[o.len + i] = <char>((v >> (8 * (size - 1 - i))) & 0xFF)
    o.len += size
    return 0


cdef int _out_le(_TensorOut* o, uint64_t v, int size) except -1:
    cdef int i
    _out_reserve(o, size)
    for i in range(size):
        o.data[o.len + i] = <char>((v >> (8 * i)) & 0xFF)
    o.len += size
    return 0


cdef bytes _out_take(_TensorOut* o):
    result = PyBytes_FromStringAndSize(o.data, o.len)
    PyMem_Free(o.data)
    o.data = NULL
    o.len = 0
    o.cap = 0
    return result


# -- shortest float32 repr (Ryu, Ulf Adams 2018) ---------------------------------------------

cdef uint64_t _POW5_INV[64]
cdef uint64_t _POW5[64]


cdef _ryu_tables():
    for i in range(64):
        pow5 = 5 ** i
        bits = pow5.bit_length()
        shift = bits - 61
        _POW5[i] = pow5 >> shift if shift >= 0 else pow5 << -shift
        _POW5_INV[i] = ((1 << (bits - 1 + 59)) // pow5) + 1


_ryu_tables()


cdef inline int32_t _pow5bits(int32_t e) noexcept nogil:
    return <int32_t>(((<uint32_t>e * 1217359) >> 19) + 1)


cdef inline uint32_t _log10pow2(int32_t e) noexcept nogil:
    return (<uint32_t>e * 78913) >> 18


cdef inline uint32_t _log10pow5(int32_t e) noexcept nogil:
    return (<uint32_t>e * 732923) >> 20


cdef inline uint32_t _pow5factor(uint32_t value) noexcept nogil:
    cdef uint32_t count = 0
    while value % 5 == 0:
        value //= 5
        count += 1
    return count


cdef inline uint32_t _mulshift(uint32_t m, uint64_t factor, int32_t shift) noexcept nogil:
    cdef uint64_t bits0 = <uint64_t>m * <uint32_t>factor
    cdef uint64_t bits1 = <uint64_t>m * <uint32_t>(factor >> 32)
    cdef uint64_t total = (bits0 >> 32) + bits1
    return <uint32_t>(total >> (shift - 32))


cdef void _f2d(uint32_t ieee_m, uint32_t ieee_e, uint32_t* digits, int32_t* exponent) noexcept nogil:
    """Shortest decimal digits * 10**exponent that reads back as this float32."""
    cdef int32_t e2, e10, i, k, j, l, removed = 0
    cdef uint32_t m2, mv, mp, mm, mm_shift, vr, vp, vm, q, output
    cdef bint even, vm_tz = False, vr_tz = False
    cdef uint8_t last = 0
    if ieee_e == 0:
        e2 = 1 - 127 - 23 - 2
        m2 = ieee_m
    else:
        e2 = <int32_t>ieee_e - 127 - 23 - 2
        m2 = (1u << 23) | ieee_m
    even = (m2 & 1) == 0
    mv = 4 * m2
    mp = 4 * m2 + 2
    mm_shift = 1 if (ieee_m != 0 or ieee_e <= 1) else 0
    mm = 4 * m2 - 1 - mm_shift
    if e2 >= 0:
        q = _log10pow2(e2)
        e10 = <int32_t>q
        k = 59 + _pow5bits(<int32_t>q) - 1
        i = -e2 + <int32_t>q + k
        vr = _mulshift(mv, _POW5_INV[q], i)
        vp = _mulshift(mp, _POW5_INV[q], i)
        vm = _mulshift(mm, _POW5_INV[q], i)
        if q != 0 and (vp - 1) // 10 <= vm // 10:
            l = 59 + _pow5bits(<int32_t>(q - 1)) - 1
            last = <uint8_t>(_mulshift(mv, _POW5_INV[q - 1], -e2 + <int32_t>q - 1 + l) % 10)
        if q <= 9:
            if mv % 5 == 0:
                vr_tz = _pow5factor(mv) >= q
            elif even:
                vm_tz = _pow5factor(mm) >= q
            else:
                vp -= 1 if _pow5factor(mp) >= q else 0
    else:
        q = _log10pow5(-e2)
        e10 = <int32_t>q + e2
        i = -e2 - <int32_t>q
        k = _pow5bits(i) - 61
        j = <int32_t>q - k
        vr = _mulshift(mv, _POW5[i], j)
        vp = _mulshift(mp, _POW5[i], j)
        vm = _mulshift(mm, _POW5[i], j)
        if q != 0 and (vp - 1) // 10 <= vm // 10:
            j = <int32_t>q - 1 - (_pow5bits(i + 1) - 61)
            last = <uint8_t>(_mulshift(mv, _POW5[i + 1], j) % 10)
        if q <= 1:
            vr_tz = True
            if even:
                vm_tz = mm_shift == 1
            else:
                vp -= 1
        elif q < 31:
            vr_tz = (mv & ((1u << (q - 1)) - 1)) == 0
    if vm_tz or vr_tz:
        while vp // 10 > vm // 10:
            vm_tz = vm_tz and vm % 10 == 0
            vr_tz = vr_tz and last == 0
            last = <uint8_t>(vr % 10)
            vr //= 10
            vp //= 10
            vm //= 10
            removed += 1
        if vm_tz:
            while vm % 10 == 0:
                vr_tz = vr_tz and last == 0
                last = <uint8_t>(vr % 10)
                vr //= 10
                vp //= 10
                vm //= 10
                removed += 1
        if vr_tz and last == 5 and vr % 2 == 0:
            last = 4
        output = vr + (1 if ((vr == vm and (not even or not vm_tz)) or last >= 5) else 0)
    else:
        while vp // 10 > vm // 10:
            last = <uint8_t>(vr % 10)
            vr //= 10
            vp //= 10
            vm //= 10
            removed += 1
        output = vr + (1 if (vr == vm or last >= 5) else 0)
    digits[0] = output
    exponent[0] = e10 + removed


cdef int _put_decimal(_TensorOut* o, bint negative, uint64_t digits, int32_t exponent) except -1:
    """digits * 10**exponent the way Python's repr writes a float."""
    cdef char buf[24]
    cdef int n = 0, i, dp, e
    cdef char* w
    while True:
        buf[n] = <char>(48 + digits % 10)
        digits //= 10
        n += 1
        if digits == 0:
            break
    for i in range(n // 2):  # reverse into reading order
        buf[i], buf[n - 1 - i] = buf[n - 1 - i], buf[i]
    while n > 1 and buf[n - 1] == 48:  # trailing zeros move into the exponent
        n -= 1
        exponent += 1
    dp = n + exponent  # digits before the decimal point
    _out_reserve(o, n + 32)
    w = o.data + o.len
    if negative:
        w[0] = 45
        w += 1
    if -4 < dp <= 16:
        if dp <= 0:
            w[0] = 48
            w[1] = 46
            w += 2
            memset(w, 48, -dp)
            w += -dp
            memcpy(w, buf, n)
            w += n
        elif dp >= n:
            memcpy(w, buf, n)
            w += n
            memset(w, 48, dp - n)
            w += dp - n
            w[0] = 46
            w[1] = 48
            w += 2
        else:
            memcpy(w, buf, dp)
            w += dp
            w[0] = 46
            w += 1
            memcpy(w, buf + dp, n - dp)
            w += n - dp
    else:
        w[0] = buf[0]
        w += 1
        if n > 1:
            w[0] = 46
            w += 1
            memcpy(w, buf + 1, n - 1)
            w += n - 1
        e = dp - 1
        w[0] = 101
        w[1] = 45 if e < 0 else 43
        w += 2
        if e < 0:
            e = -e
        if e >= 100:
            w[0] = <char>(48 + e // 100)
            w += 1
        w[0] = <char>(48 + (e // 10) % 10)
        w[1] = <char>(48 + e % 10)
        w += 2
    o.len = w - o.data
    return 0


cdef int _put_special(_TensorOut* o, double v) except -1:
    if v != v:
        return _out_put(o, "NaN", 3)
    if v > 0:
        return _out_put(o, "Infinity", 8)
    return _out_put(o, "-Infinity", 9)


cdef int _put_f32(_TensorOut* o, float v) except -1:
    cdef uint32_t bits, digits, ieee_e, ieee_m
    cdef int32_t exponent
    memcpy(&bits, &v, 4)
    ieee_e = (bits >> 23) & 0xFF
    ieee_m = bits & 0x7FFFFF
    if ieee_e == 0xFF:
        return _put_special(o, v)
    if ieee_e == 0 and ieee_m == 0:
        return _out_put(o, "-0.0", 4) if bits >> 31 else _out_put(o, "0.0", 3)
    _f2d(ieee_m, ieee_e, &digits, &exponent)
    return _put_decimal(o, bits >> 31, digits, exponent)


cdef int _put_f64(_TensorOut* o, double v) except -1:
    cdef char* text
    if v != v or v - v != 0:
        return _put_special(o, v)
    text = PyOS_double_to_string(v, b'r', 0, Py_DTSF_ADD_DOT_0, NULL)
    try:
        _out_put(o, text, strlen(text))
    finally:
        PyMem_Free(text)
    return 0


cdef list _HALF_REPRS = None


cdef int _put_f16(_TensorOut* o, uint16_t bits) except -1:
    """float16: numpy's shortest digits, written like Python's repr (table built once)."""
    global _HALF_REPRS
    if _HALF_REPRS is None:
        np = _np()
        halves = np.arange(65536, dtype=np.uint16).view(np.float16)
        _HALF_REPRS = [repr(float(str(h))).encode() if np.isfinite(h) else b"" for h in halves]
    if (bits & 0x7C00) == 0x7C00:
        if bits & 0x3FF:
            return _out_put(o, "NaN", 3)
        return _out_put(o, "-Infinity", 9) if bits & 0x8000 else _out_put(o, "Infinity", 8)
    text = <bytes>_HALF_REPRS[bits]
    return _out_put(o, PyBytes_AS_STRING(text), len(text))


cdef int _put_int(_TensorOut* o, int64_t v) except -1:
    cdef uint64_t u
    if v < 0:
        _out_char(o, 45)
        u = <uint64_t>0 - <uint64_t>v
    else:
        u = <uint64_t>v
    return _put_uint(o, u)


cdef int _put_uint(_TensorOut* o, uint64_t u) except -1:
    cdef char buf[24]
    cdef int n = 24
    while True:
        n -= 1
        buf[n] = <char>(48 + u % 10)
        u //= 10
        if u == 0:
            break
    return _out_put(o, buf + n, 24 - n)


# -- JSON out -----------------------------------------------------------------------------

cdef int _put_json_values(_TensorOut* o, const char* data, int code, const Py_ssize_t* shape,
                          int ndim, Py_ssize_t* index) except -1:
    """The nested list of the C-order block at data[index...], index advanced."""
    cdef Py_ssize_t i
    cdef const char* p
    if ndim == 0:
        p = data + index[0] * _ITEMSIZE[code]
        index[0] += 1
        if code == DT_F32:
            return _put_f32(o, (<const float*>p)[0])
        if code == DT_F64:
            return _put_f64(o, (<const double*>p)[0])
        if code == DT_F16:
            return _put_f16(o, (<const uint16_t*>p)[0])
        if code == DT_BOOL:
            return _out_put(o, "true", 4) if p[0] else _out_put(o, "false", 5)
        if code == DT_I8:
            return _put_int(o, (<const int8_t*>p)[0])
        if code == DT_U8:
            return _put_int(o, (<const uint8_t*>p)[0])
        if code == DT_I16:
            return _put_int(o, (<const int16_t*>p)[0])
        if code == DT_U16:
            return _put_int(o, (<const uint16_t*>p)[0])
        if code == DT_I32:
            return _put_int(o, (<const int32_t*>p)[0])
        if code == DT_U32:
            return _put_int(o, (<const uint32_t*>p)[0])
        if code == DT_I64:
            return _put_int(o, (<const int64_t*>p)[0])
        return _put_uint(o, (<const uint64_t*>p)[0])
    _out_char(o, 91)
    for i in range(shape[0]):
        if i:
            _out_char(o, 44)
        _put_json_values(o, data, code, shape + 1, ndim - 1, index)
    _out_char(o, 93)
    return 0


cdef bytes _json_string(str text):
    import json
    return json.dumps(text, ensure_ascii=False).encode("utf-8")


# -- preparing outputs ----------------------------------------------------------------------

cdef class _Prepared:
    """One output array made C-contiguous in native order, with its per-row geometry."""

    cdef object array          # keeps the buffer alive
    cdef object flat           # the same bytes as a 1-D uint8 array
    cdef Py_buffer view
    cdef bint has_view
    cdef int code
    cdef int ndim              # of one row
    cdef Py_ssize_t shape[_MAX_NDIM]
    cdef Py_ssize_t row_bytes
    cdef str name
    cdef bytes ndlist_header   # everything of its NDList record before the data
    cdef bytes npy_header
    cdef bytes json_name

    def __dealloc__(self):
        if self.has_view:
            PyBuffer_Release(&self.view)


cdef _Prepared _prepare(array, int index, name, bint batched):
    cdef _Prepared p = _Prepared.__new__(_Prepared)
    cdef int d
    np = _np()
    a = np.asarray(array)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("="))
    if not a.flags.c_contiguous:  # (ascontiguousarray would turn a 0-d array into 1-d)
        a = a.copy(order="C")
    p.code = _code_of(a.dtype) if a.dtype.fields is None else -1
    if p.code < 0:
        raise ValueError(f"cannot encode output {index} of dtype {a.dtype}")
    shape = a.shape[1:] if batched else a.shape
    p.ndim = len(shape)
    for d in range(p.ndim):
        p.shape[d] = shape[d]
    p.row_bytes = _ITEMSIZE[p.code]
    for dim in shape:
        p.row_bytes *= dim
    p.array = a
    p.flat = a.reshape(-1).view(np.uint8)
    if a.nbytes:
        PyObject_GetBuffer(p.flat, &p.view, PyBUF_SIMPLE)
        p.has_view = True
    p.name = str(name) if name is not None else None
    p.ndlist_header = None
    p.npy_header = None
    p.json_name = None
    return p


cdef list _prepare_all(arrays, names, bint batched):
    items = list(arrays) if isinstance(arrays, (list, tuple)) else [arrays]
    if names is not None and len(names) != len(items):
        raise ValueError(f"names: expected {len(items)}, got {len(names)}")
    return [_prepare(a, i, names[i] if names is not None else None, batched)
            for i, a in enumerate(items)]


cdef int _encode_json(_TensorOut* o, list prepared, Py_ssize_t row) except -1:
    cdef _Prepared p
    cdef Py_ssize_t index = 0
    cdef Py_ssize_t k
    cdef const char* data
    _out_put(o, '{"predictions":', 15)
    if len(prepared) != 1:
        _out_char(o, 91)
    for k in range(len(prepared)):
        p = prepared[k]
        if p.code == DT_C64 or p.code == DT_C128:
            raise ValueError(f"cannot encode complex output {k} as JSON")
        data = (<const char*>p.view.buf + row * p.row_bytes) if p.has_view else NULL
        index = 0
        if len(prepared) != 1:
            if k:
                _out_char(o, 44)
            _out_char(o, 91)
            if p.json_name is None:  # once per output, not once per row
                p.json_name = _json_string(p.name if p.name is not None else f"arr_{k}")
            _out_put(o, PyBytes_AS_STRING(p.json_name), len(p.json_name))
            _out_char(o, 44)
        _put_json_values(o, data, p.code, p.shape, p.ndim, &index)
        if len(prepared) != 1:
            _out_char(o, 93)
    if len(prepared) != 1:
        _out_char(o, 93)
    _out_char(o, 125)
    return 0


# -- NDList out ---------------------------------------------------------------------------

cdef bytes _s16(str text, str what):
    raw = text.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ValueError(f"NDList {what} is too long: {len(raw)} bytes (at most 65535)")
    return len(raw).to_bytes(2, "big") + raw


cdef bytes _ndlist_header(_Prepared p, int index):
    cdef _TensorOut o = _TensorOut(NULL, 0, 0)
    cdef int d
    dtype_name = _NDLIST_NAMES[p.code]
    if dtype_name is None:
        raise ValueError(f"NDList cannot encode array {index} of dtype {_DTYPE_NAMES[p.code]}")
    if p.row_bytes > 0x7FFFFFFF:
        raise ValueError(f"NDList array {index} is too large: {p.row_bytes} bytes")
    try:
        _out_put(&o, "\x00\x04NDAR\x00\x00\x00\x03", 10)
        if p.name is None:
            _out_char(&o, 0)
        else:
            raw = b"\x01" + _s16(p.name, "array name")
            _out_put(&o, PyBytes_AS_STRING(raw), len(raw))
        _out_put(&o, "\x00\x07default", 9)
        raw = _s16(dtype_name, "dtype")
        _out_put(&o, PyBytes_AS_STRING(raw), len(raw))
        _out_be(&o, p.ndim, 4)
        for d in range(p.ndim):
            _out_be(&o, p.shape[d], 8)
        _out_be(&o, p.ndim, 4)
        for d in range(p.ndim):
            _out_put(&o, "\x00?", 2)
        _out_char(&o, 60)
        _out_be(&o, p.row_bytes, 4)
        return _out_take(&o)
    finally:
        PyMem_Free(o.data)


cdef int _encode_ndlist(_TensorOut* o, list prepared, Py_ssize_t row) except -1:
    cdef _Prepared p
    cdef Py_ssize_t k
    _out_be(o, len(prepared), 4)
    for k in range(len(prepared)):
        p = prepared[k]
        if p.ndlist_header is None:
            p.ndlist_header = _ndlist_header(p, k)
        _out_put(o, PyBytes_AS_STRING(p.ndlist_header), len(p.ndlist_header))
        if p.row_bytes:
            _out_put(o, <const char*>p.view.buf + row * p.row_bytes, p.row_bytes)
    return 0


# -- npz out ------------------------------------------------------------------------------

cdef bytes _npy_prefix(_Prepared p):
    np = _np()
    shape = tuple([p.shape[d] for d in range(p.ndim)])
    text = "{'descr': %r, 'fortran_order': False, 'shape': %r, }" % (
        np.dtype(_DTYPE_NAMES[p.code]).str, shape)
    pad = 64 - (10 + len(text) + 1) % 64
    text = text + " " * (pad % 64) + "\n"
    raw = text.encode("latin1")
    return b"\x93NUMPY\x01\x00" + len(raw).to_bytes(2, "little") + raw


cdef int _encode_npz(_TensorOut* o, list prepared, Py_ssize_t row) except -1:
    cdef _Prepared p
    cdef Py_ssize_t k, start = o.len, cd_start, cd_size
    cdef uint64_t size
    entries = []
    for k in range(len(prepared)):
        p = prepared[k]
        if p.npy_header is None:
            p.npy_header = _npy_prefix(p)
        name = (p.name if p.name is not None else f"arr_{k}") + ".npy"
        raw_name = name.encode("utf-8")
        crc = zlib.crc32(p.npy_header)
        if p.row_bytes:
            crc = zlib.crc32(p.flat[row * p.row_bytes:(row + 1) * p.row_bytes], crc)
        size = len(p.npy_header) + p.row_bytes
        if size > 0xFFFFFFFE or o.len - start > 0xFFFFFFFE:
            raise ValueError(f"npz output {k} is too large for this writer: {size} bytes")
        flags = 0x800 if not raw_name.isascii() else 0
        entries.append((raw_name, crc, size, o.len - start, flags))
        _out_put(o, "PK\x03\x04\x14\x00", 6)
        _out_le(o, flags, 2)
        _out_put(o, "\x00\x00\x00\x00\x21\x00", 6)  # stored; 1980-01-01 00:00
        _out_le(o, crc, 4)
        _out_le(o, size, 4)
        _out_le(o, size, 4)
        _out_le(o, len(raw_name), 2)
        _out_le(o, 0, 2)
        _out_put(o, PyBytes_AS_STRING(raw_name), len(raw_name))
        _out_put(o, PyBytes_AS_STRING(p.npy_header), len(p.npy_header))
        if p.row_bytes:
            _out_put(o, <const char*>p.view.buf + row * p.row_bytes, p.row_bytes)
    cd_start = o.len
    for raw_name, crc, size, offset, flags in entries:
        _out_put(o, "PK\x01\x02\x14\x00\x14\x00", 8)
        _out_le(o, flags, 2)
        _out_put(o, "\x00\x00\x00\x00\x21\x00", 6)
        _out_le(o, crc, 4)
        _out_le(o, size, 4)
        _out_le(o, size, 4)
        _out_le(o, len(raw_name), 2)
        _out_put(o, "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", 12)
        _out_le(o, offset, 4)
        _out_put(o, PyBytes_AS_STRING(raw_name), len(raw_name))
    cd_size = o.len - cd_start
    _out_put(o, "PK\x05\x06\x00\x00\x00\x00", 8)
    _out_le(o, len(entries), 2)
    _out_le(o, len(entries), 2)
    _out_le(o, cd_size, 4)
    _out_le(o, cd_start - start, 4)
    _out_put(o, "\x00\x00", 2)
    return 0


# -- encoders -----------------------------------------------------------------------------

cdef int _encode(_TensorOut* o, list prepared, Py_ssize_t row, int fmt) except -1:
    if fmt == FORMAT_JSON:
        return _encode_json(o, prepared, row)
    if fmt == FORMAT_NDLIST:
        return _encode_ndlist(o, prepared, row)
    if fmt == FORMAT_NPZ:
        return _encode_npz(o, prepared, row)
    raise ValueError(f"unknown tensor format {fmt}")


def encode_tensors(arrays, int fmt, names=None):
    """One item's answer: the arrays encoded in fmt.

    JSON is DJL's ``NoopServingTranslator`` answer, compact: ``{"predictions":<nested
    list>}`` for one array (a bare number for a 0-d one); for several,
    ``{"predictions":[["<name>",<nested list>],...]}``, an unnamed output being
    ``arr_<i>``. NDList is spec Appendix D (version 3, little-endian); npz is a stored zip
    of ``<name>.npy`` entries (``arr_<i>`` unless named), which ``np.load`` reads.

    Raises ValueError for a dtype the format cannot carry (strings, objects, complex in
    JSON, complex128 in NDList) or a names list of the wrong length.
    """
    cdef _TensorOut o = _TensorOut(NULL, 0, 0)
    prepared = _prepare_all(arrays, names, False)
    try:
        _encode(&o, prepared, 0, fmt)
        return _out_take(&o)
    finally:
        PyMem_Free(o.data)


def encode_rows(arrays, fmts, names=None):
    """The batched answer: row i of every array (batch on axis 0) encoded in fmts[i],
    exactly as ``encode_tensors([a[i] for a in arrays], fmts[i], names)`` would."""
    cdef _TensorOut o = _TensorOut(NULL, 0, 0)
    cdef Py_ssize_t n = len(fmts), row
    cdef _Prepared p
    prepared = _prepare_all(arrays, names, True)
    for k in range(len(prepared)):
        p = prepared[k]
        if p.array.ndim == 0 or p.array.shape[0] != n:
            raise ValueError(f"output {k} has shape {p.array.shape}, expected {n} rows on "
                             f"axis 0")
    result = []
    try:
        for row in range(n):
            _encode(&o, prepared, row, fmts[row])
            result.append(PyBytes_FromStringAndSize(o.data, o.len))
            o.len = 0
        return result
    finally:
        PyMem_Free(o.data)


# -- content negotiation ------------------------------------------------------------------
# The rules of DJL's default serving translator, as djl/runtime/torch_engine.py applies
# them; the Python-handler helper (djl/tensor_batch.py) uses these.

cdef str _media_type(value):
    if not value:
        return ""
    return str(value).split(";", 1)[0].strip().lower()


def input_format(content_type, payload):
    """The format a request body is read in: JSON for ``application/json`` (or ``+json``),
    NDList / npz for their types; with no type (or octet-stream) npz when the body starts
    with ``PK``, NDList when it starts like one, JSON when untyped. BadInput otherwise."""
    if payload is None or len(payload) == 0:
        raise BadInput("The request body is empty: send a JSON array, a tensor/ndlist or "
                       "a tensor/npz")
    media = _media_type(content_type)
    if media == "application/json" or media.endswith("+json"):
        return FORMAT_JSON
    if media == "tensor/ndlist":
        return FORMAT_NDLIST
    if media == "tensor/npz":
        return FORMAT_NPZ
    if media == "" or media == "application/octet-stream":
        head = bytes(memoryview(payload)[:10])
        if head[:2] == b"PK":
            return FORMAT_NPZ
        if head[4:10] == b"\x00\x04NDAR":
            return FORMAT_NDLIST
        if media == "":
            return FORMAT_JSON
    raise BadInput(f"Unsupported content type {content_type}: tensors are read from "
                   "application/json, tensor/ndlist and tensor/npz")


def output_format(content_type, accept):
    """The format of the answer: npz when Accept or the content type says tensor/npz; JSON
    when Accept says application/json, or the request is JSON and Accept does not ask for
    tensor/ndlist; else NDList (DJL's default)."""
    accepted = {_media_type(part) for part in str(accept or "").split(",")}
    media = _media_type(content_type)
    if "tensor/npz" in accepted or media == "tensor/npz":
        return FORMAT_NPZ
    if "application/json" in accepted or (media == "application/json"
                                          and "tensor/ndlist" not in accepted):
        return FORMAT_JSON
    return FORMAT_NDLIST


def read_requests(payload):
    """Every request of a REQUEST payload read as tensors, in one call (the PyTorch
    engine's path): ``(parsed, formats, groups, failed)``.

    ``parsed[i]`` is request i's ParsedTensors, or the exception that refused it (BadInput
    for a body we cannot read; anything else is a codec bug, for the caller to log);
    ``formats[i]`` its answer's format; ``groups`` the readable requests by signature, in
    order of first appearance, each ``(indices, items)``: what one ``collate`` stacks;
    ``failed`` the indices of the refused ones.
    """
    cdef list items = request_items(payload)
    cdef Py_ssize_t n = len(items), i
    cdef list parsed = [None] * n
    cdef list formats = [FORMAT_NDLIST] * n
    cdef list failed = []
    cdef dict groups = {}
    cdef dict answer_formats = {}  # (content type, accept) -> format: a batch's repeat
    cdef ParsedTensors p
    cdef tuple group
    for i in range(n):
        content_type, accept, data = <tuple>items[i]
        try:
            fmt = input_format(content_type, data)
            key = (content_type, accept)
            answer = answer_formats.get(key)
            if answer is None:
                answer = answer_formats[key] = output_format(content_type, accept)
            formats[i] = answer
            p = parse_tensors(data, fmt)
        except Exception as exc:  # each request's failure is its own answer
            parsed[i] = exc
            failed.append(i)
            continue
        parsed[i] = p
        group = groups.get(p.signature)
        if group is None:
            group = groups[p.signature] = ([], [])
        (<list>group[0]).append(i)
        (<list>group[1]).append(p)
    return parsed, formats, list(groups.values()), failed
