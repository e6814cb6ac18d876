"""The DJL NDList binary encoding (``tensor/ndlist``, spec Appendix D).

DJL Serving's "binary mode" clients and ``djl_python``'s ``Input.get_as_numpy`` /
``Output.add_as_numpy`` exchange lists of arrays in this format. Every header integer is
big-endian; an array's data is raw C-order bytes in the byte order its header names
(``<`` or ``>``). Layout, one record per array after an ``i32`` count::

    s16str "NDAR" | i32 version (3) | u8 has_name [s16str name] | s16str sparse format
    | s16str dtype | i32 ndim | i64 x ndim | i32 layout_len | i16 x layout_len
    | u8 byte order | i32 nbytes | nbytes of data

``s16str`` is a 16-bit length and UTF-8 bytes (Java's ``writeUTF``; read here as unsigned,
as Java does, so names up to 65535 bytes work). Versions 1 and 2, which Java still
reads, are accepted: v1 has no name flag, v1 and v2 have no byte-order byte and their
data is little-endian.

The writer emits version 3, little-endian data, ``'?'`` layout characters and the Java
dtype names (``BOOLEAN``, not numpy's ``BOOL``, which the reader also accepts). The
reader checks every length against the bytes that remain, so truncated or corrupt input
raises ``ValueError`` with the offset and what was expected, never ``IndexError`` or
``struct.error``. Decoded arrays are fresh, writable and in native byte order.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = ["MAGIC", "VERSION", "decode_ndlist", "decode_ndlist_with_names", "encode_ndlist"]

MAGIC = "NDAR"
VERSION = 3
_MAX_I32 = 2**31 - 1
_MAX_STR = 0xFFFF
#: numpy's own limit on dimensions (32 before numpy 2); anything larger is corrupt input.
_MAX_NDIM = 64

#: Java ``DataType`` names → numpy dtypes (native order; the header gives the data's).
_DTYPES: dict[str, np.dtype[Any]] = {
    "FLOAT32": np.dtype(np.float32),
    "FLOAT64": np.dtype(np.float64),
    "FLOAT16": np.dtype(np.float16),
    "INT8": np.dtype(np.int8),
    "UINT8": np.dtype(np.uint8),
    "INT16": np.dtype(np.int16),
    "UINT16": np.dtype(np.uint16),
    "INT32": np.dtype(np.int32),
    "UINT32": np.dtype(np.uint32),
    "INT64": np.dtype(np.int64),
    "UINT64": np.dtype(np.uint64),
    "BOOLEAN": np.dtype(np.bool_),
    "BOOL": np.dtype(np.bool_),  # what djl_python's str(dtype).upper() writes
    "COMPLEX64": np.dtype(np.complex64),
}
#: (numpy kind, itemsize) → the name written; byte order does not matter here.
_NAMES: dict[tuple[str, int], str] = {
    (dt.kind, dt.itemsize): name for name, dt in _DTYPES.items() if name != "BOOL"
}


# -- encoding ------------------------------------------------------------------------------


def _s16str(text: str, what: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > _MAX_STR:
        raise ValueError(f"NDList {what} is too long: {len(raw)} bytes (at most {_MAX_STR})")
    return struct.pack(">H", len(raw)) + raw


_MAGIC_BYTES = _s16str(MAGIC, "magic")
_SPARSE_DEFAULT = _s16str("default", "sparse format")


def encode_ndlist(arrays: Iterable[Any], names: Sequence[str | None] | None = None) -> bytes:
    """Encode arrays (anything ``numpy.asarray`` accepts) as a DJL NDList.

    ``names``, when given, holds one name (or None) per array. Raises ``ValueError`` for a
    dtype DJL has no name for (strings, objects, datetimes, float128, ...) or an array of
    more than 2 GiB (the format's ``i32`` length).
    """
    # djl_python's to_nd_list wraps anything but a list: one array stays one array.
    items = list(arrays) if isinstance(arrays, list | tuple) else [arrays]
    if names is not None and len(names) != len(items):
        raise ValueError(f"NDList names: expected {len(items)}, got {len(names)}")
    parts: list[Any] = [struct.pack(">i", len(items))]
    for index, item in enumerate(items):
        array = np.asarray(item)
        dtype_name = _NAMES.get((array.dtype.kind, array.dtype.itemsize))
        if dtype_name is None:
            raise ValueError(f"NDList cannot encode array {index} of dtype {array.dtype}")
        little = np.asarray(array, dtype=array.dtype.newbyteorder("<"), order="C")
        if little.nbytes > _MAX_I32:
            raise ValueError(f"NDList array {index} is too large: {little.nbytes} bytes")
        name = names[index] if names is not None else None
        parts.append(_MAGIC_BYTES)
        parts.append(struct.pack(">i", VERSION))
        parts.append(b"\x00" if name is None else b"\x01" + _s16str(name, "array name"))
        parts.append(_SPARSE_DEFAULT)
        parts.append(_s16str(dtype_name, "dtype"))
        shape = little.shape
        parts.append(struct.pack(f">i{len(shape)}q", len(shape), *shape))
        parts.append(struct.pack(f">i{len(shape)}h", len(shape), *([ord("?")] * len(shape))))
        parts.append(b"<")
        parts.append(struct.pack(">i", little.nbytes))
        parts.append(little.reshape(-1).view(np.uint8).data)
    return b"".join(parts)


# -- decoding ------------------------------------------------------------------------------


class _Reader:
    """Bounds-checked big-endian reads over a buffer; every failure is a ValueError."""

    __slots__ = ("view", "pos", "array")

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        self.view = view
        self.pos = 0
        #: Index of the array being read, for error messages (None while in the header).
        self.array: int | None = None

    def fail(self, message: str) -> ValueError:
        where = "NDList header" if self.array is None else f"NDList array {self.array}"
        return ValueError(f"Malformed NDList data: {where}: {message} (at byte {self.pos})")

    def take(self, size: int, what: str) -> memoryview:
        remaining = len(self.view) - self.pos
        if size > remaining:
            raise self.fail(f"truncated {what}: need {size} bytes, {remaining} left")
        chunk = self.view[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def unpack(self, fmt: str, what: str) -> tuple[Any, ...]:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))

    def i32(self, what: str) -> int:
        return self.unpack(">i", what)[0]

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def string(self, what: str) -> str:
        (length,) = self.unpack(">H", f"{what} length")
        raw = self.take(length, what)
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not valid UTF-8") from None


def decode_ndlist_with_names(
    data: bytes | bytearray | memoryview,
) -> list[tuple[str | None, np.ndarray]]:
    """Decode a DJL NDList into ``(name, array)`` pairs; see ``decode_ndlist``."""
    r = _Reader(data)
    count = r.i32("array count")
    if count < 0:
        raise r.fail(f"negative array count {count}")
    result: list[tuple[str | None, np.ndarray]] = []
    for index in range(count):
        r.array = index
        result.append(_decode_array(r))
    r.array = None
    if r.pos != len(r.view):
        raise r.fail(f"{len(r.view) - r.pos} unexpected bytes after {count} arrays")
    return result


def decode_ndlist(data: bytes | bytearray | memoryview) -> list[np.ndarray]:
    """Decode a DJL NDList into numpy arrays (names are dropped).

    Raises ``ValueError`` naming the array, the byte offset and the problem when the input
    is truncated, has trailing bytes, or holds a bad magic, version, dtype, shape, byte
    order or data length.
    """
    return [array for _, array in decode_ndlist_with_names(data)]


def _decode_array(r: _Reader) -> tuple[str | None, np.ndarray]:
    magic = r.string("magic")
    if magic != MAGIC:
        raise r.fail(f"expected magic {MAGIC!r}, got {magic!r}")
    version = r.i32("version")
    if not 1 <= version <= VERSION:
        raise r.fail(f"unsupported encode version {version}")
    name: str | None = None
    if version > 1:
        flag = r.u8("name flag")
        if flag == 1:
            name = r.string("name")
        elif flag != 0:
            raise r.fail(f"invalid name flag {flag}")
    r.string("sparse format")  # ignored, as Java does
    dtype_name = r.string("dtype")
    dtype = _DTYPES.get(dtype_name.upper())
    if dtype is None:
        raise r.fail(f"unsupported dtype {dtype_name!r}")
    ndim = r.i32("ndim")
    if not 0 <= ndim <= _MAX_NDIM:
        raise r.fail(f"invalid ndim {ndim}")
    shape = r.unpack(f">{ndim}q", "shape")
    if any(dim < 0 for dim in shape):
        raise r.fail(f"negative dimension in shape {shape}")
    layout_len = r.i32("layout length")
    if layout_len < 0:
        raise r.fail(f"negative layout length {layout_len}")
    r.take(2 * layout_len, "layout")  # layout characters carry no meaning for numpy
    order = "<"
    if version > 2:
        order = chr(r.u8("byte order"))
        if order not in "<>":
            raise r.fail(f"invalid byte order {order!r}")
    nbytes = r.i32("data length")
    size = math.prod(shape)
    expected = size * dtype.itemsize
    if nbytes != expected:
        raise r.fail(f"data length {nbytes} does not match {dtype_name} shape {shape}")
    raw = r.take(nbytes, "data")
    if size == 0:
        try:
            return name, np.empty(shape, dtype=dtype)
        except ValueError:  # e.g. (0, 2**62): numpy still bounds every dimension
            raise r.fail(f"shape {shape} is too large") from None
    if dtype.kind == "b":  # any non-zero byte is true; never expose invalid bool bytes
        flat = np.frombuffer(raw, dtype=np.uint8) != 0
    else:
        flat = np.frombuffer(raw, dtype=dtype.newbyteorder(order)).astype(dtype)
    return name, flat.reshape(shape)
