"""Workflow test model: a classifier with a fixed answer (dyadic numbers: exact means)."""

from djl_python import Input, Output

SCORES = [
    {"className": "dog", "probability": 0.5},
    {"className": "cat", "probability": 0.25},
    {"className": "bird", "probability": 0.25},
]


def handle(inputs: Input):
    if inputs.is_empty():
        return None
    return Output().add_as_json(SCORES)
