"""Gson-style JSON bodies (every JSON answer of the DJL API: errors, /ping, management), in
C and in Python: the same bytes (tests/http/test_render_json.py); bench/head_json.py is
the A/B that chose C."""

from __future__ import annotations

import json
from typing import Any

from djl import _batch


def render_json(value: Any) -> bytes:
    """Gson-style: pretty, 2-space indent, null members omitted, trailing newline. In C
    (``render_json_c``, djl/_json.pxi: bench/head_json.py is the A/B) for what it takes
    (dicts, lists, strings, numbers, booleans, None), else ``render_json_py``."""
    rendered = _batch.render_json_c(value)
    return rendered if rendered is not None else render_json_py(value)


def render_json_py(value: Any) -> bytes:
    """``render_json`` in Python: json.dumps (its pure-Python encoder, for the indent)."""
    return (json.dumps(_drop_nulls(value), indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


__all__ = ["render_json", "render_json_py"]
