"""Workflow test model: its init call waits until the file named by the init property
``gate`` exists (at most 30 s), so a test can hold a registration in PENDING. Then it
uppercases like wf_upper."""

import os
import time

from djl_python import Input, Output


def handle(inputs: Input):
    if inputs.is_empty():
        gate = inputs.get_properties().get("gate")
        deadline = time.monotonic() + 30
        while gate and not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.02)
        return None
    out = Output()
    out.add_property("content-type", "text/plain")
    out.add(inputs.get_batches()[0].get_as_string().upper())
    return out
