"""Input and Output: the envelope a model's ``handle(inputs)`` receives and returns.

The API mirrors ``djl_python.inputs.Input`` / ``djl_python.outputs.Output`` (spec §6.5,
§6.6) so a model written for DJL Serving runs unchanged. The same classes carry requests
through the server (HTTP → job → frame) and through workflows, where an Output is the
next model's Input. Heavy libraries (numpy, PIL) are imported only by the accessors
that need them.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from djl.pair_list import PairList

__all__ = ["ChunkSource", "Input", "Output", "PairList", "batch_key", "encode_json"]


def _lookup(properties: dict[str, Any], key: str) -> Any:
    if key in properties:
        return properties[key]
    lowered = key.lower()
    for k, v in properties.items():
        if k.lower() == lowered:
            return v
    return None


class Input:
    """A request: string properties (headers) and ordered binary content items."""

    def __init__(
        self,
        properties: dict[str, Any] | None = None,
        content: PairList | None = None,
    ) -> None:
        self.properties: dict[str, Any] = properties if properties is not None else {}
        self.content: PairList = content if content is not None else PairList()
        self.function_name: str | None = None

    # -- properties ------------------------------------------------------------------
    def get_properties(self) -> dict[str, Any]:
        return self.properties

    def get_property(self, key: str) -> Any:
        """Case-insensitive lookup; None when absent."""
        return _lookup(self.properties, key)

    def add_property(self, key: str, value: Any) -> Input:
        self.properties[key] = value
        return self

    def get_function_name(self) -> str | None:
        return self.function_name

    # -- content ---------------------------------------------------------------------
    def get_content(self) -> PairList:
        return self.content

    def contains_key(self, key: str) -> bool:
        return key in self.content.keys

    def is_empty(self) -> bool:
        return self.content.is_empty()

    def add(self, value: Any = None, key: str | None = None) -> Input:
        self.content.add(key, _to_bytes(value))
        return self

    def get_as_bytes(self, key: str | None = None) -> bytes | bytearray | None:
        if self.content.is_empty():  # checked first, as djl_python does: None, not KeyError
            return None
        if key is not None:
            if key not in self.content.keys:
                raise KeyError(f"requested data for key:{key} is not found!")
            return self.content.get(key)
        data = self.content.get("data")
        return data if data is not None else self.content.value_at(0)

    def get_data_item(self) -> bytes | bytearray | None:
        """Java ``Input.getData()``: item ``data``, else the first item, else None."""
        return self.get_as_bytes()

    def get_as_string(self, key: str | None = None) -> str | None:
        data = self.get_as_bytes(key)
        return None if data is None else bytes(data).decode("utf-8")

    def get_as_json(self, key: str | None = None) -> Any:
        data = self.get_as_bytes(key)
        return None if data is None else json.loads(data)

    def get_as_numpy(self, key: str | None = None) -> list[Any]:
        data = self.get_as_bytes(key)
        if data is None:
            return []
        if bytes(data[:2]) == b"PK":
            return self.get_as_npz(key)
        from djl.ndlist import decode_ndlist

        return decode_ndlist(data)

    def get_as_npz(self, key: str | None = None) -> list[Any]:
        import io

        import numpy as np

        data = self.get_as_bytes(key)
        with np.load(io.BytesIO(bytes(data))) as npz:
            return [npz[name] for name in npz.files]

    def get_as_image(self, key: str | None = None) -> Any:
        import io

        from PIL import Image

        return Image.open(io.BytesIO(bytes(self.get_as_bytes(key))))

    def get_as_csv(self, key: str | None = None) -> list[dict[str, str]]:
        import csv
        import io

        return list(csv.DictReader(io.StringIO(self.get_as_string(key) or "")))

    def get_data(self, key: str | None = None) -> Any:
        """Decode by the ``content-type`` property (spec §6.5)."""
        if self.content.is_empty():
            return None
        content_type = (self.get_property("content-type") or "").lower()
        if content_type.startswith("tensor/ndlist") or content_type.startswith("tensor/npz"):
            return self.get_as_numpy(key)
        if content_type.startswith("application/json"):
            return self.get_as_json(key)
        if content_type.startswith("text/"):
            return self.get_as_string(key)
        if content_type.startswith("image/"):
            return self.get_as_image(key)
        return self.get_as_bytes(key)

    # -- batches (spec §6.8) ------------------------------------------------------------
    def is_batch(self) -> bool:
        return "batch_size" in self.properties

    def get_batch_size(self) -> int:
        return int(self.properties.get("batch_size", 1))

    def get_batches(self) -> list[Input]:
        if not self.is_batch():
            return [self]
        size = self.get_batch_size()
        batches = [Input() for _ in range(size)]
        shared: dict[str, Any] = {}
        for key, value in self.properties.items():
            index, name = _split_batch_key(key)
            if index is None:
                shared[key] = value
            elif index < size:
                batches[index].properties[name] = value
        for key, value in self.content.items():
            index, name = _split_batch_key(key or "")
            if index is not None and index < size:
                batches[index].content.add(name, value)
        for item in batches:
            for key in ("model_dir", "device_id", "cluster_size", "handler"):
                if key in shared and key not in item.properties:
                    item.properties[key] = shared[key]
        return batches

    def __repr__(self) -> str:
        return f"{type(self).__name__}(properties={self.properties!r}, content={self.content!r})"


def _split_batch_key(key: str) -> tuple[int | None, str]:
    if not key.startswith("batch_"):
        return None, key
    head, dot, rest = key.partition(".")
    digits = head[len("batch_") :]
    # ASCII digits only: int() would also take "1_0", " 1" or "+1".
    if not dot or not digits.isascii() or not digits.isdigit():
        return None, key
    return int(digits), rest


def batch_key(index: int, key: str | None) -> str:
    """The zero-padded wire prefix ``batch_NNN.`` of spec §6.8."""
    return f"batch_{index:03d}.{key if key is not None else 'data'}"


class _JSONEncoder(json.JSONEncoder):
    def default(self, o: Any) -> Any:
        if isinstance(o, datetime.datetime | datetime.date):
            return o.isoformat()
        if hasattr(o, "tolist"):  # numpy arrays and scalars, torch tensors
            return o.tolist()
        if isinstance(o, bytes | bytearray):
            return o.decode("utf-8", errors="replace")
        return super().default(o)


def encode_json(value: Any) -> bytes:
    """djl_python's JSON encoding: indent 2, no spaces after ':' (spec §6.6)."""
    return json.dumps(
        value,
        ensure_ascii=False,
        allow_nan=False,
        indent=2,
        separators=(",", ":"),
        cls=_JSONEncoder,
    ).encode("utf-8")


def _to_bytes(value: Any) -> bytes | bytearray:
    if isinstance(value, bytes | bytearray):
        return value
    if isinstance(value, memoryview):
        return value.tobytes()
    if isinstance(value, str):
        return value.encode("utf-8")
    return encode_json(value)


def _default_stream_formatter(item: Any) -> bytes:
    return (json.dumps({"outputs": item}, cls=_JSONEncoder) + "\n").encode("utf-8")


class ChunkSource(Protocol):
    """What ``Output.stream`` holds on the server (``djl.wlm.worker.ChunkStream``): the
    worker's chunks in order; ``receive`` raises ``trio.EndOfChannel`` after the last one
    (``StreamCut`` when the worker side stopped first). ``close``: nobody will read on."""

    async def receive(self) -> bytes: ...

    def close(self) -> None: ...


class Output:
    """A response: code, message, properties (→ HTTP headers), content, or a stream."""

    def __init__(self, code: int = 200, message: str = "OK") -> None:
        self.code = code
        self.message = message
        self.properties: dict[str, Any] = {}
        self.content = PairList()
        #: When the handler streams (spec §6.7): in the model's process an iterator of
        #: items (``stream_formatter`` makes each a chunk), on the server a ChunkSource.
        self.stream: Iterator[Any] | ChunkSource | None = None
        self.stream_formatter: Callable[[Any], bytes] | None = None
        self.finalizers: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def set_code(self, code: int) -> Output:
        self.code = code
        return self

    def set_message(self, message: str) -> Output:
        self.message = message
        return self

    def get_code(self) -> int:
        return self.code

    def get_message(self) -> str:
        return self.message

    def add_property(self, key: str, value: Any) -> Output:
        self.properties[key] = value
        return self

    def get_properties(self) -> dict[str, Any]:
        return self.properties

    def get_property(self, key: str) -> Any:
        return _lookup(self.properties, key)

    def get_content(self) -> PairList:
        return self.content

    def add(self, value: Any, key: str | None = None, batch_index: int | None = None) -> Output:
        if batch_index is not None:
            key = f"batch_{batch_index}.{key or ''}"
        self.content.add(key, _to_bytes(value))
        return self

    def add_as_json(
        self, val: Any, key: str | None = None, batch_index: int | None = None
    ) -> Output:
        return self.add(encode_json(val), key=key, batch_index=batch_index)

    def add_as_numpy(
        self, np_list: list[Any], key: str | None = None, batch_index: int | None = None
    ) -> Output:
        from djl.ndlist import encode_ndlist

        return self.add(encode_ndlist(np_list), key=key, batch_index=batch_index)

    def add_as_npz(
        self, np_list: list[Any], key: str | None = None, batch_index: int | None = None
    ) -> Output:
        import io

        import numpy as np

        buf = io.BytesIO()
        np.savez(buf, *np_list)
        return self.add(buf.getvalue(), key=key, batch_index=batch_index)

    def error(self, error: str, code: int = 424, message: str = "invoke handler failure") -> Output:
        self.code = code
        self.message = message
        self.properties["content-type"] = "application/json"
        body = {"code": code, "message": message, "error": error}
        self.content.add(None, encode_json(body))  # djl_python: add_as_json(body)
        return self

    def add_stream_content(
        self, stream: Iterable[Any], output_formatter: Any = _default_stream_formatter
    ) -> Output:
        self.stream = iter(stream)
        self.stream_formatter = output_formatter
        return self

    def finalize(self, function: Callable[..., Any], *args: Any) -> Output:
        self.finalizers.append((function, args))
        return self

    # -- Input side: an Output is the next model's Input in a workflow -------------------
    def get_data_item(self) -> bytes | bytearray | None:
        if self.content.is_empty():
            return None
        data = self.content.get("data")
        return data if data is not None else self.content.value_at(0)

    def as_input(self) -> Input:
        """This Output as the Input of a chained model (content and properties carry)."""
        return Input(dict(self.properties), PairList(self.content.items()))

    def __repr__(self) -> str:
        return f"Output(code={self.code}, message={self.message!r}, content={self.content!r})"
