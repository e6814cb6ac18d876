"""The tensor codecs and collation of djl/_tensor.pxi (issue 9, point 4).

Every decode is compared with numpy's or Python's own reading of the same bytes
(``json.loads`` rounded to float32, ``np.load``, ``djl.ndlist``), and every encode is
read back with those readers.
"""

from __future__ import annotations

import io
import json
import math
import struct
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from djl import _batch
from djl._batch import (
    FORMAT_JSON,
    FORMAT_NDLIST,
    FORMAT_NPZ,
    collate,
    encode_rows,
    encode_tensors,
    input_format,
    output_format,
    parse_tensors,
)
from djl.errors import BadInput, TranslateError
from djl.ndlist import decode_ndlist, decode_ndlist_with_names, encode_ndlist

DTYPES = [np.dtype(d) for d in ("float32", "float64", "float16", "int8", "uint8", "int16",
                                "uint16", "int32", "uint32", "int64", "uint64", "bool",
                                "complex64")]
JSON_DTYPES = [d for d in DTYPES if d.kind != "c"]
SHAPES = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)


def arrays_of(dtypes: list[np.dtype], shapes=SHAPES) -> st.SearchStrategy[np.ndarray]:
    return st.sampled_from(dtypes).flatmap(lambda dt: hnp.arrays(dt, shapes))


def npz(*arrays: np.ndarray, compressed: bool = False, **named: np.ndarray) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, *arrays, **named)
    return buf.getvalue()


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal shape, dtype and bits (NaN payloads and -0.0 included)."""
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def same_values(a: np.ndarray, b: np.ndarray) -> bool:
    """Like ``same``, but any NaN equals any NaN (JSON carries no NaN payload or sign)."""
    if a.dtype.kind == "f" and a.dtype == b.dtype:
        nan = np.array(np.nan, dtype=a.dtype)
        a, b = np.where(np.isnan(a), nan, a), np.where(np.isnan(b), nan, b)
    return same(a, b)


def json_array(payload: bytes | str) -> np.ndarray:
    """Python's own reading of a JSON payload as DJL's float32: every number a float
    (so "-0" is -0.0, as Java's parseFloat reads it), rounded once from the double."""
    value = json.loads(payload, parse_int=float)
    if isinstance(value, dict):
        value = value["inputs"] if "inputs" in value else value["instance"]
    with np.errstate(over="ignore"):
        return np.array(value, dtype=np.float64).astype(np.float32)


# -- JSON in -----------------------------------------------------------------------------

_json_numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(json.dumps),
    st.floats(width=32).map(lambda x: json.dumps(float(x))),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda x: f"{x:.3e}"),
    st.from_regex(r"\A-?(0|[1-9][0-9]{0,25})(\.[0-9]{1,25})?([eE][-+]?[0-9]{1,3})?\Z"),
)


@st.composite
def json_payloads(draw: st.DrawFn) -> str:
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5))
    count = math.prod(shape)
    numbers = iter(draw(st.lists(_json_numbers, min_size=count, max_size=count)))
    space = draw(st.sampled_from(["", " ", "\n\t "]))

    def nest(dims: tuple[int, ...]) -> str:
        if not dims:
            return next(numbers)
        return "[" + f",{space}".join(nest(dims[1:]) for _ in range(dims[0])) + space + "]"

    body = nest(shape)
    wrap = draw(st.sampled_from(["bare", "inputs", "instance", "both"]))
    if wrap == "bare":
        return space + body + space
    other = json.dumps(draw(_json_values))
    if wrap == "both":
        return f'{{"instance": [1], "x": {other}, "inputs":{space}{body}}}'
    return f'{{"other": {other}, "{wrap}": {body}, "more": [{other}]}}'


def _nested(inner: st.SearchStrategy) -> st.SearchStrategy:
    return st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3)


_json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.text() | st.integers(), _nested, max_leaves=10
)


@settings(max_examples=300, deadline=None)
@given(json_payloads())
def test_json_parse_equals_json_loads_as_float32(text: str) -> None:
    expected = json_array(text)
    parsed = parse_tensors(text.encode(), FORMAT_JSON)
    assert parsed.signature == (("float32", expected.shape),)
    assert len(parsed) == 1 and parsed.names == (None,)
    (batch,) = collate([parsed, parsed])
    assert batch.shape == (2, *expected.shape) and batch.flags.c_contiguous
    assert same(batch[0], expected) and same(batch[1], expected)


def test_json_payload_kinds() -> None:
    for payload in (b"[1, 2]", bytearray(b"[1, 2]"), memoryview(b"xx[1, 2]")[2:]):
        (batch,) = collate([parse_tensors(payload, FORMAT_JSON)])
        assert batch.tolist() == [[1.0, 2.0]]
    escaped = b'{"in\\u0070uts": [3], "inputs\\"": "x"}'  # a key written with an escape
    assert parse_tensors(escaped, FORMAT_JSON).arrays()[0].tolist() == [3.0]
    last = b'{"inputs": [1], "inputs": [2, 3]}'  # the last duplicate wins, as in json.loads
    assert parse_tensors(last, FORMAT_JSON).arrays()[0].tolist() == [2.0, 3.0]
    values = b"[1e400, -1e400, 1e-400, -0, 3.4028235e38, 16777217, 0.1]"
    assert same(parse_tensors(values, FORMAT_JSON).arrays()[0], json_array(values))


def test_json_numbers_convert_exactly_like_python_floats() -> None:
    """20k hard tokens (random doubles, 1-30 digit mantissas over the whole exponent range,
    exact midpoints between doubles) read as float(token) then float32, bit for bit."""
    rng = np.random.default_rng(11)
    tokens = [repr(float(v)) for v in rng.integers(0, 2**63, 4000).view(np.float64)
              if np.isfinite(v)]
    for _ in range(8000):
        digits = "".join(map(str, rng.integers(0, 10, rng.integers(1, 31)))).lstrip("0") or "0"
        tokens.append(f"{digits}e{rng.integers(-360, 330)}")
    for _ in range(4000):  # m.5 ulp: the decimal lies exactly halfway between two doubles
        mantissa, exponent = int(rng.integers(2**52, 2**53)), int(rng.integers(-80, 80))
        half = (2 * mantissa + 1) * (2 ** (exponent - 1)) if exponent >= 1 else None
        tokens.append(str(half) if half else f"{(2 * mantissa + 1) * 5 ** (1 - exponent)}"
                                             f"e{exponent - 1}")
    tokens += ["4.9e-324", "2.4703282292062327e-324", "1.7976931348623157e308",
               "1.7976931348623159e308", "3.4028235677973366e38", "1.401298464324817e-45",
               "7.006492321624085e-46", "0." + "0" * 400 + "1", "1" + "0" * 400]
    payload = ("[" + ",".join(tokens) + "]").encode()
    with np.errstate(over="ignore"):
        expected = np.array([float(t) for t in tokens]).astype(np.float32)
    assert same(parse_tensors(payload, FORMAT_JSON).arrays()[0], expected)


def test_collate_fills_each_row_from_its_own_item() -> None:
    items = [parse_tensors(json.dumps([i, i + 0.5, -i]).encode(), FORMAT_JSON)
             for i in range(8)]
    (batch,) = collate(items)
    assert batch.tolist() == [[i, i + 0.5, -i] for i in range(8)]
    assert batch.flags.writeable and batch.flags.owndata


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "the payload is empty"),
        (b"   ", "the payload is empty"),
        (b"[", "expected a number: the payload ends at byte 1"),
        (b"[]", "empty array"),
        (b"[[]]", "row 0 is empty"),
        (b"[[1,2],[3]]", "row 1 has 1 value, row 0 has 2"),
        (b"[" + b"[1,2]," * 3 + b"[1]]", "row 3 has 1 value, row 0 has 2"),
        (b"[[[1,2],[3,4]],[[1,2],[3]]]", "array at [1][1] has 1 value, [0][0] has 2"),
        (b"[1,[2]]", "element [1] is an array where a number was expected"),
        (b"[[1],2]", "element [1] is a number where an array was expected"),
        (b'{"x": 1}', 'no "inputs" (or "instance") key'),
        (b'{"inputs": 3}', '"inputs" is not an array of numbers'),
        (b'{"inputs": {"a": [1]}}', '"inputs" is not an array of numbers'),
        (b"[1,2,]", "expected a number at byte 5"),
        (b'["a"]', "expected a number at byte 1"),
        (b"[true]", "expected a number at byte 1"),
        (b"[null]", "expected a number at byte 1"),
        (b"[1] x", "unexpected data after the JSON array at byte 4"),
        (b"[01]", "expected ',' or ']' at byte 2"),
        (b"[1.]", "expected a number at byte 1"),
        (b"[.5]", "expected a number at byte 1"),
        (b"[+1]", "expected a number at byte 1"),
        (b"[0x10]", "expected ',' or ']'"),
        (b"[nan]", "expected a number"),
        (b"[-NaN]", "expected a number"),
        (b'{"a": "\xff", "inputs": [1]}', "invalid UTF-8 at byte 7"),
        (b'{"a": "\\q", "inputs": [1]}', "invalid escape"),
        (b'{"a": "x\ny", "inputs": [1]}', "control character in a string"),
        (b'{"a": [1, 2}, "inputs": [1]}', "expected ',' or ']'"),
        (b'{"a" 1}', "expected ':'"),
        (b'{"inputs": [1]', "expected ',' or '}'"),
        (b"\xef\xbb\xbf[1]", "expected an array of numbers"),
        (b'"text"', "expected an array of numbers"),
        (b"[" * 100 + b"1" + b"]" * 100, "arrays nested deeper than 64"),
        (b'{"a": ' + b"[" * 600 + b"]" * 600 + b', "inputs": [1]}', "nested deeper than 512"),
    ],
)
def test_json_errors_say_what_and_where(payload: bytes, message: str) -> None:
    with pytest.raises(BadInput) as info:
        parse_tensors(payload, FORMAT_JSON)
    assert str(info.value).startswith("JSON input: ")
    assert message in str(info.value)


def test_bad_input_is_a_400_translate_exception_and_a_value_error() -> None:
    err = BadInput("x")
    assert isinstance(err, TranslateError) and isinstance(err, ValueError)
    assert (err.status, err.type, err.config_key) == (400, "TranslateException",
                                                     "bad_request_http_code")


# -- NDList and npz in -------------------------------------------------------------------

_any_order = st.sampled_from(DTYPES).flatmap(
    lambda dt: st.sampled_from([dt, dt.newbyteorder(">")]) if dt.itemsize > 1 else st.just(dt)
).flatmap(lambda dt: hnp.arrays(dt, SHAPES))


@settings(max_examples=150, deadline=None)
@given(st.lists(_any_order, min_size=1, max_size=3), st.booleans())
def test_npz_parse_equals_np_load(arrays: list[np.ndarray], compressed: bool) -> None:
    fortran = [np.asfortranarray(a) for a in arrays]
    payload = npz(*fortran, compressed=compressed)
    with np.load(io.BytesIO(payload)) as archive:
        expected = [archive[name] for name in archive.files]
        names = tuple(archive.files)
    parsed = parse_tensors(payload, FORMAT_NPZ)
    assert parsed.names == names
    assert parsed.signature == tuple((a.dtype.name, a.shape) for a in expected)
    batches = collate([parsed, parse_tensors(bytearray(payload), FORMAT_NPZ)])
    for batch, want in zip(batches, expected, strict=True):
        native = want.astype(want.dtype.newbyteorder("="))
        assert batch.dtype == native.dtype and batch.shape == (2, *want.shape)
        assert same(np.ascontiguousarray(batch[0]), np.ascontiguousarray(native))
        assert same(np.ascontiguousarray(batch[1]), np.ascontiguousarray(native))


def test_npz_keeps_archive_order_and_names() -> None:
    payload = npz(np.zeros(2), np.ones(3, np.int32), weights=np.eye(2))
    with np.load(io.BytesIO(payload)) as archive:
        assert parse_tensors(payload, FORMAT_NPZ).names == tuple(archive.files)


@settings(max_examples=100, deadline=None)
@given(st.lists(_any_order, min_size=1, max_size=3), st.data())
def test_ndlist_parse_equals_pure_reading(arrays: list[np.ndarray], data: st.DataObject) -> None:
    names = data.draw(st.lists(st.none() | st.text(max_size=5), min_size=len(arrays),
                               max_size=len(arrays)))
    payload = encode_ndlist(arrays, names=names)
    parsed = parse_tensors(payload, FORMAT_NDLIST)
    assert parsed.names == tuple(names)
    for batch, (_, want) in zip(collate([parsed]), decode_ndlist_with_names(payload),
                                   strict=True):
        assert same(batch[0, ...], want)


def test_ndlist_bool_bytes_are_normalised() -> None:
    payload = bytearray(encode_ndlist([np.array([True, False, True])]))
    payload[-3] = 7  # any non-zero byte is true, and never an invalid numpy bool
    (batch,) = collate([parse_tensors(bytes(payload), FORMAT_NDLIST)])
    assert batch.view(np.uint8).tolist() == [[1, 0, 1]]


def test_absurd_shapes_do_not_allocate() -> None:
    header = (struct.pack(">i", 1) + b"\x00\x04NDAR" + struct.pack(">i", 3) + b"\x00"
              + b"\x00\x07default\x00\x07FLOAT32" + struct.pack(">iq", 1, 10**12)
              + struct.pack(">i", 0) + b"<" + struct.pack(">i", 2**31 - 1))
    with pytest.raises(BadInput, match="does not match FLOAT32 shape"):
        parse_tensors(header + b"\x00" * 16, FORMAT_NDLIST)
    # an npz whose .npy header claims 10**12 elements over 16 data bytes
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        head = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000,), }"
        raw = head.encode().ljust(118) + b"\n"
        archive.writestr("x.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(raw)) + raw
                         + b"\x00" * 16)
    with pytest.raises(BadInput, match="16 data bytes, shape"):
        parse_tensors(buf.getvalue(), FORMAT_NPZ)
    # a deflated entry that claims far more than deflate can expand to
    bomb = bytearray(npz(np.zeros(64, np.float32), compressed=True))
    central = bomb.rindex(b"PK\x01\x02")
    bomb[central + 24 : central + 28] = struct.pack("<I", 2**31)
    with pytest.raises(BadInput, match="claims 2147483648 bytes"):
        parse_tensors(bytes(bomb), FORMAT_NPZ)
    bomb[central + 24 : central + 28] = struct.pack("<I", 0)  # zlib reads 0 as "no limit"
    with pytest.raises(BadInput, match="is corrupt: it inflates to 1 bytes, not 0"):
        parse_tensors(bytes(bomb), FORMAT_NPZ)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "not a zip archive"),
        (b"NDAR", "not a zip archive"),
        (b"PK\x03\x04" + b"\x00" * 40, "no end of central directory"),
        (npz(np.zeros(3))[:-1], "no end of central directory"),
        (npz(np.zeros(3))[:60] + npz(np.zeros(3))[-22:], "lies outside the archive"),
    ],
)
def test_npz_errors(payload: bytes, message: str) -> None:
    with pytest.raises(BadInput, match="npz input") as info:
        parse_tensors(payload, FORMAT_NPZ)
    assert message in str(info.value)


def test_npz_entry_errors() -> None:
    def archive(name: str, data: bytes) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr(name, data)
        return buf.getvalue()

    ok = io.BytesIO()
    np.save(ok, np.arange(3, dtype=np.int16))
    cases = {
        archive("notes.txt", b"hi"): "is not a .npy array",
        archive("a.npy", b"hello world"): "bad magic",
        archive("a.npy", ok.getvalue()[:-1]): "5 data bytes, shape (3,) of int16 needs 6",
        archive("a.npy", ok.getvalue().replace(b"<i2", b"|O8")): "unsupported dtype",
        archive("a.npy", ok.getvalue().replace(b"<i2", b"<U1")): "unsupported dtype",
        archive("a.npy", ok.getvalue().replace(b"False", b"Fals(")): "not a Python literal",
        archive("a.npy", ok.getvalue().replace(b"(3,)", b"(-3,)")): "invalid .npy header",
    }
    for payload, message in cases.items():
        with pytest.raises(BadInput) as info:
            parse_tensors(payload, FORMAT_NPZ)
        assert message in str(info.value), (message, str(info.value))
    corrupt = bytearray(npz(np.arange(10.0)))
    corrupt[100] ^= 0xFF  # inside the stored data
    with pytest.raises(BadInput, match="fails its CRC check"):
        parse_tensors(bytes(corrupt), FORMAT_NPZ)
    with pytest.raises(BadInput, match="holds no arrays"):
        parse_tensors(npz(), FORMAT_NPZ)
    with pytest.raises(BadInput, match="no arrays"):
        parse_tensors(struct.pack(">i", 0), FORMAT_NDLIST)


def _valid_payloads() -> list[tuple[int, bytes]]:
    sample = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array(True)]
    return [
        (FORMAT_JSON, b'{"x": ["a\\n", {"b": null}], "inputs": [[1.5, -2e3], [NaN, 4]]}'),
        (FORMAT_NDLIST, encode_ndlist(sample, names=["x", None])),
        (FORMAT_NPZ, npz(*sample)),
        (FORMAT_NPZ, npz(*sample, compressed=True)),
    ]


@pytest.mark.parametrize(("fmt", "payload"), _valid_payloads())
def test_every_truncation_is_a_clean_error(fmt: int, payload: bytes) -> None:
    for end in range(len(payload)):
        with pytest.raises(BadInput):
            parse_tensors(payload[:end], fmt)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_valid_payloads()), st.binary(min_size=1, max_size=8), st.data())
def test_mutated_payloads_parse_or_fail_cleanly(case, patch: bytes, data) -> None:
    fmt, payload = case
    offset = data.draw(st.integers(0, len(payload) - 1))
    mutated = payload[:offset] + patch + payload[offset + len(patch):]
    try:
        parsed = parse_tensors(mutated, fmt)
    except BadInput as exc:
        assert str(exc)
    else:
        for array in collate([parsed]):
            assert isinstance(array, np.ndarray)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([FORMAT_JSON, FORMAT_NDLIST, FORMAT_NPZ]))
def test_random_bytes_parse_or_fail_cleanly(payload: bytes, fmt: int) -> None:
    for candidate in (payload, b"PK" + payload, b"[" + payload):
        try:
            collate([parse_tensors(candidate, fmt)])
        except BadInput:
            pass


def test_collate_rejects_mixed_signatures() -> None:
    a = parse_tensors(b"[1, 2]", FORMAT_JSON)
    b = parse_tensors(b"[1, 2, 3]", FORMAT_JSON)
    with pytest.raises(ValueError, match=r"item 1 has signature \(\('float32', \(3,\)\),\)"):
        collate([a, b])
    with pytest.raises(ValueError, match="no items"):
        collate([])
    assert {a.signature, b.signature, parse_tensors(b"[7, 8]", FORMAT_JSON).signature} == {
        a.signature, b.signature}


def test_parse_tensors_rejects_what_is_not_a_payload() -> None:
    with pytest.raises(TypeError, match="bytes-like"):
        parse_tensors("[1]", FORMAT_JSON)
    with pytest.raises(ValueError, match="unknown tensor format"):
        parse_tensors(b"[1]", 99)


# -- encoders ----------------------------------------------------------------------------


def _from_json(value, like: np.ndarray) -> np.ndarray:
    return np.array(value, dtype=like.dtype).reshape(like.shape)


@settings(max_examples=300, deadline=None)
@given(arrays_of(JSON_DTYPES))
def test_json_encode_reads_back_equal(array: np.ndarray) -> None:
    body = json.loads(encode_tensors([array], FORMAT_JSON))
    assert list(body) == ["predictions"]
    back = _from_json(body["predictions"], array)
    assert same_values(back, array)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(width=32), min_size=1, max_size=20))
def test_float32_is_written_shortest(values: list[float]) -> None:
    array = np.array(values, dtype=np.float32)
    text = encode_tensors([array], FORMAT_JSON).decode()
    tokens = text[len('{"predictions":['):-2].split(",")
    for value, token in zip(array, tokens, strict=True):
        if np.isfinite(value):
            assert token == repr(float(str(value)))  # numpy's shortest digits, Python's layout
        else:
            assert token == {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}[str(value)]


def test_json_layouts() -> None:
    x = np.array([[0.1, 1e-5, 1e16, 123.0, -0.0]], np.float32)
    assert encode_tensors([x], FORMAT_JSON) == (
        b'{"predictions":[[0.1,1e-05,1e+16,123.0,-0.0]]}')
    several = encode_tensors([x[0, :2], np.array([True, False]), np.arange(-1, 2)],
                             FORMAT_JSON, names=["x", None, 'q"'])
    assert several == (b'{"predictions":[["x",[0.1,1e-05]],["arr_1",[true,false]],'
                       b'["q\\"",[-1,0,1]]]}')
    assert encode_tensors([np.float64(1 / 3)], FORMAT_JSON) == (
        b'{"predictions":0.3333333333333333}')
    assert encode_tensors([np.array([0.1, 65504, np.inf], np.float16)], FORMAT_JSON) == (
        b'{"predictions":[0.1,65500.0,Infinity]}')
    assert encode_tensors([np.zeros((2, 0))], FORMAT_JSON) == b'{"predictions":[[],[]]}'
    big = np.array([2**64 - 1], np.uint64), np.array([-(2**63)], np.int64)
    assert json.loads(encode_tensors(list(big), FORMAT_JSON))["predictions"] == [
        ["arr_0", [2**64 - 1]], ["arr_1", [-(2**63)]]]
    with pytest.raises(ValueError, match="complex"):
        encode_tensors([np.zeros(2, np.complex64)], FORMAT_JSON)
    with pytest.raises(ValueError, match="cannot encode output 0 of dtype <U1"):
        encode_tensors([np.array(["a"])], FORMAT_JSON)
    with pytest.raises(ValueError, match="names: expected 1, got 2"):
        encode_tensors([x], FORMAT_JSON, names=["a", "b"])


@settings(max_examples=150, deadline=None)
@given(st.lists(arrays_of(DTYPES), min_size=1, max_size=3), st.booleans())
def test_ndlist_and_npz_encode_read_back_equal(arrays: list[np.ndarray], named: bool) -> None:
    names = [f"out{i}" for i in range(len(arrays))] if named else None
    decoded = decode_ndlist_with_names(encode_tensors(arrays, FORMAT_NDLIST, names))
    assert [n for n, _ in decoded] == (names or [None] * len(arrays))
    assert all(same(back, a) for (_, back), a in zip(decoded, arrays, strict=True))
    assert encode_tensors(arrays, FORMAT_NDLIST, names) == encode_ndlist(arrays, names=names)
    with np.load(io.BytesIO(encode_tensors(arrays, FORMAT_NPZ, names))) as archive:
        assert archive.files == (names or [f"arr_{i}" for i in range(len(arrays))])
        assert all(same(archive[f], a) for f, a in zip(archive.files, arrays, strict=True))


_batched = st.integers(1, 4).flatmap(
    lambda n: st.lists(
        st.sampled_from(DTYPES).flatmap(
            lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0,
                                                       max_side=3).map(lambda s: (n, *s)))),
        min_size=1, max_size=3))


@settings(max_examples=200, deadline=None)
@given(_batched, st.data())
def test_encode_rows_equals_encoding_each_row(arrays: list[np.ndarray], data) -> None:
    n = arrays[0].shape[0]
    has_complex = any(a.dtype.kind == "c" for a in arrays)
    formats = [FORMAT_NDLIST, FORMAT_NPZ] if has_complex else [FORMAT_JSON, FORMAT_NDLIST,
                                                                 FORMAT_NPZ]
    fmts = data.draw(st.lists(st.sampled_from(formats), min_size=n, max_size=n))
    names = data.draw(st.none() | st.just([f"o{i}" for i in range(len(arrays))]))
    rows = encode_rows(arrays, fmts, names)
    assert rows == [encode_tensors([a[i] for a in arrays], fmts[i], names) for i in range(n)]
    for i, (row, fmt) in enumerate(zip(rows, fmts, strict=True)):
        want = [a[i] for a in arrays]
        if fmt == FORMAT_NDLIST:
            back = decode_ndlist(row)
        elif fmt == FORMAT_NPZ:
            with np.load(io.BytesIO(row)) as archive:
                back = [archive[f] for f in archive.files]
        else:
            body = json.loads(row)["predictions"]
            values = [body] if len(arrays) == 1 else [v for _, v in body]
            back = [_from_json(v, w) for v, w in zip(values, want, strict=True)]
        check = same_values if fmt == FORMAT_JSON else same  # binary formats keep NaN bits
        assert all(check(b, w) for b, w in zip(back, want, strict=True))


def test_round_trip_parse_collate_encode_rows() -> None:
    """The engine's path: payloads in, one batch, one answer per item in its own format."""
    rng = np.random.default_rng(0)
    inputs = rng.standard_normal((6, 4)).astype(np.float32)
    payloads = [
        (FORMAT_JSON, json.dumps({"inputs": inputs[0].tolist()}).encode()),
        (FORMAT_NDLIST, encode_ndlist([inputs[1]])),
        (FORMAT_NPZ, npz(inputs[2])),
        (FORMAT_NPZ, npz(inputs[3], compressed=True)),
        (FORMAT_JSON, json.dumps(inputs[4].tolist()).encode()),
        (FORMAT_NDLIST, encode_ndlist([inputs[5].astype(">f4")])),
    ]
    parsed = [parse_tensors(p, f) for f, p in payloads]
    (batch,) = collate(parsed)
    assert same(batch, json_array(json.dumps(inputs.tolist())))
    outputs = batch * 2
    rows = encode_rows([outputs], [f for f, _ in payloads])
    assert json.loads(rows[0])["predictions"] == [float(v) for v in
                                                  (inputs[0] * 2).astype(np.float32)
                                                  .astype(str).astype(float)]
    assert same(decode_ndlist(rows[1])[0], inputs[1] * 2)
    with np.load(io.BytesIO(rows[2])) as archive:
        assert same(archive["arr_0"], inputs[2] * 2)


def test_encode_rows_checks_the_batch_axis() -> None:
    with pytest.raises(ValueError, match=r"output 0 has shape \(2, 3\), expected 3 rows"):
        encode_rows([np.zeros((2, 3))], [FORMAT_JSON] * 3)
    with pytest.raises(ValueError, match="expected 1 rows"):
        encode_rows([np.float32(1)], [FORMAT_JSON])
    assert encode_rows([np.zeros((0, 2))], []) == []


def test_ndlist_rejects_what_it_cannot_carry() -> None:
    with pytest.raises(ValueError, match="NDList cannot encode array 0 of dtype complex128"):
        encode_tensors([np.zeros(1, np.complex128)], FORMAT_NDLIST)


# -- content negotiation -----------------------------------------------------------------


def test_formats_follow_djls_translator() -> None:
    assert input_format("application/json; charset=utf-8", b"[1]") == FORMAT_JSON
    assert input_format("application/vnd.x+json", b"[1]") == FORMAT_JSON
    assert input_format("tensor/ndlist", b"\x00\x00") == FORMAT_NDLIST
    assert input_format(None, b"PK\x03\x04") == FORMAT_NPZ
    assert input_format("application/octet-stream", encode_ndlist([1])) == FORMAT_NDLIST
    assert input_format("", b"[1]") == FORMAT_JSON
    assert input_format("tensor/npz", b"PK") == FORMAT_NPZ
    with pytest.raises(BadInput, match="Unsupported content type text/x: tensors are read"):
        input_format("text/x", b"[1]")
    with pytest.raises(BadInput, match="Unsupported content type application/octet-stream"):
        input_format("application/octet-stream", b"[1]")
    with pytest.raises(BadInput, match="The request body is empty"):
        input_format("application/json", b"")
    assert output_format("tensor/npz", None) == FORMAT_NPZ
    assert output_format("application/json", "tensor/npz") == FORMAT_NPZ
    assert output_format("application/json", None) == FORMAT_JSON
    assert output_format("application/json", "tensor/ndlist") == FORMAT_NDLIST
    assert output_format(None, "text/plain, Application/JSON") == FORMAT_JSON
    assert output_format("tensor/ndlist", "*/*") == FORMAT_NDLIST
    assert output_format(None, None) == FORMAT_NDLIST
    assert _batch.CONTENT_TYPES == {FORMAT_JSON: "application/json",
                                    FORMAT_NDLIST: "tensor/ndlist", FORMAT_NPZ: "tensor/npz",
                                    _batch.FORMAT_V2_JSON: "application/json",
                                    _batch.FORMAT_V2_BINARY: _batch.V2_BINARY_MEDIA_TYPE}
