# A request head's headers in C (included by _batch.pyx): what the Python
# scan_head_py (djl/http/h1_intake.py) and request_properties_py (djl/http/codec/parsing.py)
# do, with the same results (tests/http/test_head.py); bench/head_json.py is the A/B.

cdef bytes _H_LENGTH = b"content-length"
cdef bytes _H_TYPE = b"content-type"
cdef bytes _H_CODING = b"transfer-encoding"
cdef bytes _H_EXPECT = b"expect"
cdef bytes _H_HANDLER = b"handler"
cdef bytes _H_CUSTOM = b"x-amzn-sagemaker-custom-attributes"
cdef frozenset _ASYNC_PROPERTY_KEYS = frozenset({"x-synchronous", "x-starting-token",
                                                 "x-max-items"})


def scan_head_c(list headers, bytes id_header):
    """(head bytes, content-length, content-type, a transfer-coding other than chunked,
    expect 100-continue, request id) of (lower-case name, value) pairs, as
    djl.http.h1_intake.scan_head_py: the last length (llhttp has refused differing
    ones) and media type, the first coding that is not ``chunked`` (None: all are, or
    none is named), the first request id, decoded."""
    cdef Py_ssize_t size = 0
    cdef tuple pair
    cdef bytes name, value
    cdef object length = None, media = None, coding = None, req_id = None
    cdef bint expect = False
    for pair in headers:
        name = <bytes>pair[0]
        value = <bytes>pair[1]
        size += len(name) + len(value) + 4
        if name == _H_LENGTH:
            length = value
        elif name == _H_TYPE:
            media = value
        elif name == _H_CODING:
            if coding is None and value.strip().lower() != b"chunked":
                coding = value
        elif name == _H_EXPECT:
            if value.strip().lower() == b"100-continue":
                expect = True
        elif name == id_header and req_id is None:
            req_id = value.decode("latin-1")
    return size, length, media, coding, expect, req_id


def request_properties_c(list headers):
    """(properties, media type, whether a handler is named) of (lower-case name, value)
    pairs, spec §3.3: as djl.http.codec.parsing.request_properties_py."""
    cdef dict properties = {}
    cdef str media_type = ""
    cdef bint overridden = False
    cdef tuple pair
    cdef bytes raw_name
    cdef str name, value, token, key, val, sep
    for pair in headers:
        raw_name = <bytes>pair[0]
        name = raw_name.decode("latin-1")
        value = (<bytes>pair[1]).decode("latin-1")
        if raw_name == _H_CUSTOM:
            for token in value.split(";"):
                key, sep, val = token.partition("=")
                if sep:
                    key = key.strip()
                    if key.lower() in _ASYNC_PROPERTY_KEYS:
                        key = key.lower()
                    properties[key] = val.strip()
                    overridden = overridden or key.lower() == "handler"
            continue
        if raw_name == _H_TYPE:
            media_type = value.partition(";")[0].strip().lower()
        elif raw_name == _H_HANDLER:
            overridden = True
        properties[name] = value
    return properties, media_type, overridden
