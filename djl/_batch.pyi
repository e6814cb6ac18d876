"""Types of the compiled hot path (djl/_batch.pyx); see that file for the frame layout."""

from collections.abc import Iterator
from typing import Any

REQUEST: int  # frame kind: a (possibly batched) request, server → worker
RESPONSE: int  # frame kind: the answer to one request frame, worker → server
CHUNK: int  # frame kind: one piece of a streamed answer
ERROR: int  # frame kind: a typed failure (kind, message); kinds are djl.errors.ERROR_*
MAX_FRAME: int  # the largest frame the format can carry (2**31 - 1 bytes)
DEFAULT_PRIORITY: int  # a request's priority without x-priority (spec §3.4); lower runs first

class Job:
    """One request for one model: its input, priority and the slot its answer lands in."""

    input: Any  # the request's djl.io.Input
    priority: int  # lower runs first
    queued: bool  # True exactly while the job sits in a JobQueue
    cancelled: bool  # its client went away: skipped when a batch forms
    done: Any  # trio.Event, set once result or error is filled in
    result: Any  # the djl.io.Output, or None
    error: Any  # the DjlError, or None
    def __init__(self, input: Any, priority: int = ..., done: Any = None) -> None: ...
    def finished(self) -> bool: ...  # result or error is set
    def set_result(self, result: Any) -> None: ...  # first answer wins; sets done
    def set_error(self, error: Any) -> None: ...  # first answer wins; sets done

class JobQueue:
    """Priority queue of Jobs with a capacity (spec §5.1, §5.3); FIFO within a priority."""

    capacity: int  # most live jobs it holds
    model_id: str  # named in its Capacity error
    def __init__(self, capacity: int, model_id: str = "") -> None: ...
    def __len__(self) -> int: ...  # live jobs only
    def put_nowait(self, job: Job, worker_idle: bool = True) -> None: ...  # or Capacity
    def put_front(self, jobs: list[Job]) -> None: ...  # back at the head, capacity unchecked
    def discard(self, job: Job) -> bool: ...  # forget a queued job in O(1)
    def take(self, max_items: int) -> list[Job]: ...  # up to max_items, best priority first
    def drain(self) -> list[Job]: ...  # every live job
    def fail_all(self, error: Any) -> None: ...  # drain, answering each job with error

def encode_request(  # one REQUEST frame; FrameTooLarge over max_frame
    properties: dict[str, Any], keys: list[str | None], values: list[Any],
    max_frame: int = ...,
) -> bytearray: ...
def encode_batch(  # one REQUEST frame for a batch, keys prefixed batch_NNN. (spec §6.8)
    inputs: list[Any], extra: dict[str, str] | None = None, max_frame: int = ...
) -> bytearray: ...
def encode_response(  # one RESPONSE frame; keys None announces CHUNK frames
    code: int, message: str, properties: dict[str, Any], keys: list[str | None] | None,
    values: list[Any] | None, max_frame: int = ...,
) -> bytearray: ...
def encode_chunk(more: bool, data: bytes | bytearray) -> bytearray: ...  # one CHUNK frame
def encode_error(kind: str, message: str) -> bytearray: ...  # one ERROR frame
def decode_request(  # (properties, keys, values) of a REQUEST payload
    payload: bytes,
) -> tuple[dict[str, str], list[str | None], list[bytes]]: ...
def decode_response(  # (code, message, properties, keys, values); keys None: a stream
    payload: bytes,
) -> tuple[int, str, dict[str, str], list[str | None] | None, list[bytes] | None]: ...
def decode_error(payload: bytes) -> tuple[str, str]: ...  # (kind, message)
def decode_chunk(payload: bytes) -> tuple[bool, bytes]: ...  # (more, data)

class FrameDecoder:
    """Sans-IO frame splitter: feed(data), then iterate (kind, payload); never blocks."""

    max_frame: int  # a longer frame raises FrameTooLarge; 1..MAX_FRAME, checked at init
    buffered: int  # bytes fed and not yet returned as frames
    def __init__(self, max_frame: int = ...) -> None: ...
    def feed(self, data: bytes | bytearray | memoryview) -> None: ...  # append bytes read
    def __iter__(self) -> Iterator[tuple[int, bytes]]: ...
    def __next__(self) -> tuple[int, bytes]: ...  # the next whole frame, else StopIteration

def split_batch(  # a batched answer's items back to its n requests; TranslateError
    n: int, keys: list[str | None], values: list[bytes]
) -> list[tuple[str, bytes]]: ...
