"""``djl_python.outputs``: DJL Serving's module path for ``Output`` (a re-export of djl.io)."""

from djl.io import Output

__all__ = ["Output"]
