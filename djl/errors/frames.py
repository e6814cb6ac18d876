"""Errors of the worker pipe: bad frames, and the error kinds a worker's frames carry."""

from __future__ import annotations

from dataclasses import dataclass

from djl.errors.base import DjlError
from djl.errors.inference import OutputTooLarge, TranslateError


class FrameError(DjlError):
    """The worker pipe carried bytes that are not a valid frame: the worker is unusable."""

    status = 503
    type = "WlmException"
    config_key = "wlm_error_http_code"


class FrameTooLarge(FrameError):
    """A frame over the limit its receiver set: the encoder refuses to write it, the
    decoder to read it. ``size`` and ``limit`` are the frame's bytes after its length."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds the limit of {limit}")
        self.size = size
        self.limit = limit


#: The kinds of a worker's ERROR frame: ``runtime/__main__.py`` sends them and
#: ``wlm/worker.py`` turns them back into these classes.
#: The model cannot load: its registration fails (ModelLoadError).
ERROR_LOAD = "load"
#: The model cannot load for lack of memory (ModelLoadError.out_of_memory, 507).
ERROR_OOM = "oom"
#: The folder is not a model the engine can load (a bad config, no weights): 400.
ERROR_BAD_MODEL = "bad_model"
#: An answer over the item or frame limit: its batch fails (OutputTooLarge), the worker
#: serves on.
ERROR_OUTPUT = "output"


#: Error kinds an engine may report for one job of a batch (in a RESULTS frame): the
#: job fails with that class, its batch-mates and the worker carry on.
ITEM_ERROR_KINDS: dict[str, type[DjlError]] = {
    "input": TranslateError,
    "output": OutputTooLarge,
}


@dataclass(frozen=True)
class ItemError:
    """What an engine reports for one failed job of a batch: a key of ITEM_ERROR_KINDS and
    the message its client reads."""

    kind: str
    message: str
