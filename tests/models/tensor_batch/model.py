"""A hand-written handler on the collation fast path (djl.tensor_batch).

"Model": ``y = 2 * x + 1`` over inputs of 4 features, as torch tensors; it also reports
the size of the group it ran on, so a test can see that requests shared one forward.
"""

import torch

from djl.tensor_batch import TensorBatch
from djl_python import Input


def handle(inputs: Input):
    if inputs.is_empty():
        return None
    batch = TensorBatch(inputs, torch=True)
    for group in batch:
        (x,) = group.inputs
        if x.shape[-1] != 4:
            group.fail(f"The model expects 4 features, got shape {list(x.shape[1:])}")
            continue
        with torch.inference_mode():
            y = x * 2 + 1
            seen = torch.full((len(group),), len(group), dtype=torch.int64)
        group.set_outputs({"y": y, "group": seen})
    return batch.output()
