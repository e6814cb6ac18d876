# Gson-style JSON in C (included by _batch.pyx): what djl/http/codec/replies.py's render_json_py
# writes (json.dumps of the value with null members dropped, indent 2, ensure_ascii off,
# a trailing newline), the same bytes (tests/http/test_render_json.py); bench/head_json.py
# is the A/B. json.dumps with an indent runs the pure-Python encoder; this walks dicts,
# lists, strings, numbers, booleans and None itself, strings escaped by json's C
# ``encode_basestring``. Anything else (a tuple, a key that is not a string, a float
# subclass, nesting past _JSON_DEPTH) returns None: the caller renders it in Python.

from json.encoder import encode_basestring as _encode_string

cdef int _JSON_DEPTH = 64


cdef class _Unsupported(Exception):
    pass


cdef str _json_float(double value):
    if value != value:
        return "NaN"
    if value == float("inf"):
        return "Infinity"
    if value == -float("inf"):
        return "-Infinity"
    return float.__repr__(value)


cdef _render(object value, list out, int level):
    cdef str pad, inner
    cdef bint first
    cdef object key, item
    cdef type kind = type(value)
    if kind is str:
        out.append(_encode_string(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif kind is int:
        out.append(int.__repr__(value))
    elif kind is float:
        out.append(_json_float(value))
    elif level >= _JSON_DEPTH:
        raise _Unsupported()
    elif kind is dict:
        first = True
        inner = "\n" + "  " * (level + 1)
        for key, item in (<dict>value).items():
            if item is None:
                continue  # Gson drops null members
            if type(key) is not str:
                raise _Unsupported()
            out.append(("{" if first else ",") + inner)
            first = False
            out.append(_encode_string(key))
            out.append(": ")
            _render(item, out, level + 1)
        if first:
            out.append("{}")
        else:
            out.append("\n" + "  " * level + "}")
    elif kind is list:
        if not value:
            out.append("[]")
            return
        inner = "\n" + "  " * (level + 1)
        first = True
        for item in <list>value:
            out.append(("[" if first else ",") + inner)
            first = False
            _render(item, out, level + 1)
        out.append("\n" + "  " * level + "]")
    else:
        raise _Unsupported()


def render_json_c(object value):
    """The rendered bytes, or None for a value only the Python renderer takes."""
    cdef list out = []
    try:
        _render(value, out, 0)
    except _Unsupported:
        return None
    out.append("\n")
    return "".join(out).encode("utf-8")
