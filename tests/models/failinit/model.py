"""A model whose initialisation fails: registration must fail and be rolled back."""


def handle(inputs):
    if inputs.is_empty():
        raise RuntimeError("weights are missing")
    raise AssertionError("never reached")
