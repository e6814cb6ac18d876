"""djl: a Python model server that speaks DJL Serving's HTTP API.

The public names: ``create_app`` (the ASGI app, ``djl.app``), ``Input`` / ``Output``
(the handler contract, ``djl.io``) and ``ServerConfig`` (``djl.config``).
"""

from djl.io import Input, Output, PairList

__all__ = ["Input", "Output", "PairList", "__version__"]
__version__ = "0.1.0"
