"""``djl_python.np_util``: DJL Serving's NDList helpers, re-exported from djl.ndlist.

``to_nd_list(arrays)`` encodes a list of numpy arrays as a DJL NDList (``tensor/ndlist``)
and ``from_nd_list(data)`` decodes one; both are ``djl.ndlist`` functions under the names
models written for DJL Serving already use. Corrupt input raises ``ValueError``.
"""

from djl.ndlist import decode_ndlist as from_nd_list
from djl.ndlist import encode_ndlist as to_nd_list

__all__ = ["from_nd_list", "to_nd_list"]
