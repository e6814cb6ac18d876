"""The PyTorch engine: a TorchScript model served the way DJL's default translator serves it.

Runs inside the worker process; torch is imported here and nowhere on the server side.

In: ``application/json`` (a numeric array, or an object whose ``inputs`` or ``instance``
is one), ``tensor/ndlist`` (spec Appendix D) or ``tensor/npz``; several arrays of an
NDList or npz are the model's positional inputs. Out: ``tensor/npz`` when the request's
``Accept`` or content type says so, JSON ``{"predictions": ...}`` when either says
``application/json`` (Accept wins: ``Accept: tensor/ndlist`` on a JSON request gets an
NDList), else ``tensor/ndlist`` (``_batch.input_format`` / ``output_format``, shared with
djl.tensor_batch). A tuple, list or dict of tensors is several outputs.

Batching (``batchifier``): ``stack``, the default, reads a batch's requests in one call
(``_batch.read_requests``: JSON numbers converted as they are checked, no Python floats),
groups them by the dtypes and shapes of their inputs, stacks each group along a new axis 0
(``_batch.collate``: one buffer per input, a copy per request), moves it to the
device once, runs one forward and splits every output along axis 0 back into the group's
answers (``_batch.encode_rows``). A request alone is a group of one: the model always sees
a leading batch axis, so an answer never depends on who shared the batch. ``none`` runs
each request by itself on its own arrays (DJL's default, which gives up the batching).

Each request gets its own answer: a body that cannot be read, a content type we do not
read, or a shape the model rejects fails that request (and, for the model's refusal, its
group: they share one forward) with 400; every other request of the batch is answered
and the worker serves on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from djl import _batch
from djl.errors import ERROR_OUTPUT, DjlError, FrameTooLarge, ItemError, OutputTooLarge
from djl.io import Input, Output
from djl.runtime.python_engine import EntryPointError, is_out_of_memory
from djl.signature import SIGNATURE_PROPERTY, Signature, TensorSpec

log = logging.getLogger("djl.runtime")



class TorchLoadError(EntryPointError):
    """The TorchScript model cannot be loaded where it was asked to run."""


class TorchEngine:
    """One TorchScript model on one device."""

    def __init__(self, model_dir: Path, model_file: str, device_id: str,
                 num_threads: int = 0) -> None:
        self.model_dir = model_dir
        self.model_file = model_file
        self.device_id = int(device_id)
        self.num_threads = num_threads
        self.stack = True
        self.model: Any = None
        self.device: Any = None
        #: The model's inputs and outputs as far as the file says, reported at init.
        self.signature: Signature | None = None
        self._torch: Any = None

    def load(self) -> None:
        import torch

        self._torch = torch
        if self.num_threads > 0:
            torch.set_num_threads(self.num_threads)
        if self.device_id < 0:
            self.device = torch.device("cpu")
        elif not torch.cuda.is_available():
            raise TorchLoadError(
                f"Cannot load on gpu{self.device_id}: CUDA is not available to this torch "
                f"({torch.__version__})"
            )
        elif self.device_id >= torch.cuda.device_count():
            raise TorchLoadError(
                f"Cannot load on gpu{self.device_id}: torch sees "
                f"{torch.cuda.device_count()} GPU(s)"
            )
        else:
            self.device = torch.device(f"cuda:{self.device_id}")
        path = self.model_dir / self.model_file
        self.model = torch.jit.load(str(path), map_location=self.device)
        self.model.eval()
        self.signature = script_signature(self.model)
        log.info("PyTorch engine: %s on %s, %d intra-op thread(s)", self.model_file,
                 self.device, torch.get_num_threads())

    def initialise(self, inputs: Input) -> Output:
        """The init call (the model's properties, no content): settings, then 204.

        ``batchifier`` was checked at registration (djl/prepare.py)."""
        self.stack = str(inputs.properties.get("batchifier") or "stack").lower() != "none"
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
        parsed, out_formats, groups, failed = _batch.read_requests(payload)
        results: list[Any] = [None] * len(parsed)
        for i in failed:
            exc = parsed[i]
            if isinstance(exc, DjlError):
                results[i] = ItemError("input", exc.message)
            else:  # a codec bug fails one request only
                log.error("reading a request failed unexpectedly", exc_info=exc)
                results[i] = ItemError("input", f"Cannot read the request: {exc}")
        for members, items in groups:
            if self.stack:
                self._run_group(members, items, out_formats, results)
            else:
                for i, tensors in zip(members, items, strict=True):
                    self._run_one(i, tensors, out_formats[i], results)
        return results

    # -- running ------------------------------------------------------------------------
    def _forward(self, arrays: Sequence[Any]) -> tuple[list[Any], list[str] | None]:
        torch = self._torch
        with torch.inference_mode():
            tensors = [torch.from_numpy(a).to(self.device) for a in arrays]
            return _numpy_outputs(self.model(*tensors))

    def _run_group(self, members: list[int], items: list[Any], out_formats: list[int],
                   results: list[Any]) -> None:
        try:
            arrays = _batch.collate(items)
            outputs, names = self._forward(arrays)
            n = len(members)
            for k, out in enumerate(outputs):
                if out.ndim == 0 or out.shape[0] != n:
                    raise _BadOutput(
                        f"The model's output {k} has shape {list(out.shape)}: with "
                        f"batchifier=stack its first axis must be the batch ({n})"
                    )
            bodies = _batch.encode_rows(outputs, [out_formats[i] for i in members], names)
        except Exception as exc:  # noqa: BLE001 — the group's failure is its answer
            failure = self._failure(exc)
            for i in members:
                results[i] = failure
            return
        for i, body in zip(members, bodies, strict=True):
            results[i] = (body, out_formats[i])

    def _run_one(self, i: int, tensors: Any, out_format: int, results: list[Any]) -> None:
        try:
            arrays = tensors.arrays()  # a[0] of a collated (1,) array is a numpy scalar
            outputs, names = self._forward(arrays)
            results[i] = (_batch.encode_tensors(outputs, out_format, names), out_format)
        except Exception as exc:  # noqa: BLE001 — the request's failure is its answer
            results[i] = self._failure(exc)

    @staticmethod
    def _failure(exc: Exception) -> Output | ItemError:
        if is_out_of_memory(exc):
            log.error("model ran out of memory: %s", exc)
            return Output(507, str(exc))
        if isinstance(exc, DjlError):
            return ItemError("input", exc.message)
        if isinstance(exc, _BadOutput):
            return ItemError("input", str(exc))
        log.warning("the model rejected its input: %s", exc)
        return ItemError("input", f"The model rejected the input: {_last_line(exc)}")


def script_signature(model: Any) -> Signature | None:
    """What a TorchScript forward's schema says: its inputs' names (a script declares no
    dtype or shape) and how many tensors it returns (unknown for a list or dict)."""
    try:
        schema = model.forward.schema
    except (AttributeError, RuntimeError):
        return None
    inputs = tuple(TensorSpec(name=a.name) for a in schema.arguments[1:])  # [0] is self
    outputs: tuple[TensorSpec, ...] | None = None
    if len(schema.returns) == 1:
        returned = schema.returns[0].type
        if returned.kind() == "TensorType":
            outputs = (TensorSpec(),)
        elif returned.kind() == "TupleType" and all(
                e.kind() == "TensorType" for e in returned.elements()):
            outputs = tuple(TensorSpec() for _ in returned.elements())
    return Signature(inputs=inputs, outputs=outputs)


class _BadOutput(Exception):
    """The model's outputs cannot be split back into the batch's answers."""


# -- request and response formats -----------------------------------------------------------

def _last_line(exc: BaseException) -> str:
    """TorchScript errors carry the script's traceback; its last line says what failed."""
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


def _numpy_outputs(result: Any) -> tuple[list[Any], list[str] | None]:
    """The model's result as numpy arrays on the CPU, and their names (a dict's keys)."""
    names: list[str] | None = None
    if isinstance(result, dict):
        names = [str(k) for k in result]
        values = list(result.values())
    elif isinstance(result, tuple | list):
        values = list(result)
    else:
        values = [result]
    arrays = []
    for value in values:
        if not hasattr(value, "detach"):
            raise _BadOutput(
                f"The model returned a {type(value).__name__}, not a tensor or a tuple, "
                "list or dict of tensors"
            )
        tensor = value.detach()
        if tensor.device.type != "cpu":
            tensor = tensor.cpu()
        if str(tensor.dtype) == "torch.bfloat16":
            tensor = tensor.float()  # numpy has no bfloat16
        arrays.append(tensor.contiguous().numpy())
    return arrays, names
