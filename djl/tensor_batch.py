"""Batched tensors for hand-written ``model.py`` handlers: the engine's collation, by hand.

A handler with ``batch_size`` > 1 receives one Input holding a whole batch (spec §6.8).
``TensorBatch`` reads every request of it the way the PyTorch engine does: a JSON array
(or an object whose ``inputs``/``instance`` holds one, as float32), a ``tensor/ndlist`` or
a ``tensor/npz``, parsed without a Python float per number; it groups the requests whose
inputs share dtypes and shapes and stacks each group into one array per input (batch on
axis 0, straight from the payloads: ``djl._batch.collate``). The handler runs its model
once per group and hands the outputs back; ``output()`` splits them along axis 0 and
encodes each request's answer in its own format::

    from djl_python import Input
    from djl.tensor_batch import TensorBatch

    def handle(inputs: Input):
        if inputs.is_empty():
            return None
        batch = TensorBatch(inputs, torch=True)   # numpy arrays unless torch=True
        for group in batch:                       # one group per (dtype, shape) signature
            with torch.inference_mode():
                group.set_outputs(model(*group.inputs))  # a tensor, or a tuple/list/dict
        return batch.output()

Answer format per request (DJL's default translator): ``tensor/npz`` when its ``Accept``
or content type says npz; ``application/json`` (``{"predictions": ...}``) when Accept says
JSON, or the request was JSON and Accept does not ask for ``tensor/ndlist``; otherwise
``tensor/ndlist``.

A request that cannot be read (not JSON, ragged, truncated, unknown content type), or a
group whose outputs do not split (``group.fail(message)`` for a model that refused its
inputs), gets a JSON error body ``{"code": 400, "type": "TranslateException", "message":
...}``; its batch-mates get their answers. The Python engine's batch protocol (spec §6.8)
shares one status line and one set of headers among a batch's answers, so: a batch of
one (or whose requests all failed) answers 400 with the error; otherwise every answer is
200 and ``content-type`` is set when every answer of the batch is in one format (the
usual case: one client, one format; error bodies count as JSON), and left out when they
are mixed. When every request of a batch failed, the batch answers 400 with the first
one's message.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from djl import _batch
from djl.errors import BadInput
from djl.io import Input, Output, encode_json


class TensorGroup:
    """The requests of a batch that share a signature, stacked: ``inputs`` holds one array
    (or torch tensor) per model input, of shape ``(len(indices), *shape)``."""

    def __init__(self, owner: TensorBatch, indices: list[int], inputs: list[Any]) -> None:
        self._owner = owner
        #: Positions of this group's requests in the batch.
        self.indices = indices
        self.inputs = inputs

    def __len__(self) -> int:
        return len(self.indices)

    def set_outputs(self, outputs: Any, names: Sequence[str | None] | None = None) -> None:
        """The model's outputs for this group, batch on axis 0: a tensor or array, or a
        tuple/list of them (several outputs), or a dict (named outputs)."""
        arrays, dict_names = _as_arrays(outputs)
        n = len(self.indices)
        for k, array in enumerate(arrays):
            if array.ndim == 0 or array.shape[0] != n:
                self.fail(f"The model's output {k} has shape {list(array.shape)}: its first "
                          f"axis must be the batch ({n})")
                return
        formats = [self._owner.formats[i] for i in self.indices]
        bodies = _batch.encode_rows(arrays, formats, names if names is not None else dict_names)
        for i, body in zip(self.indices, bodies, strict=True):
            self._owner.answers[i] = body

    def fail(self, message: str) -> None:
        """Answer every request of this group with a 400 error saying ``message``."""
        for i in self.indices:
            self._owner.answers[i] = BadInput(message)


class TensorBatch:
    """Every request of a (possibly batched) Input, read, grouped and stacked."""

    def __init__(self, inputs: Input, *, torch: bool = False, device: Any = None) -> None:
        items = inputs.get_batches()
        #: Answer format (``_batch.FORMAT_*``) per request.
        self.formats: list[int] = []
        #: Per request: its encoded answer, its error, or None while unanswered.
        self.answers: list[bytes | BadInput | None] = [None] * len(items)
        parsed: list[Any] = []
        for i, item in enumerate(items):
            content_type = item.get_property("Content-Type")
            self.formats.append(_batch.output_format(content_type, item.get_property("Accept")))
            data = item.get_data_item()
            try:
                parsed.append(_batch.parse_tensors(
                    data, _batch.input_format(content_type, data)))
            except BadInput as exc:
                self.answers[i] = exc
                parsed.append(None)
        by_signature: dict[Any, list[int]] = {}
        for i, tensors in enumerate(parsed):
            if tensors is not None:
                by_signature.setdefault(tensors.signature, []).append(i)
        self.groups: list[TensorGroup] = []
        for indices in by_signature.values():
            arrays: list[Any] = _batch.collate([parsed[i] for i in indices])
            if torch:
                arrays = _to_torch(arrays, device)
            self.groups.append(TensorGroup(self, indices, arrays))

    def __iter__(self) -> Iterator[TensorGroup]:
        return iter(self.groups)

    def __len__(self) -> int:
        return len(self.answers)

    def output(self) -> Output:
        """The batch's Output: item i is request i's answer (spec §6.8 keys)."""
        unanswered = [i for i, answer in enumerate(self.answers) if answer is None]
        for i in unanswered:
            self.answers[i] = BadInput("The handler produced no output for this request")
        errors = [a for a in self.answers if isinstance(a, BadInput)]
        if len(errors) == len(self.answers):
            return _error_output(Output(errors[0].status, "Bad Request"), errors[0])
        out = Output()
        formats = {_batch.FORMAT_JSON if isinstance(a, BadInput) else f
                   for f, a in zip(self.formats, self.answers, strict=True)}
        if len(formats) == 1:
            out.add_property("content-type", _batch.CONTENT_TYPES[formats.pop()])
        for i, answer in enumerate(self.answers):
            if isinstance(answer, BadInput):
                out.add(_error_body(answer), key="data", batch_index=i)
            else:
                out.add(answer, key="data", batch_index=i)
        return out


def _error_body(error: BadInput) -> bytes:
    return encode_json({"code": error.status, "type": error.type, "message": error.message})


def _error_output(out: Output, error: BadInput) -> Output:
    out.add_property("content-type", "application/json")
    out.add(_error_body(error), key="data")
    return out


def _to_torch(arrays: list[Any], device: Any) -> list[Any]:
    import torch  # only for handlers that ask for tensors

    tensors = [torch.from_numpy(a) for a in arrays]  # zero-copy views of the batch buffers
    return [t.to(device) for t in tensors] if device is not None else tensors


def output_values(outputs: Any) -> tuple[list[Any], list[str] | None]:
    """A model's outputs as a list, and their names when it returned a dict (its keys):
    a dict, a tuple or list, or one value."""
    if isinstance(outputs, dict):
        return list(outputs.values()), [str(key) for key in outputs]
    if isinstance(outputs, tuple | list):
        return list(outputs), None
    return [outputs], None


def to_numpy(value: Any) -> Any:
    """One output as a numpy array on the CPU: a torch tensor is detached and moved first
    (bfloat16, which numpy lacks, becomes float32). Any memory order will do: the
    encoders (``_batch.encode_rows``) copy a strided array into C order themselves."""
    import numpy as np

    if hasattr(value, "detach"):  # a torch tensor
        tensor = value.detach()
        if tensor.device.type != "cpu":
            tensor = tensor.cpu()
        if str(tensor.dtype) == "torch.bfloat16":
            tensor = tensor.float()
        value = tensor.numpy()
    return np.asarray(value)


def _as_arrays(outputs: Any) -> tuple[list[Any], list[str] | None]:
    values, names = output_values(outputs)
    return [to_numpy(value) for value in values], names
