"""The DJL NDList binary encoding (spec Appendix D)."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from djl.ndlist import decode_ndlist, decode_ndlist_with_names, encode_ndlist

DTYPES = [
    np.float32,
    np.float64,
    np.float16,
    np.int8,
    np.uint8,
    np.int16,
    np.uint16,
    np.int32,
    np.uint32,
    np.int64,
    np.uint64,
    np.bool_,
    np.complex64,
]


def s16(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">h", len(raw)) + raw


def header(
    dtype: str,
    shape: tuple[int, ...],
    *,
    version: int = 3,
    name: str | None = None,
    order: bytes = b"<",
    nbytes: int | None = None,
    layout: str | None = None,
) -> bytes:
    """One array record up to (and including) the data length, built field by field."""
    out = s16("NDAR") + struct.pack(">i", version)
    if version > 1:
        out += b"\x00" if name is None else b"\x01" + s16(name)
    out += s16("default") + s16(dtype)
    out += struct.pack(">i", len(shape)) + b"".join(struct.pack(">q", d) for d in shape)
    layout = "?" * len(shape) if layout is None else layout
    out += struct.pack(">i", len(layout)) + b"".join(struct.pack(">h", ord(c)) for c in layout)
    if version > 2:
        out += order
    if nbytes is None:
        numpy_name = "bool" if dtype == "BOOLEAN" else dtype.lower()
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(numpy_name).itemsize
    return out + struct.pack(">i", nbytes)


# -- golden bytes ----------------------------------------------------------------------------

#: float32 [1.0, 2.0] written by hand from Appendix D.
GOLDEN_FLOAT32 = bytes.fromhex(
    "00000001"  # i32 count = 1
    "0004" "4e444152"  # s16str "NDAR"
    "00000003"  # i32 version = 3
    "00"  # u8 has_name = 0
    "0007" "64656661756c74"  # s16str "default"
    "0007" "464c4f41543332"  # s16str "FLOAT32"
    "00000001"  # i32 ndim = 1
    "0000000000000002"  # i64 shape[0] = 2
    "00000001" "003f"  # i32 layout_len = 1, i16 '?'
    "3c"  # u8 byte order '<'
    "00000008"  # i32 nbytes = 8
    "0000803f" "00000040"  # 1.0f, 2.0f little-endian
)  # fmt: skip


def test_encode_matches_golden_bytes() -> None:
    assert encode_ndlist([np.array([1.0, 2.0], dtype=np.float32)]) == GOLDEN_FLOAT32


def test_decode_golden_bytes() -> None:
    (array,) = decode_ndlist(GOLDEN_FLOAT32)
    assert array.dtype == np.float32
    assert array.shape == (2,)
    assert array.tolist() == [1.0, 2.0]


def test_decode_big_endian_named_array_built_by_hand() -> None:
    data = np.array([[1, -2], [3, 70000]], dtype=">i4").tobytes()
    payload = struct.pack(">i", 1) + header("INT32", (2, 2), name="logits", order=b">") + data
    ((name, array),) = decode_ndlist_with_names(payload)
    assert name == "logits"
    assert array.dtype == np.dtype(np.int32)  # native order after decoding
    assert array.tolist() == [[1, -2], [3, 70000]]


def test_decode_accepts_djl_python_bool_name_and_old_versions() -> None:
    bools = struct.pack(">i", 1) + header("BOOL", (3,)) + b"\x01\x00\x01"
    assert decode_ndlist(bools)[0].tolist() == [True, False, True]
    v2 = struct.pack(">i", 1) + header("INT8", (2,), version=2, name="n") + b"\x01\xff"
    assert decode_ndlist_with_names(v2)[0][0] == "n"
    assert decode_ndlist(v2)[0].tolist() == [1, -1]
    v1 = struct.pack(">i", 1) + header("FLOAT64", (), version=1) + struct.pack("<d", 2.5)
    assert decode_ndlist(v1)[0].tolist() == 2.5


def test_decode_ignores_layout_characters() -> None:
    payload = struct.pack(">i", 1) + header("UINT8", (2,), layout="NC") + b"\x07\x08"
    assert decode_ndlist(payload)[0].tolist() == [7, 8]


def test_nonzero_bool_bytes_decode_as_true() -> None:
    payload = struct.pack(">i", 1) + header("BOOLEAN", (2,)) + b"\x00\x05"
    assert decode_ndlist(payload)[0].tolist() == [False, True]


def test_encoder_writes_java_dtype_names() -> None:
    assert b"\x00\x07BOOLEAN" in encode_ndlist([np.array([True])])
    assert b"\x00\x05INT64" in encode_ndlist([np.array([1], dtype=np.int64)])


def test_names_round_trip() -> None:
    arrays = [np.zeros(1), np.ones(2)]
    encoded = encode_ndlist(arrays, names=["a", None])
    assert [n for n, _ in decode_ndlist_with_names(encoded)] == ["a", None]
    with pytest.raises(ValueError, match="names"):
        encode_ndlist(arrays, names=["only one"])


# -- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(), (0,), (3,), (2, 0, 4), (2, 3, 4), (1, 1, 1, 1, 5)])
def test_round_trip(dtype: type, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    array = (rng.random(shape) * 100).astype(dtype)
    (back,) = decode_ndlist(encode_ndlist([array]))
    assert back.dtype == np.dtype(dtype)
    assert back.shape == shape
    assert np.array_equal(back, array)
    assert back.flags.writeable and back.flags.c_contiguous


def test_round_trip_many_arrays_and_empty_list() -> None:
    arrays = [np.arange(5, dtype=np.int64), np.array(3.5), np.zeros((0,), dtype=np.uint8)]
    back = decode_ndlist(encode_ndlist(arrays))
    assert len(back) == 3
    assert all(
        np.array_equal(b, a) and b.dtype == a.dtype for b, a in zip(back, arrays, strict=True)
    )
    assert encode_ndlist([]) == b"\x00\x00\x00\x00"
    assert decode_ndlist(b"\x00\x00\x00\x00") == []


def test_encode_normalises_order_and_layout() -> None:
    big = np.arange(6, dtype=">f8").reshape(2, 3)
    fortran = np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3))
    strided = np.arange(10, dtype=np.int32)[::3]
    for array in (big, fortran, strided):
        (back,) = decode_ndlist(encode_ndlist([array]))
        assert np.array_equal(back, array)
    assert encode_ndlist([big]) == encode_ndlist([big.astype("<f8")])


def test_encode_accepts_array_likes() -> None:
    (back,) = decode_ndlist(encode_ndlist([[1.0, 2.0]]))
    assert back.dtype == np.float64 and back.tolist() == [1.0, 2.0]


def test_decode_accepts_bytearray_and_memoryview() -> None:
    assert decode_ndlist(bytearray(GOLDEN_FLOAT32))[0].tolist() == [1.0, 2.0]
    padded = b"xx" + GOLDEN_FLOAT32
    assert decode_ndlist(memoryview(padded)[2:])[0].tolist() == [1.0, 2.0]


def test_decoded_arrays_do_not_alias_the_input() -> None:
    data = bytearray(GOLDEN_FLOAT32)
    (array,) = decode_ndlist(data)
    array[0] = 9.0
    assert bytes(data) == GOLDEN_FLOAT32


@pytest.mark.parametrize(
    "array",
    [np.array(["text"]), np.array([object()]), np.array(["2024-01-01"], dtype="datetime64[D]")],
)
def test_encode_rejects_unsupported_dtypes(array: np.ndarray) -> None:
    with pytest.raises(ValueError, match="cannot encode"):
        encode_ndlist([array])


# -- corrupt input ---------------------------------------------------------------------------


def test_every_truncation_is_a_value_error() -> None:
    payload = encode_ndlist(
        [np.arange(6, dtype=np.float32).reshape(2, 3), np.array(True)], names=["x", None]
    )
    for end in range(len(payload)):
        with pytest.raises(ValueError, match="Malformed NDList data"):
            decode_ndlist(payload[:end])


def corrupt(offset: int, replacement: bytes) -> bytes:
    return GOLDEN_FLOAT32[:offset] + replacement + GOLDEN_FLOAT32[offset + len(replacement) :]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "truncated array count"),
        (b"\xff\xff\xff\xff", "negative array count"),
        (b"\x00\x00\x00\x02" + GOLDEN_FLOAT32[4:], "array 1: truncated"),
        (GOLDEN_FLOAT32 + b"\x00", "1 unexpected bytes after 1 arrays"),
        (corrupt(6, b"NDAX"), "expected magic 'NDAR', got 'NDAX'"),
        (corrupt(10, struct.pack(">i", 4)), "unsupported encode version 4"),
        (corrupt(10, struct.pack(">i", 0)), "unsupported encode version 0"),
        (corrupt(14, b"\x02"), "invalid name flag 2"),
        (corrupt(26, b"FLOAT99"), "unsupported dtype 'FLOAT99'"),
        (corrupt(33, struct.pack(">i", -1)), "invalid ndim -1"),
        (corrupt(33, struct.pack(">i", 1000)), "invalid ndim 1000"),
        (corrupt(37, struct.pack(">q", -2)), "negative dimension"),
        (corrupt(45, struct.pack(">i", -1)), "negative layout length"),
        (corrupt(45, struct.pack(">i", 10**6)), "truncated layout"),
        (corrupt(51, b"|"), "invalid byte order '|'"),
        (corrupt(52, struct.pack(">i", 12)), "data length 12 does not match FLOAT32"),
        (corrupt(52, struct.pack(">i", -8)), "data length -8 does not match"),
        (corrupt(15, b"\xff\xff"), "truncated sparse format"),
        (corrupt(26, b"\xff"), "dtype is not valid UTF-8"),
    ],
)
def test_corrupt_input_errors(payload: bytes, message: str) -> None:
    with pytest.raises(ValueError, match="Malformed NDList data") as info:
        decode_ndlist(payload)
    assert message in str(info.value)


def test_data_length_overflowing_the_buffer() -> None:
    big_shape = struct.pack(">i", 1) + header("FLOAT64", (2**40,), nbytes=2**31 - 1)
    with pytest.raises(ValueError, match="does not match"):
        decode_ndlist(big_shape)
    claims_more = struct.pack(">i", 1) + header("UINT8", (100,)) + b"\x00" * 10
    with pytest.raises(ValueError, match="truncated data: need 100 bytes, 10 left"):
        decode_ndlist(claims_more)


# -- property test ---------------------------------------------------------------------------

_dtypes = st.sampled_from([np.dtype(d) for d in DTYPES]).flatmap(
    lambda dt: st.sampled_from([dt, dt.newbyteorder(">")]) if dt.itemsize > 1 else st.just(dt)
)
_arrays = _dtypes.flatmap(
    lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(_arrays, max_size=4),
    st.data(),
)
def test_round_trip_property(arrays: list[np.ndarray], data: st.DataObject) -> None:
    names = data.draw(
        st.lists(st.none() | st.text(max_size=8), min_size=len(arrays), max_size=len(arrays))
    )
    encoded = encode_ndlist(arrays, names=names)
    decoded = decode_ndlist_with_names(encoded)
    assert [name for name, _ in decoded] == names
    for (_, back), array in zip(decoded, arrays, strict=True):
        assert back.shape == array.shape
        assert back.dtype == array.dtype.newbyteorder("=")
        assert back.tobytes() == array.astype(back.dtype).tobytes()  # bitwise, NaNs included


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=80), st.integers(min_value=0, max_value=len(GOLDEN_FLOAT32) - 1))
def test_mutated_input_decodes_or_raises_value_error(patch: bytes, offset: int) -> None:
    payload = (GOLDEN_FLOAT32[:offset] + patch + GOLDEN_FLOAT32[offset + len(patch) :])[:100]
    try:
        arrays = decode_ndlist(payload)
    except ValueError as e:
        assert str(e).startswith("Malformed NDList data")
    else:
        assert all(isinstance(a, np.ndarray) for a in arrays)


def test_empty_array_with_huge_other_dimension() -> None:
    payload = struct.pack(">i", 1) + header("FLOAT32", (0, 2**40), nbytes=0)
    (array,) = decode_ndlist(payload)
    assert array.shape == (0, 2**40) and array.size == 0
    payload = struct.pack(">i", 1) + header("FLOAT32", (0, 2**62), nbytes=0)
    with pytest.raises(ValueError, match=r"Malformed NDList data: .*too large"):
        decode_ndlist(payload)
