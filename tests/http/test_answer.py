"""djl.http.answer: the answer head, in Python and in C (the same bytes, always)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from djl.http.answer import InvalidHeader, answer_head_c, answer_head_py

IMPLEMENTATIONS = [answer_head_py, answer_head_c]


@pytest.mark.parametrize("answer_head", IMPLEMENTATIONS)
def test_a_head_has_the_status_line_headers_date_and_framing(answer_head):
    head, close = answer_head(404, [(b"x-request-id", b"r1"), (b"content-length", b"2")],
                              False)
    assert close is False
    lines = head.split(b"\r\n")
    assert lines[:3] == [b"HTTP/1.1 404 Not Found", b"x-request-id: r1", b"content-length: 2"]
    assert lines[3].startswith(b"date: ") and lines[3].endswith(b" GMT")
    assert lines[4:] == [b"", b""]
    head, close = answer_head(200, [(b"connection", b"close")], False, keep_alive=True,
                              chunked=True)
    assert close is True  # the answer's own connection: close wins, and is written once
    assert head.count(b"connection:") == 1 and b"connection: close\r\n" in head
    assert head.endswith(b"transfer-encoding: chunked\r\n\r\n")
    head, _ = answer_head(299, [], False, keep_alive=True)
    assert head.startswith(b"HTTP/1.1 299 \r\n") and b"connection: keep-alive\r\n" in head


@pytest.mark.parametrize("answer_head", IMPLEMENTATIONS)
@pytest.mark.parametrize("bad", [b"a\r\nx-injected: 1", b"a\rb", b"a\nb", b"a\x00b"])
def test_a_header_that_would_split_the_head_is_refused(answer_head, bad):
    with pytest.raises(InvalidHeader):
        answer_head(200, [(b"x-ok", b"fine"), (b"x-model", bad)], False)
    with pytest.raises(InvalidHeader):
        answer_head(200, [(bad, b"fine")], False)


_PART = st.binary(max_size=12)


@given(status=st.integers(100, 599),
       headers=st.lists(st.tuples(st.one_of(st.just(b"connection"), _PART),
                                  st.one_of(st.just(b"Close"), _PART)), max_size=6),
       close=st.booleans(), keep_alive=st.booleans(), chunked=st.booleans())
def test_both_implementations_write_the_same_bytes(status, headers, close, keep_alive,
                                                   chunked):
    outcomes = []
    for answer_head in IMPLEMENTATIONS:
        try:
            head, closes = answer_head(status, list(headers), close, keep_alive, chunked)
            # (the second may have turned between the two calls)
            outcomes.append((re.sub(rb"\r\ndate: [^\r]*\r\n", b"\r\ndate\r\n", head), closes))
        except InvalidHeader:
            outcomes.append("invalid")
    assert outcomes[0] == outcomes[1]
