"""Answers every request with the size of the batch it arrived in (as JSON)."""

import json
import time

from djl_python import Input, Output


def handle(inputs: Input):
    if inputs.is_empty():
        return None
    batch = inputs.get_batches()
    delay = batch[0].get_as_string("delay") if batch[0].contains_key("delay") else None
    if delay:
        time.sleep(float(delay))
    out = Output()
    for i, _item in enumerate(batch):
        out.add(json.dumps({"batch": len(batch)}), key="data", batch_index=i)
    return out
