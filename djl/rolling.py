"""The rolling-batch channel: what a text-generation worker and its server-side Worker say
to each other on top of the frame codec (``djl._batch``). Shared by both ends, like the
codec; imports nothing of djl.

A rolling-batch worker has many requests in flight, each a *sequence* with an id of this
channel (``seq``), and answers them interleaved, one decode step at a time:

Server → worker
    One REQUEST frame per job, its properties plus ``SEQ``; a REQUEST frame carrying only
    ``SEQ`` and ``CANCEL`` stops that sequence (its client left).

Worker → server
    One CHUNK frame (``more`` set) per decode step whose bytes are a *step record*::

        u16 batch        sequences the step decoded (0: no decode ran, e.g. only answers)
        then items, to the end:
        u32 seq, u8 kind, u16 tokens, u32 n, n bytes

    ``tokens`` is how many tokens the item's sequence gained in this step (the server
    measures time to first token and inter-token latency by it, also for a sequence it
    does not stream). Kinds: ``ADMIT`` (prefilled; ``tokens`` is its prompt length),
    ``PROGRESS`` (a token, nothing to send), ``HEAD`` (a stream starts: a RESPONSE payload
    with keys None, then the line that ends the stream should the worker die), ``DATA``
    (stream bytes), ``END`` (the stream's last bytes; the sequence is over), ``FULL``
    (the whole answer, a RESPONSE payload; the sequence is over), ``GONE`` (cancelled;
    over, nothing to answer).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

#: Request property: the job's sequence id on this channel (decimal).
SEQ = "x-djl-seq"
#: Request property: set (to "1") on a frame that cancels sequence ``SEQ``.
CANCEL = "x-djl-cancel"
#: Request property the OpenAI routes set: which body and answer shape (params.APIS).
API = "x-djl-generation-api"

ADMIT = 1
PROGRESS = 2
HEAD = 3
DATA = 4
END = 5
FULL = 6
GONE = 7
#: Kinds after which the sequence is over and its place free.
FINAL_KINDS = frozenset((END, FULL, GONE))

_STEP = struct.Struct(">H")
_ITEM = struct.Struct(">IBHI")
_LEN = struct.Struct(">I")

Item = tuple[int, int, int, bytes]


def encode_step(batch: int, items: Iterable[Item]) -> bytes:
    """A step record: ``batch`` sequences decoded, then (seq, kind, tokens, data) items."""
    parts = [_STEP.pack(batch)]
    for seq, kind, tokens, data in items:
        parts.append(_ITEM.pack(seq, kind, tokens, len(data)))
        parts.append(data)
    return b"".join(parts)


def decode_step(data: bytes) -> tuple[int, list[Item]]:
    """(batch, items) of a step record; ValueError if it is malformed."""
    (batch,) = _STEP.unpack_from(data, 0)
    items: list[Item] = []
    at, end = _STEP.size, len(data)
    while at < end:
        seq, kind, tokens, n = _ITEM.unpack_from(data, at)
        at += _ITEM.size
        if at + n > end:
            raise ValueError("truncated step record")
        items.append((seq, kind, tokens, data[at:at + n]))
        at += n
    return batch, items


def encode_head(response: bytes, error_line: bytes) -> bytes:
    """A HEAD item's data: the stream's RESPONSE payload, then its error line."""
    return _LEN.pack(len(response)) + response + error_line


def decode_head(data: bytes) -> tuple[bytes, bytes]:
    """(RESPONSE payload, error line) of a HEAD item."""
    (n,) = _LEN.unpack_from(data, 0)
    return data[4:4 + n], data[4 + n:]
