"""A request head's lookups: the C twins (djl/_head.pxi) return what the Python ones do,
for any header list, and the server acts on them (the refusals themselves are
tests/http/test_h1.py's)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from djl.config import ServerConfig
from djl.errors import BadRequest
from djl.http import codec
from djl.http.h1_intake import scan_head_c, scan_head_py

_NAMES = st.sampled_from([b"content-length", b"content-type", b"transfer-encoding",
                          b"expect", b"x-request-id", b"handler", b"host",
                          b"x-amzn-sagemaker-custom-attributes", b"x-synchronous"])
_VALUES = st.sampled_from([b"11", b"chunked", b" Chunked ", b"gzip", b"100-continue",
                           b"text/plain; charset=utf-8", b"\xe9t\xe9", b"",
                           b"X-Starting-Token=abc; handler=h;junk", b"a=1;X-Max-Items=2"])
_HEADERS = st.lists(st.tuples(_NAMES | st.binary(max_size=6), _VALUES | st.binary(max_size=6)),
                    max_size=8)


@settings(max_examples=300, deadline=None)
@given(_HEADERS)
def test_scan_head_c_is_scan_head_py(headers):
    assert scan_head_c(headers, b"x-request-id") == scan_head_py(headers, b"x-request-id")


@settings(max_examples=300, deadline=None)
@given(_HEADERS)
def test_request_properties_c_is_request_properties_py(headers):
    allowed = ServerConfig(allow_request_handler_override=True)
    assert codec.request_properties(headers, allowed) == codec.request_properties_py(
        headers, allowed)
    refused = ServerConfig(allow_request_handler_override=False)
    try:
        expected = codec.request_properties_py(headers, refused)
    except BadRequest:
        with pytest.raises(BadRequest):
            codec.request_properties(headers, refused)
    else:
        assert codec.request_properties(headers, refused) == expected


def test_scan_head_reads_each_header_as_the_server_needs():
    headers = [(b"host", b"x"), (b"x-request-id", b"first"), (b"content-type", b"a/b"),
               (b"transfer-encoding", b"chunked"), (b"transfer-encoding", b"gzip"),
               (b"expect", b"100-Continue "), (b"x-request-id", b"second"),
               (b"content-type", b"c/d"), (b"content-length", b"5")]
    size = sum(len(n) + len(v) + 4 for n, v in headers)
    assert scan_head_c(headers, b"x-request-id") == (size, b"5", b"c/d", b"gzip", True,
                                                     "first")
