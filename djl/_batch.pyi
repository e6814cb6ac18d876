"""Types of the compiled hot path (djl/_batch.pyx); see that file for the frame layout."""

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

Buffer = bytes | bytearray | memoryview

REQUEST: int
RESPONSE: int
CHUNK: int
ERROR: int
#: A batch answered job by job: one RESPONSE or ERROR frame per job, in order.
RESULTS: int
MAX_FRAME: int

class Job:
    input: Any
    priority: int
    queued: bool
    cancelled: bool
    done: Any
    result: Any
    error: Any
    enqueued_at: float
    def __init__(self, input: Any, priority: int = 3, done: Any = None) -> None: ...
    def finished(self) -> bool: ...
    def set_result(self, result: Any) -> None: ...
    def set_error(self, error: Any) -> None: ...

class JobQueue:
    capacity: int
    model_id: str
    def __init__(self, capacity: int, model_id: str = "") -> None: ...
    def __len__(self) -> int: ...
    def set_capacity(self, capacity: int) -> None: ...
    def put_nowait(self, job: Job, worker_idle: bool = True) -> None: ...
    def put_front(self, jobs: list[Job]) -> None: ...
    def discard(self, job: Job) -> bool: ...
    def take(self, max_items: int) -> list[Job]: ...
    def drain(self) -> list[Job]: ...

def encode_request(
    properties: dict[str, Any], keys: list[str | None], values: list[Any]
) -> bytearray: ...
def encode_batch(inputs: list[Any], extra: dict[str, str] | None = None) -> bytearray: ...
def encode_response(
    code: int, message: str, properties: dict[str, Any], keys: list[str | None] | None,
    values: list[Any] | None,
) -> bytearray: ...
def encode_chunk(more: bool, data: bytes | bytearray) -> bytearray: ...
def encode_error(kind: str, message: str) -> bytearray: ...
def encode_results(frames: list[bytes | bytearray]) -> bytearray: ...
def decode_request(payload: bytes) -> tuple[dict[str, str], list[str | None], list[bytes]]: ...
def decode_response(
    payload: bytes,
) -> tuple[int, str, dict[str, str], list[str | None] | None, list[bytes] | None]: ...
def decode_error(payload: bytes) -> tuple[str, str]: ...
def decode_chunk(payload: bytes) -> tuple[bool, bytes]: ...
def decode_results(payload: bytes) -> list[tuple[int, bytes]]: ...

class FrameDecoder:
    max_frame: int
    buffered: int
    def __init__(self, max_frame: int = ...) -> None: ...
    def feed(self, data: bytes | bytearray | memoryview) -> None: ...
    def __iter__(self) -> Iterator[tuple[int, bytes]]: ...
    def __next__(self) -> tuple[int, bytes]: ...

def split_batch(n: int, keys: list[str | None], values: list[bytes]) -> list[tuple[str, bytes]]: ...

# -- tensor codecs and collation (djl/_tensor.pxi) ------------------------------------------

FORMAT_JSON: int  # application/json: numbers in, {"predictions": ...} out
FORMAT_NDLIST: int  # tensor/ndlist: DJL's NDList (spec Appendix D)
FORMAT_NPZ: int  # tensor/npz: numpy's .npz (stored or deflated in, stored out)
CONTENT_TYPES: dict[int, str]  # format -> the content type an answer in it carries

class ParsedTensors:
    """One request's inputs, checked; values stay in the payload until ``collate``."""

    format: int  # the FORMAT_* it was parsed as
    signature: tuple[tuple[str, tuple[int, ...]], ...]  # (dtype name, shape) per input
    names: tuple[str | None, ...]  # name (None for JSON / unnamed NDList) per input
    def __len__(self) -> int: ...  # number of inputs
    def arrays(self) -> list[np.ndarray]: ...  # the inputs as fresh writable arrays

def parse_tensors(payload: Buffer, fmt: int) -> ParsedTensors: ...  # BadInput if malformed
def parse_ndlist_any(payload: Buffer) -> ParsedTensors: ...  # NDList, zero arrays allowed
def collate(items: Sequence[ParsedTensors]) -> list[np.ndarray]: ...  # (n, *shape) per input
def encode_tensors(  # one item's answer in fmt; ValueError for a dtype fmt cannot carry
    arrays: Sequence[ArrayLike] | ArrayLike, fmt: int, names: Sequence[str | None] | None = None
) -> bytes: ...
def encode_rows(  # row i of every array (batch on axis 0) as encode_tensors(..., fmts[i])
    arrays: Sequence[ArrayLike], fmts: Sequence[int], names: Sequence[str | None] | None = None
) -> list[bytes]: ...
def input_format(content_type: str | None, payload: Buffer) -> int: ...  # BadInput if unknown
def output_format(content_type: str | None, accept: str | None) -> int: ...  # DJL's rules
