"""The translator the tensor engines share: a batch's requests in, one answer each out.

The PyTorch engine (torch_engine.py: TorchScript, ``torch.export`` programs, AOTInductor
packages) and the ONNX Runtime engine (onnx_engine.py) differ only in how they load a
model and run one forward; everything else is here, the way DJL's default translator
serves a tensor model.

In: ``application/json`` (a numeric array, or an object whose ``inputs`` or ``instance``
is one), ``tensor/ndlist`` (spec Appendix D), ``tensor/npz`` or an Open Inference
Protocol request (``_batch.V2_MEDIA_TYPE``, answered in v2; djl/_v2.pxi); several arrays of
an NDList or npz are the model's positional inputs (a v2 request naming every input as the
model does is read in the model's order). Out: ``tensor/npz`` when the request's
``Accept`` or content type says so, JSON ``{"predictions": ...}`` when either says
``application/json`` (Accept wins: ``Accept: tensor/ndlist`` on a JSON request gets an
NDList), else ``tensor/ndlist`` (``_batch.input_format`` / ``output_format``, shared with
djl.tensor_batch). A tuple, list or dict of tensors is several outputs.

Batching (``batchifier``): ``stack``, the default, reads a batch's requests in one call
(``_batch.read_requests``: JSON numbers converted as they are checked, no Python floats),
groups them by the dtypes and shapes of their inputs and runs one forward per group
(``_batch.collate``: one buffer per input, a copy per request), splitting every output
along axis 0 back into the group's answers (``_batch.encode_rows``). How a group is
batched follows the ranks the model declares (its signature; a TorchScript file declares
none):

* rank unknown, or the request's tensors have one dimension fewer than the model's: they
  are stacked on a new batch axis. A request alone is a batch of one, so an answer never
  depends on who shared the batch;
* the request's tensors already carry the batch axis (an npz of shape [3, 128] for an
  input declared [batch, 128]): they are concatenated along it and each request gets its
  own rows back;
* the model's batch dimension is fixed (declared [1, 128]): each request runs alone.

``none`` runs each request by itself on its own arrays (DJL's default, which gives up the
batching). A JSON request has no dtype of its own (float32): it is cast to the dtype the
model declares.

Each request gets its own answer: a body that cannot be read, a content type we do not
read, a shape that does not fit the model, or one the model rejects fails that request
(and, for the model's refusal, its group: they share one forward) with 400; every other
request of the batch is answered and the worker serves on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from djl import _batch
from djl.errors import ERROR_OUTPUT, BadInput, DjlError, FrameTooLarge, ItemError, OutputTooLarge
from djl.io import Input, Output
from djl.runtime.python_engine import EntryPointError, is_out_of_memory
from djl.signature import NUMPY_OF_DATATYPE, SIGNATURE_PROPERTY, Signature

log = logging.getLogger("djl.runtime")


class TensorLoadError(EntryPointError):
    """The model cannot be loaded where it was asked to run (the runtime's reason)."""


class TensorEngine:
    """One tensor model on one device; subclasses load it and run a forward."""

    def __init__(self, model_dir: Path, model_file: str, device_id: str,
                 num_threads: int = 0) -> None:
        self.model_dir = model_dir
        self.model_file = model_file
        self.device_id = int(device_id)
        self.num_threads = num_threads
        self.stack = True
        #: The model's inputs and outputs as far as the file says, reported at init; the
        #: declared ranks also decide how requests are batched.
        self.signature: Signature | None = None
        #: Per input, the dtype a JSON request is cast to (None: left float32); empty when
        #: the model declares no other dtype than float32.
        self._json_dtypes: tuple[Any, ...] = ()
        #: The model's input names when it names them all, or None: a v2 request naming
        #: them all is read in this order.
        self.input_names: tuple[str, ...] | None = None

    def load(self, properties: Mapping[str, str] | None = None) -> None:
        """Load the model with the model's init properties (``option.*`` without the
        prefix, and the other serving.properties keys)."""
        properties = properties or {}
        self.stack = str(properties.get("batchifier") or "stack").lower() != "none"
        self._load(properties)
        inputs = self.signature.inputs if self.signature is not None else None
        dtypes = tuple(np.dtype(NUMPY_OF_DATATYPE[spec.datatype])
                       if spec.datatype in NUMPY_OF_DATATYPE else None for spec in inputs or ())
        casts = any(dt is not None and dt != np.float32 for dt in dtypes)
        self._json_dtypes = dtypes if casts else ()
        names = tuple(spec.name or "" for spec in inputs or ())
        self.input_names = names if names and all(names) else None

    def _load(self, properties: Mapping[str, str]) -> None:
        raise NotImplementedError

    def _forward(self, arrays: Sequence[np.ndarray], signature: Sequence[tuple[str, Any]]
                 ) -> tuple[list[Any], list[str] | None, list[str | None] | None]:
        """The model's outputs for ``arrays`` (each input's ``(dtype, shape)`` as read in
        ``signature``) as numpy arrays, their names (None: unnamed), and the datatypes
        numpy cannot hold (``BF16``, sent as float32), None where there is none."""
        raise NotImplementedError

    def initialise(self, inputs: Input) -> Output:
        """The init call's answer: 204, with the signature for the server to keep."""
        output = Output(204, "No content")
        if self.signature is not None:
            output.properties[SIGNATURE_PROPERTY] = self.signature.encode()
        return output

    def invoke(self, inputs: Input) -> list[Output | ItemError]:
        """One answer per request of the (possibly batched) Input, in order; never raises."""
        frame = _batch.encode_request(inputs.properties, inputs.content.keys,
                                      inputs.content.values)
        return [_as_output(result) for result in self._run(frame[5:])]

    def answer_frame(self, payload: bytes, max_item_bytes: int, max_frame: int) -> bytearray:
        """The RESULTS frame answering one REQUEST payload, request by request.

        The worker's path: the requests are read from the frame and, when every one
        succeeds, their answers are written into the frame directly (no Input, no Output
        per request)."""
        results = self._run(payload)
        if all(type(result) is tuple for result in results):
            frame = _batch.encode_ok_results(
                [body for body, _ in results],
                [_batch.CONTENT_TYPES[fmt] for _, fmt in results], max_item_bytes, max_frame)
            if frame is not None:
                return frame
        return results_frame([_as_output(r) for r in results], max_item_bytes, max_frame)

    def _run(self, payload: bytes | bytearray) -> list[Any]:
        """Each request's ``(body, format)``, or its failure (ItemError, Output)."""
        parsed, out_formats, groups, failed = _batch.read_requests(payload, self.input_names)
        results: list[Any] = [None] * len(parsed)
        for i in failed:
            exc = parsed[i]
            if isinstance(exc, DjlError):
                results[i] = ItemError("input", exc.message)
            else:  # a codec bug fails one request only
                log.error("reading a request failed unexpectedly", exc_info=exc)
                results[i] = ItemError("input", f"Cannot read the request: {exc}")
        for members, items in self._json_apart(groups):
            if not self.stack:
                for i, tensors in zip(members, items, strict=True):
                    self._run_alone(i, tensors, False, out_formats[i], results)
                continue
            try:
                new_axis, together = self._layout(items[0])
            except DjlError as exc:
                for i in members:
                    results[i] = ItemError("input", exc.message)
                continue
            if together:
                self._run_group(members, items, new_axis, out_formats, results)
            else:
                for i, tensors in zip(members, items, strict=True):
                    self._run_alone(i, tensors, new_axis, out_formats[i], results)
        return results

    # -- batching by the declared ranks ---------------------------------------------------
    def _layout(self, tensors: Any) -> tuple[bool, bool]:
        """For requests shaped like ``tensors``: (stack them on a new batch axis, rather
        than concatenate along the one they carry; run them together, rather than each
        alone). BadInput when their count or shapes fit no reading of the model's."""
        specs = self.signature.inputs if self.signature is not None else None
        if not specs or any(spec.shape is None for spec in specs):
            return True, True
        if len(tensors) != len(specs):
            raise BadInput.input_count(len(specs), [spec.name for spec in specs], len(tensors))
        shapes = [shape for _, shape in tensors.signature]
        declared = [spec.shape or () for spec in specs]
        if all(d and _fits(shape, d[1:]) for shape, d in zip(shapes, declared, strict=True)):
            new_axis = True
        elif all(_fits(shape, d) for shape, d in zip(shapes, declared, strict=True)):
            new_axis = False
        else:
            k = next((k for k, (shape, d) in enumerate(zip(shapes, declared, strict=True))
                      if not _fits(shape, d[1:]) and not _fits(shape, d)), 0)
            raise BadInput.input_shape(k, specs[k].name, list(shapes[k]), list(declared[k]))
        together = all(d and d[0] < 0 for d in declared)
        if together and not new_axis:
            rows = {shape[0] for shape in shapes}
            if len(rows) > 1:  # concatenated, they could not be split back by request
                raise BadInput.batch_rows(sorted(rows))
        return new_axis, together

    def _json_apart(self, groups: list[Any]) -> list[Any]:
        """The groups, with their JSON requests run apart from the others when JSON is
        cast: an npz or NDList of the same dtype and shape keeps its own dtype."""
        if not self._json_dtypes:
            return groups
        out = []
        for members, items in groups:
            json = [k for k, t in enumerate(items) if t.format == _batch.FORMAT_JSON]
            if 0 < len(json) < len(items):
                rest = [k for k, t in enumerate(items) if t.format != _batch.FORMAT_JSON]
                for part in (json, rest):
                    out.append(([members[k] for k in part], [items[k] for k in part]))
            else:
                out.append((members, items))
        return out

    def _prepared(self, arrays: list[np.ndarray], items: Sequence[Any]) -> list[np.ndarray]:
        """JSON inputs cast to the dtypes the model declares (JSON numbers have none)."""
        if not self._json_dtypes or any(t.format != _batch.FORMAT_JSON for t in items):
            return arrays
        return [a if dt is None or a.dtype == dt else a.astype(dt)
                for a, dt in zip(arrays, self._json_dtypes, strict=False)]

    def _run_group(self, members: list[int], items: list[Any], new_axis: bool,
                   out_formats: list[int], results: list[Any]) -> None:
        try:
            arrays = _batch.collate(items)  # (n, *shape) per input
            n = len(members)
            per = 1
            if not new_axis:  # concatenated along the batch axis the requests carry
                per = arrays[0].shape[1]
                arrays = [a.reshape((n * per, *a.shape[2:])) for a in arrays]
            outputs, names, datatypes = self._forward(self._prepared(arrays, items),
                                                      items[0].signature)
            for k, out in enumerate(outputs):
                if out.ndim == 0 or out.shape[0] != n * per:
                    raise BadOutput(
                        f"The model's output {k} has shape {list(out.shape)}: with "
                        f"batchifier=stack its first axis must be the batch ({n * per})"
                    )
            if not new_axis:
                outputs = [out.reshape((n, per, *out.shape[1:])) for out in outputs]
            bodies = _batch.encode_rows(outputs, [out_formats[i] for i in members], names,
                                        items, datatypes)
        except Exception as exc:  # noqa: BLE001 — the group's failure is its answer
            failure = self._failure(exc)
            for i in members:
                results[i] = failure
            return
        for i, body in zip(members, bodies, strict=True):
            # a v2 request naming an output the model lacks fails alone
            results[i] = (self._failure(body) if isinstance(body, Exception)
                          else (body, out_formats[i]))

    def _run_alone(self, i: int, tensors: Any, new_axis: bool, out_format: int,
                   results: list[Any]) -> None:
        try:
            if new_axis:  # a batch of one
                outputs, names, datatypes = self._forward(
                    self._prepared(_batch.collate([tensors]), [tensors]), tensors.signature)
                body = _batch.encode_rows(outputs, [out_format], names, [tensors],
                                          datatypes)[0]
                if isinstance(body, Exception):
                    raise body
            else:
                # arrays(): a[0] of a collated (1,) array would be a numpy scalar
                outputs, names, datatypes = self._forward(
                    self._prepared(tensors.arrays(), [tensors]), tensors.signature)
                body = _batch.encode_tensors(outputs, out_format, names, tensors, datatypes)
            results[i] = (body, out_format)
        except Exception as exc:  # noqa: BLE001 — the request's failure is its answer
            results[i] = self._failure(exc)

    def _reason(self, exc: BaseException) -> str:
        """The runtime's error as the line its client reads."""
        return last_line(exc)

    def _failure(self, exc: Exception) -> Output | ItemError:
        if is_out_of_memory(exc):
            log.error("model ran out of memory: %s", exc)
            return Output(507, str(exc))
        if isinstance(exc, DjlError):
            return ItemError("input", exc.message)
        if isinstance(exc, BadOutput):
            return ItemError("input", str(exc))
        log.warning("the model rejected its input: %s", exc)
        return ItemError("input", f"The model rejected the input: {self._reason(exc)}")


def _fits(shape: Sequence[int], declared: Sequence[int]) -> bool:
    """``shape`` has the declared rank and every fixed dimension (-1: any size)."""
    return len(shape) == len(declared) and all(
        d < 0 or d == s for s, d in zip(shape, declared, strict=True))


class BadOutput(Exception):
    """The model's outputs cannot be split back into the batch's answers."""


def last_line(exc: BaseException) -> str:
    """TorchScript and ONNX Runtime errors carry a traceback or a prefix of the runtime's;
    the last line says what failed."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _as_output(result: Any) -> Output | ItemError:
    """A ``_run`` result as the Output (or ItemError) it stands for."""
    if type(result) is not tuple:
        return result
    body, out_format = result
    output = Output()
    output.properties["content-type"] = _batch.CONTENT_TYPES[out_format]
    output.content.add("data", body)
    return output


def results_frame(results: list[Output | ItemError], max_item_bytes: int,
                  max_frame: int) -> bytearray:
    """A batch answered request by request: one RESULTS frame.

    An item over ``max_item_bytes``, or one that would carry the frame past ``max_frame``,
    fails its own request (OutputTooLarge); its batch-mates are answered.
    """
    frames: list[bytes | bytearray] = []
    used = 9  # the RESULTS frame's own header and count
    for result in results:
        if isinstance(result, ItemError):
            frame = _batch.encode_error(result.kind, result.message)
        else:
            largest = max((len(v) for v in result.content.values), default=0)
            props = {str(k): str(v) for k, v in result.properties.items()}
            try:
                if largest > max_item_bytes:
                    raise OutputTooLarge.item(largest, max_item_bytes)
                frame = _batch.encode_response(
                    result.code, result.message, props, result.content.keys,
                    result.content.values, max_frame - used - 4,
                )
            except FrameTooLarge as exc:
                frame = _refused(OutputTooLarge.frame(exc.size, exc.limit))
            except OutputTooLarge as exc:
                frame = _refused(exc)
        used += 4 + len(frame)
        frames.append(frame)
    return _batch.encode_results(frames, max_frame)


def _refused(error: OutputTooLarge) -> bytearray:
    log.error("%s", error.message)
    return _batch.encode_error(ERROR_OUTPUT, error.message)
