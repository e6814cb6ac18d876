# Included by _tensor.pxi (before its encoders): one extension module.
"""The Open Inference Protocol's tensors (KServe v2, Triton's REST API), read and written in C.

The server forwards a v2 infer body to the worker untouched, typed ``V2_MEDIA_TYPE`` (with
``; header-length=N`` when Triton's binary tensor extension put tensor bytes after N bytes
of JSON). ``parse_v2`` reads it into a ParsedTensors like any other request's, so it joins
the batch and is stacked with requests of the same signature whatever format they came in:

* JSON ``data`` (flat or nested) is converted in one pass straight into a buffer of the
  input's datatype (integers exactly, floats correctly rounded), after the shape says how
  many values there must be and the body's size says there can be that many;
* binary data stays in the payload (little-endian, row-major) until ``collate`` copies it;
* BYTES elements (JSON strings, or binary 4-byte little-endian lengths each followed by
  its bytes) become one numpy object array per input: the one datatype that needs a
  Python object per element.

The answer (``FORMAT_V2_JSON`` / ``FORMAT_V2_BINARY``) is written by ``_encode_v2``:
``{"id":...,"outputs":[{"name","datatype","shape","data"|"parameters"}]}``, data flat;
binary outputs follow the JSON, and a binary answer starts with the JSON's length (4
bytes, little-endian) for the server, which adds ``model_name`` / ``model_version``
(djl/open_inference.py) and sends that length as ``Inference-Header-Content-Length``.
Outputs are the model's dict keys, else ``output0``, ``output1``, ...

Every refusal is a BadInput (400) naming the input and what is wrong with it.
"""

#: Answer formats of a v2 request (read_requests' formats).
FORMAT_V2_JSON = 4
FORMAT_V2_BINARY = 5
#: The content type a v2 infer body is forwarded to an engine's worker with.
V2_MEDIA_TYPE = "application/vnd.djl.v2"
#: The content type of a worker's binary v2 answer (the layout above).
V2_BINARY_MEDIA_TYPE = "application/vnd.djl.v2-binary"
CONTENT_TYPES[FORMAT_V2_JSON] = "application/json"
CONTENT_TYPES[FORMAT_V2_BINARY] = V2_BINARY_MEDIA_TYPE

cdef enum:
    V2_BF16 = DT_COUNT      # codes beyond the numpy dtypes: bfloat16 bits, BYTES
    V2_BYTES = DT_COUNT + 1

#: Datatype name -> code (a DT_* or V2_BF16 / V2_BYTES).
V2_DATATYPES = {
    "BOOL": DT_BOOL, "UINT8": DT_U8, "UINT16": DT_U16, "UINT32": DT_U32, "UINT64": DT_U64,
    "INT8": DT_I8, "INT16": DT_I16, "INT32": DT_I32, "INT64": DT_I64,
    "FP16": DT_F16, "FP32": DT_F32, "FP64": DT_F64, "BF16": V2_BF16, "BYTES": V2_BYTES,
}
#: The datatype of an output by its numpy code (None: v2 has no name for it).
cdef tuple _V2_NAMES = ("FP32", "FP64", "FP16", "INT8", "UINT8", "INT16", "UINT16", "INT32",
                        "UINT32", "INT64", "UINT64", "BOOL", None, None)
cdef str _KNOWN = ", ".join(V2_DATATYPES)


cdef class V2Request:
    """What a v2 request asks of its answer (ParsedTensors.v2)."""

    #: The request's ``id`` as its JSON string token, echoed as is; None without one.
    cdef readonly bytes id_json
    #: ``[(name, binary)]`` of the ``outputs`` it asks for, or None: every output.
    cdef readonly list outputs
    #: ``parameters.binary_data_output``: the default of every output's ``binary_data``.
    cdef readonly bint binary_default
    cdef readonly int answer_format


cdef V2Request _v2_of(request):
    if request is None:
        return None
    if isinstance(request, V2Request):
        return request
    return (<ParsedTensors>request).v2


cdef class _V2Reader:
    """One v2 request's JSON, ``s[:end]``; the binary part runs from ``end`` to ``total``.

    Objects and arrays are walked with ``open`` and ``more``: each returns the position
    of the next member and sets ``done`` once past the closing bracket.
    """

    cdef _JsonScan scan      # string and value checks, failures that name the byte
    cdef const unsigned char* s
    cdef Py_ssize_t end
    cdef Py_ssize_t total

    cdef inline int peek(self, Py_ssize_t pos):
        return self.s[pos] if pos < self.end else -1

    cdef Py_ssize_t open(self, Py_ssize_t pos, int bracket, str what, bint* done) except -1:
        pos = _skip_ws(self.s, pos, self.end)
        if self.peek(pos) != bracket:
            raise BadInput(f"v2 request: {what} must be "
                           f"{'an object' if bracket == 123 else 'an array'} (at byte {pos})")
        pos = _skip_ws(self.s, pos + 1, self.end)
        done[0] = self.peek(pos) == bracket + 2  # } or ]
        return pos + 1 if done[0] else pos

    cdef Py_ssize_t more(self, Py_ssize_t pos, int close, bint* done) except -1:
        pos = _skip_ws(self.s, pos, self.end)
        c = self.peek(pos)
        if c == 44:
            done[0] = False
            return pos + 1
        if c == close:
            done[0] = True
            return pos + 1
        self.scan.fail("expected ',' or '}'" if close == 125 else "expected ',' or ']'", pos)

    cdef str key(self, Py_ssize_t* pos):
        """The member name at pos[0]; pos[0] moves past its ':' and the spaces after."""
        cdef Py_ssize_t start = _skip_ws(self.s, pos[0], self.end), stop, colon
        if self.peek(start) != 34:
            self.scan.fail("expected a string key", start)
        stop = self.scan.string(start)
        colon = _skip_ws(self.s, stop, self.end)
        if self.peek(colon) != 58:
            self.scan.fail("expected ':'", colon)
        pos[0] = _skip_ws(self.s, colon + 1, self.end)
        return _json_key(self.s, start, stop)

    cdef str text(self, Py_ssize_t* pos, str what):
        cdef Py_ssize_t start = pos[0]
        if self.peek(start) != 34:
            raise BadInput(f"v2 request: {what} must be a string (at byte {start})")
        pos[0] = self.scan.string(start)
        return _json_key(self.s, start, pos[0])

    cdef bint boolean(self, Py_ssize_t* pos, str what) except -1:
        if _literal(self.s, pos[0], self.end, "true", 4):
            pos[0] += 4
            return True
        if _literal(self.s, pos[0], self.end, "false", 5):
            pos[0] += 5
            return False
        raise BadInput(f"v2 request: {what} must be true or false (at byte {pos[0]})")

    cdef int64_t integer(self, Py_ssize_t* pos, str what) except? -1:
        cdef bint neg
        cdef uint64_t mag
        cdef Py_ssize_t stop = _read_integer(self.s, pos[0], self.end, &neg, &mag)
        if stop < 0 or mag > <uint64_t>INT64_MAX:
            raise BadInput(f"v2 request: {what} must be an integer (at byte {pos[0]})")
        pos[0] = stop
        return -<int64_t>mag if neg else <int64_t>mag

    cdef Py_ssize_t skip(self, Py_ssize_t pos) except -1:
        return self.scan.value(pos, 1)


cdef Py_ssize_t _read_integer(const unsigned char* s, Py_ssize_t pos, Py_ssize_t end,
                              bint* neg, uint64_t* mag) noexcept:
    """The end of the JSON integer at pos (sign and magnitude out), or -1: not an integer
    (a fraction or exponent, no digits, or beyond 64 bits)."""
    cdef uint64_t v = 0
    cdef Py_ssize_t start, stop
    neg[0] = pos < end and s[pos] == 45
    start = pos + 1 if neg[0] else pos
    if start >= end or not _digit(s[start]):
        return -1
    pos = start
    while pos < end and _digit(s[pos]):
        if v > (<uint64_t>0xFFFFFFFFFFFFFFFF - (s[pos] - 48)) // 10:
            return -1
        v = v * 10 + (s[pos] - 48)
        pos += 1
    if (s[start] == 48 and pos - start > 1) or (pos < end and (s[pos] == 46 or s[pos] == 101
                                                                or s[pos] == 69)):
        return -1
    mag[0] = v
    return pos


cdef uint16_t _double_to_half(double x) noexcept nogil:
    """IEEE binary16 nearest to x (ties to even), from the double's bits: one rounding."""
    cdef uint64_t bits, mant, q, r, half
    cdef int e, shift
    cdef uint16_t sign
    memcpy(&bits, &x, 8)
    sign = <uint16_t>((bits >> 48) & 0x8000)
    e = <int>((bits >> 52) & 0x7FF)
    mant = bits & ((<uint64_t>1 << 52) - 1)
    if e == 0x7FF:
        return sign | 0x7C00 | (0x200 if mant else 0)
    e = e - 1023 + 15
    if e >= 31:
        return sign | 0x7C00
    if e <= 0:
        if e < -10:
            return sign
        mant |= <uint64_t>1 << 52
        shift = 42 + 1 - e
    else:
        shift = 42
    q = mant >> shift
    r = mant & ((<uint64_t>1 << shift) - 1)
    half = <uint64_t>1 << (shift - 1)
    if e > 0:
        q |= <uint64_t>e << 10
    if r > half or (r == half and (q & 1)):
        q += 1  # a carry out of the mantissa steps the exponent, up to infinity
    if q >= 0x7C00:
        return sign | 0x7C00
    return sign | <uint16_t>q


cdef class _V2Input:
    cdef str name
    cdef int code
    cdef list shape
    cdef Py_ssize_t data_at     # JSON ``data`` position, or -1
    cdef int64_t binary_size    # ``parameters.binary_data_size``, or -1


def parse_v2(payload, content_type=V2_MEDIA_TYPE, input_names=None):
    """One v2 infer request (``content_type`` names where its JSON ends: ``;
    header-length=N``) as a ParsedTensors whose ``v2`` is its V2Request. BadInput names
    what is wrong: malformed JSON, an unknown datatype, a bad or absurd shape, data that
    does not fill it, a binary size past the body.

    The inputs are the model's positional inputs in request order, unless
    ``input_names`` (the model's, where its engine knows them) holds exactly the names
    the request gives: then they are put in the model's order."""
    cdef ParsedTensors p = _new_parsed(payload, FORMAT_V2_JSON)
    cdef _V2Reader r = _V2Reader.__new__(_V2Reader)
    cdef V2Request req = V2Request.__new__(V2Request)
    cdef Py_ssize_t pos, start, header = -1
    cdef _V2Input item
    cdef bint any_binary = False, done
    r.s = <const unsigned char*>p._view.buf
    r.total = p._view.len
    _, sep, param = str(content_type).partition("header-length=")
    if sep:
        try:
            header = int(param.split(";", 1)[0])
        except ValueError:
            header = -2
        if not 0 <= header <= r.total:
            raise BadInput(f"Inference-Header-Content-Length {param.split(';', 1)[0]} is not "
                           f"within the body's {r.total} bytes")
    r.end = header if header >= 0 else r.total
    r.scan = _JsonScan.__new__(_JsonScan)
    r.scan.out = p
    r.scan.s = r.s
    r.scan.end = r.end
    p.v2 = req
    req.id_json = None
    req.outputs = None
    req.binary_default = False
    inputs = []
    pos = _skip_ws(r.s, 0, r.end)
    if pos >= r.end:
        raise BadInput("v2 request: the body is empty")
    pos = r.open(pos, 123, "the request", &done)
    while not done:
        key = r.key(&pos)
        if key == "id":
            start = pos
            r.text(&pos, '"id"')
            req.id_json = PyBytes_FromStringAndSize(<const char*>r.s + start, pos - start)
        elif key == "inputs":
            pos = _v2_inputs(r, pos, inputs)
        elif key == "outputs":
            req.outputs = []
            pos = _v2_outputs(r, pos, req.outputs)
        elif key == "parameters":
            pos = _v2_parameters(r, pos, "binary_data_output", &req.binary_default, NULL)
        else:
            pos = r.skip(pos)
        pos = r.more(pos, 125, &done)
    if _skip_ws(r.s, pos, r.end) != r.end:
        r.scan.fail("unexpected data after the JSON object", _skip_ws(r.s, pos, r.end))
    if not inputs:
        raise BadInput('v2 request: no "inputs"')
    if req.outputs is not None:
        req.outputs = [(name, bool(req.binary_default if state < 0 else state))
                       for name, state in req.outputs]
        any_binary = any([binary for _, binary in req.outputs])
    else:
        any_binary = req.binary_default
    req.answer_format = FORMAT_V2_BINARY if any_binary else FORMAT_V2_JSON
    pos = r.end  # the binary part: each binary input's bytes in order
    seen = set()
    for item in inputs:
        if item.name in seen:
            raise BadInput(f"v2 request: input {item.name!r} appears twice")
        seen.add(item.name)
        pos = _v2_input_data(p, r, item, pos)
    if pos != r.total:
        raise BadInput(f"v2 request: {r.total - pos} bytes after the JSON are no input's "
                       "binary data")
    if (input_names is not None and len(input_names) == len(inputs)
            and p._names != list(input_names) and seen == set(input_names)):
        _reorder(p, [p._names.index(name) for name in input_names])
    _finish(p)
    return p


cdef void _reorder(ParsedTensors p, list order):
    """Put the recorded inputs in ``order`` (indices into the request's)."""
    for values in (p._bases, p._offsets, p._sizes, p._kinds, p._orders, p._sig, p._names):
        values[:] = [values[i] for i in order]


cdef Py_ssize_t _v2_parameters(_V2Reader r, Py_ssize_t pos, str wanted, bint* flag,
                               int64_t* size) except -1:
    """A ``parameters`` object: the boolean (into flag) or the integer (into size) named
    ``wanted``; the rest is checked and skipped. Returns -1 - pos when ``wanted`` was
    absent, so a caller can tell (binary_data)."""
    cdef bint done, found = False
    pos = r.open(pos, 123, '"parameters"', &done)
    while not done:
        key = r.key(&pos)
        if key == wanted and flag != NULL:
            flag[0] = r.boolean(&pos, wanted)
            found = True
        elif key == wanted:
            size[0] = r.integer(&pos, wanted)
            if size[0] < 0:
                raise BadInput(f"v2 request: negative {wanted} {size[0]}")
        else:
            pos = r.skip(pos)
        pos = r.more(pos, 125, &done)
    return pos if found or flag == NULL else -1 - pos


cdef Py_ssize_t _v2_outputs(_V2Reader r, Py_ssize_t pos, list outputs) except -1:
    cdef bint binary, done, inner
    cdef int state
    pos = r.open(pos, 91, '"outputs"', &done)
    while not done:
        pos = r.open(pos, 123, "an output", &inner)
        name = None
        state = -1  # no binary_data: the request's binary_data_output decides
        while not inner:
            key = r.key(&pos)
            if key == "name":
                name = r.text(&pos, "an output's name")
            elif key == "parameters":
                binary = False
                pos = _v2_parameters(r, pos, "binary_data", &binary, NULL)
                if pos < 0:
                    pos = -1 - pos
                else:
                    state = binary
            else:
                pos = r.skip(pos)
            pos = r.more(pos, 125, &inner)
        if name is None:
            raise BadInput('v2 request: an output has no "name"')
        outputs.append((name, state))
        pos = r.more(pos, 93, &done)
    return pos


cdef Py_ssize_t _v2_inputs(_V2Reader r, Py_ssize_t pos, list inputs) except -1:
    cdef _V2Input item
    cdef bint done, inner
    cdef Py_ssize_t at
    pos = r.open(pos, 91, '"inputs"', &done)
    while not done:
        item = _V2Input.__new__(_V2Input)
        item.name = None
        item.shape = None
        item.data_at = -1
        item.binary_size = -1
        datatype = None
        at = pos
        pos = r.open(pos, 123, "an input", &inner)
        while not inner:
            key = r.key(&pos)
            if key == "name":
                item.name = r.text(&pos, "an input's name")
            elif key == "datatype":
                datatype = r.text(&pos, "datatype")
            elif key == "shape":
                item.shape = []
                pos = _v2_shape(r, pos, item.shape)
            elif key == "data":
                item.data_at = pos
                pos = r.skip(pos)
            elif key == "parameters":
                pos = _v2_parameters(r, pos, "binary_data_size", NULL, &item.binary_size)
            else:
                pos = r.skip(pos)
            pos = r.more(pos, 125, &inner)
        label = f"input {item.name!r}" if item.name is not None else f"the input at byte {at}"
        if item.name is None:
            raise BadInput(f'v2 request: {label} has no "name"')
        if datatype is None:
            raise BadInput(f'v2 request: {label} has no "datatype"')
        if item.shape is None:
            raise BadInput(f'v2 request: {label} has no "shape"')
        item.code = V2_DATATYPES.get(datatype, -1)
        if item.code < 0:
            raise BadInput(f"v2 request: {label}: unknown datatype {datatype!r} (known: "
                           f"{_KNOWN})")
        inputs.append(item)
        pos = r.more(pos, 93, &done)
    return pos


cdef Py_ssize_t _v2_shape(_V2Reader r, Py_ssize_t pos, list shape) except -1:
    cdef bint done
    pos = r.open(pos, 91, '"shape"', &done)
    while not done:
        if len(shape) >= _MAX_NDIM:
            raise BadInput(f"v2 request: a shape of more than {_MAX_NDIM} dimensions")
        pos = _skip_ws(r.s, pos, r.end)
        shape.append(r.integer(&pos, "a shape's dimension"))
        pos = r.more(pos, 93, &done)
    return pos


cdef Py_ssize_t _v2_input_data(ParsedTensors p, _V2Reader r, _V2Input item,
                               Py_ssize_t binary_at) except -1:
    """Record one input's values; the binary part's position after them."""
    cdef int64_t count = 1, dim, bound, itemsize, need
    cdef int code = item.code
    cdef Py_ssize_t stop
    cdef Py_ssize_t index = 0
    cdef Py_buffer view
    label = f"v2 request: input {item.name!r}"
    shape = tuple(item.shape)
    itemsize = 2 if code == V2_BF16 else (1 if code == V2_BYTES else _ITEMSIZE[code])
    if item.binary_size >= 0 and item.data_at >= 0:
        raise BadInput(f'{label} has both "data" and a binary_data_size')
    if item.binary_size >= 0:
        if item.binary_size > r.total - binary_at:
            raise BadInput(f"{label}: binary_data_size {item.binary_size} overruns the "
                           f"body: {r.total - binary_at} bytes remain at byte {binary_at}")
        bound = (r.total - binary_at) // (4 if code == V2_BYTES else itemsize)
    elif item.data_at >= 0:
        # every JSON value takes a byte and its separator another (a string two)
        bound = (r.end - item.data_at + 1) // 2
    else:
        raise BadInput(f'{label} has no "data" and no binary_data_size')
    # The element count is bounded by what the body can carry before anything is
    # allocated: the body itself is within max_request_size.
    for dim in shape:
        if dim < 0:
            raise BadInput(f"{label}: negative dimension in shape {list(shape)}")
    for dim in shape:
        if dim == 0:
            count = 0
            break
        if count > bound // dim:
            raise BadInput(f"{label}: shape {list(shape)} holds more values than the "
                           f"request's {r.total} bytes can carry")
        count *= dim
    if item.binary_size >= 0:
        if code == V2_BYTES:
            base = _v2_bytes_binary(r, binary_at, item.binary_size, count, shape, label)
            _add_object(p, shape, item.name, base)
        else:
            need = count * itemsize
            if need != item.binary_size:
                raise BadInput(f"{label}: binary_data_size {item.binary_size} does not fill "
                               f"shape {list(shape)} of {_v2_name(code)} ({need} bytes)")
            if code == V2_BF16:
                _add_v2(p, "bfloat16", shape, item.name, payload_of(p), binary_at, need,
                        KIND_RAW)
            else:
                p._add(code, shape, item.name, payload_of(p), binary_at, need, KIND_RAW, None)
        return binary_at + item.binary_size
    if code == V2_BF16:
        raise BadInput(f"{label}: BF16 data must be binary (binary_data_size)")
    if code == V2_BYTES:
        values = []
        stop = _v2_strings(r, item.data_at, values, count, label)
        if len(values) != count:
            raise BadInput(f"{label}: data has {_values(len(values))}, shape "
                           f"{list(shape)} needs {count}")
        _add_object(p, shape, item.name, _object_array(values, shape))
        return binary_at
    buf = PyByteArray_FromStringAndSize(NULL, count * itemsize)
    PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE)
    try:
        _v2_values(r, item.data_at, code, <char*>view.buf, count, &index, 0, label)
    finally:
        PyBuffer_Release(&view)
    if index != count:
        raise BadInput(f"{label}: data has {_values(index)}, shape {list(shape)} needs "
                       f"{count}")
    p._add(code, shape, item.name, buf, 0, count * itemsize, KIND_RAW, None)
    return binary_at


cdef inline object payload_of(ParsedTensors p):
    return <object>p._view.obj


cdef str _v2_name(int code):
    return next(k for k, v in V2_DATATYPES.items() if v == code)


cdef void _add_v2(ParsedTensors p, str dtype_name, tuple shape, name, base,
                  Py_ssize_t offset, Py_ssize_t size, int kind):
    p._bases.append(base)
    p._offsets.append(offset)
    p._sizes.append(size)
    p._kinds.append(kind)
    p._orders.append(None)
    p._sig.append((dtype_name, shape))
    p._names.append(name)


cdef void _add_object(ParsedTensors p, tuple shape, name, base):
    _add_v2(p, "object", shape, name, base, 0, 0, KIND_OBJECT)


cdef object _object_array(list values, tuple shape):
    np = _np()
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array.reshape(shape)


cdef object _v2_bytes_binary(_V2Reader r, Py_ssize_t at, int64_t size, int64_t count,
                             tuple shape, str label):
    """BYTES elements from the binary part: a 4-byte little-endian length, then bytes."""
    cdef Py_ssize_t pos = at, stop = at + size
    cdef uint64_t n
    values = []
    while pos < stop:
        if stop - pos < 4:
            raise BadInput(f"{label}: a BYTES element's length is cut short at byte {pos}")
        n = _read_le(r.s, pos, 4)
        pos += 4
        if n > <uint64_t>(stop - pos):
            raise BadInput(f"{label}: a BYTES element of {n} bytes overruns its "
                           f"binary_data_size at byte {pos}")
        values.append(PyBytes_FromStringAndSize(<const char*>r.s + pos, <Py_ssize_t>n))
        pos += <Py_ssize_t>n
    if len(values) != count:
        raise BadInput(f"{label}: binary data has {_values(len(values))}, shape "
                       f"{list(shape)} needs {count}")
    return _object_array(values, shape)


cdef Py_ssize_t _v2_strings(_V2Reader r, Py_ssize_t pos, list values, int64_t count,
                            str label) except -1:
    """BYTES data in JSON: strings, flat or nested, each as its UTF-8 bytes."""
    cdef Py_ssize_t start
    pos = _skip_ws(r.s, pos, r.end)
    if r.peek(pos) == 91:
        pos = _skip_ws(r.s, pos + 1, r.end)
        if r.peek(pos) == 93:
            return pos + 1
        while True:
            pos = _v2_strings(r, pos, values, count, label)
            pos = _skip_ws(r.s, pos, r.end)
            if r.peek(pos) == 44:
                pos += 1
                continue
            if r.peek(pos) == 93:
                return pos + 1
            r.scan.fail("expected ',' or ']'", pos)
    if r.peek(pos) != 34:
        raise BadInput(f"{label}: BYTES data must be strings (at byte {pos})")
    if len(values) >= count:
        raise BadInput(f"{label}: data has more than the {count} values its shape holds")
    start = pos
    pos = r.scan.string(pos)
    values.append(_json_key(r.s, start, pos).encode("utf-8"))
    return pos


cdef Py_ssize_t _v2_values(_V2Reader r, Py_ssize_t pos, int code, char* out, int64_t count,
                           Py_ssize_t* index, int depth, str label) except -1:
    """JSON data, flat or nested, converted into out[index...] as ``code``."""
    cdef const unsigned char* s = r.s
    cdef Py_ssize_t stop, i
    cdef double value
    cdef bint neg
    cdef uint64_t mag
    cdef int64_t v
    pos = _skip_ws(s, pos, r.end)
    if r.peek(pos) == 91:
        if depth >= _MAX_JSON_DEPTH:
            r.scan.fail(f"arrays nested deeper than {_MAX_JSON_DEPTH}", pos)
        pos = _skip_ws(s, pos + 1, r.end)
        if r.peek(pos) == 93:
            return pos + 1
        while True:
            pos = _v2_values(r, pos, code, out, count, index, depth + 1, label)
            pos = _skip_ws(s, pos, r.end)
            if r.peek(pos) == 44:
                pos += 1
                continue
            if r.peek(pos) == 93:
                return pos + 1
            r.scan.fail("expected ',' or ']'", pos)
    i = index[0]
    if i >= count:
        raise BadInput(f"{label}: data has more than the {_values(count)} its shape holds")
    index[0] = i + 1
    if code == DT_BOOL:
        if _literal(s, pos, r.end, "true", 4):
            (<uint8_t*>out)[i] = 1
            return pos + 4
        if _literal(s, pos, r.end, "false", 5):
            (<uint8_t*>out)[i] = 0
            return pos + 5
        raise BadInput(f"{label}: BOOL data must be true or false (at byte {pos})")
    if code == DT_F32 or code == DT_F64 or code == DT_F16:
        stop = _read_number(s, pos, r.end, &value)
        if stop < 0:
            raise BadInput(f"{label}: expected a number at byte {pos}")
        if code == DT_F32:
            (<float*>out)[i] = <float>value
        elif code == DT_F64:
            (<double*>out)[i] = value
        else:
            (<uint16_t*>out)[i] = _double_to_half(value)
        return stop
    stop = _read_integer(s, pos, r.end, &neg, &mag)
    if stop < 0:
        raise BadInput(f"{label}: expected an integer at byte {pos}")
    if code == DT_U64:
        if neg and mag:
            raise BadInput(f"{label}: {'-'}{mag} is out of range for UINT64 (at byte {pos})")
        (<uint64_t*>out)[i] = mag
        return stop
    if (mag > (_INT_NEG[code] if neg else _INT_POS[code])):
        raise BadInput(f"{label}: {'-' if neg else ''}{mag} is out of range for "
                       f"{_v2_name(code)} (at byte {pos})")
    v = -<int64_t>mag if neg else <int64_t>mag
    if code == DT_I8:
        (<int8_t*>out)[i] = <int8_t>v
    elif code == DT_U8:
        (<uint8_t*>out)[i] = <uint8_t>v
    elif code == DT_I16:
        (<int16_t*>out)[i] = <int16_t>v
    elif code == DT_U16:
        (<uint16_t*>out)[i] = <uint16_t>v
    elif code == DT_I32:
        (<int32_t*>out)[i] = <int32_t>v
    elif code == DT_U32:
        (<uint32_t*>out)[i] = <uint32_t>v
    else:
        (<int64_t*>out)[i] = v
    return stop


# The largest magnitude each integer datatype holds below and above zero.
cdef uint64_t _INT_NEG[DT_COUNT]
cdef uint64_t _INT_POS[DT_COUNT]
_INT_NEG[DT_I8] = 128
_INT_POS[DT_I8] = 127
_INT_NEG[DT_U8] = 0
_INT_POS[DT_U8] = 255
_INT_NEG[DT_I16] = 32768
_INT_POS[DT_I16] = 32767
_INT_NEG[DT_U16] = 0
_INT_POS[DT_U16] = 65535
_INT_NEG[DT_I32] = 2147483648
_INT_POS[DT_I32] = 2147483647
_INT_NEG[DT_U32] = 0
_INT_POS[DT_U32] = 4294967295
_INT_NEG[DT_I64] = <uint64_t>1 << 63
_INT_POS[DT_I64] = (<uint64_t>1 << 63) - 1


# -- the answer ----------------------------------------------------------------------------

cdef int _encode_v2(_TensorOut* o, list prepared, Py_ssize_t row, V2Request req,
                    bint binary_answer, datatypes) except -1:
    """Row ``row`` of the outputs as the v2 answer ``req`` asks for (module docstring)."""
    cdef _Prepared p
    cdef Py_ssize_t k, d, start = o.len, json_at, count, index
    cdef bint binary
    cdef list chosen = []
    if req is None or req.outputs is None:
        default = req.binary_default if req is not None else False
        chosen = [(k, default) for k in range(len(prepared))]
    else:
        for name, binary in req.outputs:
            for k in range(len(prepared)):
                if _output_name(prepared[k], k) == name:
                    chosen.append((k, binary))
                    break
            else:
                known = ", ".join([_output_name(prepared[k], k) for k in range(len(prepared))])
                raise BadInput(f"v2 request: unknown output {name!r} (the model's outputs: "
                               f"{known})")
    if binary_answer:
        _out_put(o, "\x00\x00\x00\x00", 4)
    json_at = o.len
    _out_char(o, 123)
    if req is not None and req.id_json is not None:
        _out_put(o, '"id":', 5)
        _out_put(o, PyBytes_AS_STRING(req.id_json), len(req.id_json))
        _out_char(o, 44)
    _out_put(o, '"outputs":[', 11)
    for index in range(len(chosen)):
        k, binary = chosen[index]
        p = prepared[k]
        datatype = _V2_NAMES[p.code]
        bf16 = (datatypes is not None and datatypes[k] == "BF16" and p.code == DT_F32)
        if bf16:
            datatype = "BF16"
        if datatype is None:
            raise ValueError(f"cannot encode output {k} of dtype {_DTYPE_NAMES[p.code]} in v2")
        if index:
            _out_char(o, 44)
        if p.v2_name is None:  # once per output, not once per row
            p.v2_name = _json_string(_output_name(p, k))
        _out_put(o, '{"name":', 8)
        _out_put(o, PyBytes_AS_STRING(p.v2_name), len(p.v2_name))
        _out_put(o, ',"datatype":"', 13)
        _out_put(o, PyBytes_AS_STRING(datatype.encode()), len(datatype))
        _out_put(o, '","shape":[', 11)
        count = 1
        for d in range(p.ndim):
            if d:
                _out_char(o, 44)
            _put_uint(o, <uint64_t>p.shape[d])
            count *= p.shape[d]
        _out_put(o, "],", 2)
        if binary:
            _out_put(o, '"parameters":{"binary_data_size":', 33)
            _put_uint(o, <uint64_t>(p.row_bytes // 2 if bf16 else p.row_bytes))
            _out_put(o, "}}", 2)
        else:
            _out_put(o, '"data":', 7)
            d = 0
            _put_json_values(o, (<const char*>p.view.buf + row * p.row_bytes)
                             if p.has_view else NULL, p.code, &count, 1, &d)
            _out_char(o, 125)
    _out_put(o, "]}", 2)
    if binary_answer:
        count = o.len - json_at
        for d in range(4):
            o.data[start + d] = <char>((count >> (8 * d)) & 0xFF)
        for index in range(len(chosen)):
            k, binary = chosen[index]
            p = prepared[k]
            if binary and p.row_bytes and datatypes is not None and datatypes[k] == "BF16" \
                    and p.code == DT_F32:
                _put_bf16(o, <const float*>(<const char*>p.view.buf + row * p.row_bytes),
                          p.row_bytes // 4)
            elif binary and p.row_bytes:
                _out_put(o, <const char*>p.view.buf + row * p.row_bytes, p.row_bytes)
    return 0


cdef int _put_bf16(_TensorOut* o, const float* values, Py_ssize_t n) except -1:
    """bfloat16 bits of float32 values that came from bfloat16 (the top half: exact)."""
    cdef Py_ssize_t i
    cdef uint32_t bits
    _out_reserve(o, 2 * n)
    for i in range(n):
        memcpy(&bits, &values[i], 4)
        o.data[o.len] = <char>((bits >> 16) & 0xFF)
        o.data[o.len + 1] = <char>(bits >> 24)
        o.len += 2
    return 0


cdef str _output_name(_Prepared p, Py_ssize_t k):
    return p.name if p.name is not None else f"output{k}"
