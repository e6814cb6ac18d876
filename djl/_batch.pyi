"""Types of the compiled hot path (djl/_batch.pyx); see that file for the frame layout."""

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

Buffer = bytes | bytearray | memoryview

REQUEST: int  # frame kind: a (possibly batched) request, server → worker
RESPONSE: int  # frame kind: the answer to one request frame, worker → server
CHUNK: int  # frame kind: one piece of a streamed answer
ERROR: int  # frame kind: a typed failure (kind, message); kinds are djl.errors.ERROR_*
RESULTS: int  # frame kind: a batch answered job by job, one RESPONSE or ERROR frame per job
MAX_FRAME: int  # the largest frame the format can carry (2**31 - 1 bytes)
RECV_SIZE: int  # bytes one recv on a worker channel asks for (64 KiB, under mmap threshold)
DEFAULT_PRIORITY: int  # a request's priority without x-priority (spec §3.4); lower runs first

def random_uuid4() -> str: ...  # a version 4 UUID string (pooled os.urandom bytes)
def set_status_lines(lines: dict[int, bytes]) -> None: ...  # answer_head_c's status lines
def answer_head_c(  # (head, close) of an HTTP/1.1 answer; None if a header has CR/LF/NUL
    status: int, headers: list[tuple[bytes, bytes]], close: bool, keep_alive: bool = ...,
    chunked: bool = ...) -> tuple[bytes, bool] | None: ...
def scan_head_c(  # a request head's size, length, type, bad coding, 100-continue, request id
    headers: list[tuple[bytes, bytes]], id_header: bytes,
) -> tuple[int, bytes | None, bytes | None, bytes | None, bool, str | None]: ...
def request_properties_c(  # spec §3.3: (properties, media type, handler named)
    headers: list[tuple[bytes, bytes]]) -> tuple[dict[str, Any], str, bool]: ...
def render_json_c(value: Any) -> bytes | None: ...  # Gson-style JSON; None: Python's to render

class Job:
    """One request for one model: its input, priority and the slot its answer lands in."""

    input: Any  # the request's djl.io.Input
    priority: int  # lower runs first
    queued: bool  # True exactly while the job sits in a JobQueue
    cancelled: bool  # its client went away: skipped when a batch forms
    done: Any  # trio.Event, set once result or error is filled in
    result: Any  # the djl.io.Output, or None
    error: Any  # the DjlError, or None
    enqueued_at: float  # trio.current_time() when submitted (the QueueTime metric)
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
def encode_results(  # one RESULTS frame; FrameTooLarge over max_frame
    frames: list[bytes | bytearray], max_frame: int = ...
) -> bytearray: ...
def encode_ok_results(  # 200 OK per body in one RESULTS frame; None if over a limit
    bodies: list[bytes | bytearray], content_types: list[str], max_item: int,
    max_frame: int = ...,
) -> bytearray | None: ...
def request_items(  # (content type, accept, body) per request of a REQUEST payload
    payload: bytes | bytearray,
) -> list[tuple[str, str, bytes | None]]: ...
def decode_request(  # (properties, keys, values) of a REQUEST payload
    payload: bytes,
) -> tuple[dict[str, str], list[str | None], list[bytes]]: ...
def decode_response(  # (code, message, properties, keys, values); keys None: a stream
    payload: bytes,
) -> tuple[int, str, dict[str, str], list[str | None] | None, list[bytes] | None]: ...
def decode_error(payload: bytes) -> tuple[str, str]: ...  # (kind, message)
def decode_chunk(payload: bytes) -> tuple[bool, bytes]: ...  # (more, data)
def decode_results(payload: bytes) -> list[tuple[int, bytes]]: ...  # (kind, payload) per job

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

# -- tensor codecs and collation (djl/_tensor.pxi) ------------------------------------------

FORMAT_JSON: int  # application/json: numbers in, {"predictions": ...} out
FORMAT_NDLIST: int  # tensor/ndlist: DJL's NDList (spec Appendix D)
FORMAT_NPZ: int  # tensor/npz: numpy's .npz (stored or deflated in, stored out)
CONTENT_TYPES: dict[int, str]  # format -> the content type an answer in it carries

class ParsedTensors:
    """One request's inputs, checked; JSON numbers are converted as they are checked,
    NDList / npz bytes stay in the payload until ``collate``."""

    format: int  # the FORMAT_* it was parsed as
    signature: tuple[tuple[str, tuple[int, ...]], ...]  # (dtype name, shape) per input
    names: tuple[str | None, ...]  # name (None for JSON / unnamed NDList) per input
    v2: V2Request | None  # a v2 request's id and requested outputs, else None
    def __len__(self) -> int: ...  # number of inputs
    def arrays(self) -> list[np.ndarray]: ...  # the inputs as fresh writable arrays

def parse_tensors(payload: Buffer, fmt: int) -> ParsedTensors: ...  # BadInput if malformed
def parse_ndlist_any(payload: Buffer) -> ParsedTensors: ...  # NDList, zero arrays allowed
def collate(items: Sequence[ParsedTensors]) -> list[np.ndarray]: ...  # (n, *shape) per input
def encode_tensors(  # one item's answer in fmt; ValueError for a dtype fmt cannot carry
    arrays: Sequence[ArrayLike] | ArrayLike, fmt: int, names: Sequence[str | None] | None = None,
    request: ParsedTensors | None = None,  # the v2 formats: the request answered
    datatypes: Sequence[str | None] | None = None,  # per output: "BF16" for float32 bf16
) -> bytes: ...
def encode_rows(  # row i of every array (batch on axis 0) as encode_tensors(..., fmts[i])
    arrays: Sequence[ArrayLike], fmts: Sequence[int], names: Sequence[str | None] | None = None,
    requests: Sequence[ParsedTensors] | None = None,  # per row, for the v2 formats
    datatypes: Sequence[str | None] | None = None,  # as encode_tensors'
) -> list[bytes | Exception]: ...  # a v2 row naming an output the model lacks: BadInput
def input_format(content_type: str | None, payload: Buffer) -> int: ...  # BadInput if unknown
def output_format(content_type: str | None, accept: str | None) -> int: ...  # DJL's rules
def read_requests(  # each request of a REQUEST payload read as tensors (see _tensor.pxi)
    payload: Buffer, input_names: Sequence[str] | None = None,  # as parse_v2's
) -> tuple[
    list[ParsedTensors | Exception],  # per request: its tensors, or what refused it
    list[int],  # per request: its answer's format
    list[tuple[list[int], list[ParsedTensors]]],  # by signature: indices and items
    list[int],  # the refused requests' indices
]: ...

# -- the Open Inference Protocol (djl/_v2.pxi) ----------------------------------------------

FORMAT_V2_JSON: int  # a v2 answer, all JSON (content type application/json)
FORMAT_V2_BINARY: int  # a v2 answer with binary outputs (V2_BINARY_MEDIA_TYPE)
V2_MEDIA_TYPE: str  # a forwarded v2 infer body; "; header-length=N" under the binary extension
V2_BINARY_MEDIA_TYPE: str  # u32le JSON length, the JSON, then the binary outputs
V2_DATATYPES: dict[str, int]  # v2 datatype name -> its code

class V2Request:
    """What a v2 request asks of its answer."""

    id_json: bytes | None  # the request's "id" as its JSON string token
    outputs: list[tuple[str, bool]] | None  # (name, binary) requested, None: every output
    binary_default: bool  # parameters.binary_data_output
    answer_format: int  # FORMAT_V2_JSON or FORMAT_V2_BINARY

def parse_v2(  # one v2 infer body as tensors (its .v2 set); BadInput names what is wrong
    payload: Buffer, content_type: str = ...,
    input_names: Sequence[str] | None = None,  # the model's: a request naming them all
) -> ParsedTensors: ...                        # is read in the model's order
