"""The DJL NDList binary encoding (``tensor/ndlist``, spec Appendix D).

DJL Serving's "binary mode" clients and ``djl_python``'s ``Input.get_as_numpy`` /
``Output.add_as_numpy`` exchange lists of arrays in this format. Every header integer is
big-endian; an array's data is raw C-order bytes in the byte order its header names
(``<`` or ``>``). Layout, one record per array after an ``i32`` count::

    s16str "NDAR" | i32 version (3) | u8 has_name [s16str name] | s16str sparse format
    | s16str dtype | i32 ndim | i64 x ndim | i32 layout_len | i16 x layout_len
    | u8 byte order | i32 nbytes | nbytes of data

``s16str`` is a 16-bit length and UTF-8 bytes (Java's ``writeUTF``; read as unsigned, as
Java does, so names up to 65535 bytes work). Versions 1 and 2, which Java still reads,
are accepted: v1 has no name flag, v1 and v2 have no byte-order byte and their data is
little-endian.

The codec itself is the compiled one of ``djl/_tensor.pxi`` (the engine's hot path); this
module is its list-of-arrays face. The writer emits version 3, little-endian data, ``'?'``
layout characters and the Java dtype names (``BOOLEAN``, not numpy's ``BOOL``, which the
reader also accepts). The reader checks every length against the bytes that remain, so
truncated or corrupt input raises ``ValueError`` (``djl.errors.BadInput``) with the
offset and what was expected. Decoded arrays are fresh, writable and in native byte order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from djl import _batch

__all__ = ["MAGIC", "VERSION", "decode_ndlist", "decode_ndlist_with_names", "encode_ndlist"]

MAGIC = "NDAR"
VERSION = 3


def encode_ndlist(arrays: Iterable[Any], names: Sequence[str | None] | None = None) -> bytes:
    """Encode arrays (anything ``numpy.asarray`` accepts) as a DJL NDList.

    ``names``, when given, holds one name (or None) per array. Raises ``ValueError`` for a
    dtype DJL has no name for (strings, objects, datetimes, complex128, ...) or an array of
    more than 2 GiB (the format's ``i32`` length).
    """
    # djl_python's to_nd_list wraps anything but a list: one array stays one array.
    items = list(arrays) if isinstance(arrays, list | tuple) else [arrays]
    return _batch.encode_tensors(items, _batch.FORMAT_NDLIST, names)


def decode_ndlist_with_names(
    data: bytes | bytearray | memoryview,
) -> list[tuple[str | None, np.ndarray]]:
    """Decode a DJL NDList into ``(name, array)`` pairs; see ``decode_ndlist``."""
    parsed = _batch.parse_ndlist_any(data)
    return list(zip(parsed.names, parsed.arrays(), strict=True))


def decode_ndlist(data: bytes | bytearray | memoryview) -> list[np.ndarray]:
    """Decode a DJL NDList into numpy arrays (names are dropped).

    Raises ``ValueError`` naming the array, the byte offset and the problem when the input
    is truncated, has trailing bytes, or holds a bad magic, version, dtype, shape, byte
    order or data length.
    """
    return _batch.parse_ndlist_any(data).arrays()
