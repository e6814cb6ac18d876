"""Workflow test model: appends a suffix (init property ``suffix``, default ``!``).

If its Input carries the property ``x-upper`` (set by wf_upper), it also appends
`` via upper``: proof that a chained model's Output properties reach the next model.
"""

from djl_python import Input, Output

SUFFIX = "!"


def handle(inputs: Input):
    global SUFFIX
    if inputs.is_empty():  # the init call carries the model's properties
        SUFFIX = inputs.get_properties().get("suffix", SUFFIX)
        return None
    item = inputs.get_batches()[0]
    text = item.get_as_string() + SUFFIX
    if item.get_property("x-upper") == "yes":
        text += " via upper"
    out = Output()
    out.add_property("content-type", "text/plain")
    out.add(text)
    return out
