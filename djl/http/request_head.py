"""A request's headers as Input properties (spec §3.3), in C and in Python: the same result
(tests/http/test_head.py); bench/head_json.py is the A/B that chose C."""

from __future__ import annotations

from typing import Any

from djl import _batch
from djl.config import ServerConfig
from djl.errors import BadRequest

#: Spec §3.8's properties, also as SageMaker custom attributes of any case.
_ASYNC_KEYS = frozenset({"x-synchronous", "x-starting-token", "x-max-items"})


def request_properties(headers: list[tuple[bytes, bytes]],
                       config: ServerConfig) -> tuple[dict[str, Any], str]:
    """Spec §3.3: headers → Input properties, plus the body's media type.

    Reads the ASGI header list once (names arrive lower-cased) rather than through
    werkzeug's Headers: this runs for every inference request. In C
    (``request_properties_c``, djl/_head.pxi: bench/head_json.py is the A/B); the
    same in Python is ``request_properties_py``.
    """
    properties, media_type, overridden = _batch.request_properties_c(headers)
    if overridden and not config.allow_request_handler_override:
        raise BadRequest("The handler can't be overridden in a request")
    return properties, media_type


def request_properties_py(headers: list[tuple[bytes, bytes]],
                          config: ServerConfig) -> tuple[dict[str, Any], str]:
    """``request_properties`` in Python (the A/B's other side)."""
    properties: dict[str, Any] = {}
    media_type = ""
    overridden = False
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1")
        value = raw_value.decode("latin-1")
        if name == "x-amzn-sagemaker-custom-attributes":
            for token in value.split(";"):
                key, sep, val = token.partition("=")
                if sep:
                    key = key.strip()
                    if key.lower() in _ASYNC_KEYS:
                        key = key.lower()  # read by exact name on every request
                    properties[key] = val.strip()
                    overridden = overridden or key.lower() == "handler"
            continue
        if name == "content-type":
            media_type = value.partition(";")[0].strip().lower()
        elif name == "handler":
            overridden = True
        properties[name] = value
    if overridden and not config.allow_request_handler_override:
        raise BadRequest("The handler can't be overridden in a request")
    return properties, media_type


__all__ = ["request_properties", "request_properties_py"]
