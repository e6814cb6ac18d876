"""``djl_python.pair_list``: DJL Serving's module path for ``PairList`` (from djl.io)."""

from djl.io import PairList

__all__ = ["PairList"]
