"""A model's signature: the names, datatypes and shapes of its inputs and outputs.

An engine that can read them from its model (a TorchScript forward's schema, a
``torch.export`` program, an ONNX graph) reports them once, in the properties of its answer
to the init call; the worker reads them back and its pool keeps them
(``WorkerPool.signature``) for describe and the Open Inference Protocol's model metadata.
Shared by both sides of the worker pipe, so it imports neither.

Datatypes are the Open Inference Protocol's names (``FP32``, ``INT64``, ``BOOL``, ...); a
dimension the model leaves open (a dynamic batch) is -1. What the engine does not know is
None here and left out of the JSON: a TorchScript input has a name but no declared dtype
or shape, and a ``model.py`` handler has no signature at all.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("djl.signature")

#: The init answer's property that carries the signature (JSON), worker → server.
SIGNATURE_PROPERTY = "x-djl-signature"

#: numpy's dtype names → the Open Inference Protocol's datatypes.
NUMPY_DATATYPES = {
    "bool": "BOOL", "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32",
    "uint64": "UINT64", "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64",
    "float16": "FP16", "float32": "FP32", "float64": "FP64", "bfloat16": "BF16",
    "object": "BYTES", "bytes": "BYTES", "str": "BYTES",
}

#: The Open Inference Protocol's datatypes → numpy's dtype names (BYTES and BF16 have none
#: that a numeric tensor can be cast to).
NUMPY_OF_DATATYPE = {v: k for k, v in NUMPY_DATATYPES.items() if v not in ("BYTES", "BF16")}


def datatype_of(dtype_name: str) -> str | None:
    """The datatype of a numpy or torch dtype name (``float32``, ``torch.int64``), None for
    one the protocol has no name for (complex numbers)."""
    return NUMPY_DATATYPES.get(dtype_name.removeprefix("torch."))


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output; None where the model does not say."""

    name: str | None = None
    #: An Open Inference Protocol datatype name (``FP32``).
    datatype: str | None = None
    #: One entry per dimension, -1 where it is dynamic.
    shape: tuple[int, ...] | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.name is not None:
            out["name"] = self.name
        if self.datatype is not None:
            out["datatype"] = self.datatype
        if self.shape is not None:
            out["shape"] = list(self.shape)
        return out

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> TensorSpec:
        name, datatype, shape = value.get("name"), value.get("datatype"), value.get("shape")
        return cls(
            name=str(name) if name is not None else None,
            datatype=str(datatype) if datatype is not None else None,
            shape=tuple(int(d) for d in shape) if shape is not None else None,
        )


@dataclass(frozen=True, slots=True)
class Signature:
    """A model's inputs and outputs in order; either is None when the engine cannot tell
    how many there are (a TorchScript forward returning a dict)."""

    inputs: tuple[TensorSpec, ...] | None
    outputs: tuple[TensorSpec, ...] | None

    def as_json(self) -> dict[str, Any]:
        """``{"inputs": [{"name", "datatype", "shape"}], "outputs": [...]}``, unknowns
        left out: what describe shows."""
        out: dict[str, Any] = {}
        if self.inputs is not None:
            out["inputs"] = [t.as_json() for t in self.inputs]
        if self.outputs is not None:
            out["outputs"] = [t.as_json() for t in self.outputs]
        return out

    def encode(self) -> str:
        return json.dumps(self.as_json(), separators=(",", ":"))

    @classmethod
    def decode(cls, text: str) -> Signature | None:
        """The signature a worker reported; None (and a warning) for text that is not one:
        a model must not fail to load over its metadata."""
        try:
            value = json.loads(text)
            return cls(inputs=_specs(value.get("inputs")), outputs=_specs(value.get("outputs")))
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("ignoring a malformed model signature %r: %s", text[:200], exc)
            return None


def _specs(values: Iterable[Mapping[str, Any]] | None) -> tuple[TensorSpec, ...] | None:
    if values is None:
        return None
    return tuple(TensorSpec.from_json(v) for v in values)
