# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The hot path, shared by both ends of the worker pipe: one extension module whose
jobs each have the file this index includes (the constants below are shared by all).

* Queue (server side, ``_queue.pxi``): ``Job`` and ``JobQueue``, the per-model priority
  queue. FIFO within a priority, lower priority first, the queue-full rule of spec §5.3,
  cancelled jobs dropped lazily in O(1).
* Frame codec (both sides, ``_frames.pxi``): whole length-prefixed frames (layout
  below), written by the ``encode_*`` functions into one preallocated buffer and read by
  ``decode_*``; ``FrameDecoder`` is sans-IO — ``feed(bytes)`` then iterate — so the trio
  server and the blocking worker share it (like hypercorn's ``protocol/``).
  ``encode_batch`` builds one request out of a batch with the ``batch_NNN.`` key
  convention of spec §6.8; ``split_batch`` maps a batched response back to its jobs.
  ``_engine_frames.pxi``: ``request_items`` and ``encode_ok_results``, the PyTorch
  engine's one-pass read of a batch and write of its answers.
* Request ids (server side, ``_ids.pxi``): ``random_uuid4``, version 4 UUID strings from
  a pooled ``os.urandom`` read, formatted in C, the pool refilled in a forked child.
* Tensor codecs (worker side, ``_tensor.pxi``): ``parse_tensors`` / ``read_requests``
  check and index a request's JSON, NDList or npz payload, ``collate`` fills one
  C-contiguous array per input for a whole batch, ``encode_tensors`` / ``encode_rows``
  write the answers, ``input_format`` / ``output_format`` pick the formats, and
  ``parse_ndlist_any`` backs ``djl.ndlist``. Their formats are described there; it
  includes the Open Inference Protocol's tensors (``_v2.pxi``).
* HTTP in C (server side), each beside its Python twin: ``_answer.pxi``, the HTTP/1.1
  answer head of ``djl.http.answer``; ``_head.pxi``, a request head's headers
  (``djl.http.h1_intake``, ``codec.parsing``); ``_json.pxi``, the Gson-style JSON bodies
  (``codec.replies``).

Frame layout (all integers big-endian)::

    u32 length      bytes that follow this field
    u8  kind        REQUEST=1 RESPONSE=2 CHUNK=3 ERROR=4 RESULTS=5
    ... payload

    REQUEST   i32 P, P x (str key, str value), i32 C, C x (str key-or-null, i32 n, n bytes)
    RESPONSE  i32 code, str message, then as REQUEST; C == -1 announces CHUNK frames
    CHUNK     u8 more, then the chunk's bytes (to the end of the frame)
    ERROR     str kind, str message
    RESULTS   i32 n, n x (i32 len, one whole RESPONSE or ERROR frame): a batch answered
              job by job, each with its own code, headers or error (the PyTorch engine)

``str`` is an i32 byte length (-1 for None) and that many UTF-8 bytes. Counts are i32
(the Java protocol's i16 caps a batch at 32767 items; ours does not need to).
"""

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_FromStringAndSize
from cpython.unicode cimport PyUnicode_DecodeASCII
from libc.stdint cimport int32_t, uint32_t
from libc.string cimport memcmp, memcpy

import os
from collections import deque

from djl.errors import Capacity, FrameError, FrameTooLarge, TranslateError

REQUEST = 1
RESPONSE = 2
CHUNK = 3
ERROR = 4
RESULTS = 5

#: The priority of a request without ``x-priority`` (spec §3.4); its lane is kept.
DEFAULT_PRIORITY = 3

#: Largest frame either side accepts; a larger length prefix means a corrupt stream.
MAX_FRAME = (1 << 31) - 1
# Bytes asked of one recv on a worker channel, both ends. Under glibc's mmap threshold
# (128 KiB): a 1 MiB recv buffer was mmapped, faulted in and unmapped on every call,
# 18 us extra for a 300-byte frame and 57 us for a 75 KB one (socketpair, this machine).
RECV_SIZE = 64 * 1024


include "_queue.pxi"
include "_frames.pxi"
include "_engine_frames.pxi"
include "_ids.pxi"
include "_tensor.pxi"
include "_answer.pxi"
include "_head.pxi"
include "_json.pxi"
