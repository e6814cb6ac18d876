"""Compatibility package: lets a model written for DJL Serving run here unchanged.

DJL Serving's models start with ``from djl_python import Input, Output`` (or import the
submodules ``djl_python.inputs``, ``.outputs``, ``.pair_list``, ``.np_util``). This package
only re-exports djl's own classes under those names, so ``djl_python.Input`` *is*
``djl.io.Input`` and a handler's objects travel through the server untouched. It runs
inside worker processes, so it imports nothing heavy (no quart, hypercorn or torch;
numpy only through ``np_util``).
"""

from djl.io import Input, Output, PairList

__all__ = ["Input", "Output", "PairList"]
