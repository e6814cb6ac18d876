"""``djl_python.inputs``: DJL Serving's module path for ``Input`` (a re-export of djl.io)."""

from djl.io import Input

__all__ = ["Input"]
