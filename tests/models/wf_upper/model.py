"""Workflow test model: uppercases the request body and marks its Output with x-upper."""

from djl_python import Input, Output


def handle(inputs: Input):
    if inputs.is_empty():
        return None  # the init call
    item = inputs.get_batches()[0]
    out = Output()
    out.add_property("content-type", "text/plain")
    out.add_property("x-upper", "yes")  # the next model of a chain sees this property
    out.add(item.get_as_string().upper())
    return out
