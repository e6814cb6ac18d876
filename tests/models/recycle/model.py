"""A test model for worker recycling and health (issue 11.6, 11.7).

``action`` query parameter: ``pid`` answers the worker's process id; ``grow`` keeps ``mb``
MiB more resident memory for the rest of the process's life (a leak on demand); ``exit``
kills the process; ``raise`` fails the request (424). Loading fails while a file named
``refuse_load`` exists beside this file (replacements that cannot load).
"""

import os
from pathlib import Path

from djl_python import Input, Output

_LEAK: list[bytes] = []


def handle(inputs: Input):
    if inputs.is_empty():
        if (Path(__file__).parent / "refuse_load").exists():
            raise RuntimeError("refuse_load is set")
        return None
    first = inputs.get_batches()[0]
    action = first.get_as_string("action") if first.contains_key("action") else "pid"
    if action == "grow":
        # Filled, not zeroed: every page is written, so it is resident at once.
        _LEAK.append(b"x" * (int(first.get_as_string("mb")) << 20))
    elif action == "exit":
        os._exit(3)
    elif action == "raise":
        raise ValueError("asked to fail")
    return Output().add(str(os.getpid()))
