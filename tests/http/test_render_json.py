"""codec.render_json: the C renderer (djl/_json.pxi) writes the same bytes as the Python
one (json.dumps with nulls dropped, indent 2), and hands back what it does not take."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from djl import _batch
from djl.http import codec

_SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
            | st.floats(allow_nan=True, allow_infinity=True) | st.text())
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=30)


@settings(max_examples=400, deadline=None)
@given(_VALUES)
def test_c_writes_the_python_renderers_bytes(value):
    assert _batch.render_json_c(value) == codec.render_json_py(value)


def test_error_bodies_and_health_byte_for_byte():
    for value in [codec.error_body(ValueError("boom \"é\"\n"), 500),
                  {"code": 404, "type": "ModelNotFoundException", "message": None},
                  codec.health_body({"echo": "Healthy", "mlp": "Unhealthy"}), {}, [],
                  {"x": [math.inf, -math.inf, 1e300, -0.0, 2**64]}]:
        assert codec.render_json(value) == codec.render_json_py(value)
        assert _batch.render_json_c(value) is not None


def test_what_c_does_not_take_is_rendered_in_python():
    for value in [(1, 2), {1: "int key"}, {"nested": [{"t": (None,)}]}, {"e": _Code.OK}]:
        assert _batch.render_json_c(value) is None
        assert codec.render_json(value) == codec.render_json_py(value)
    deep: list = []
    for _ in range(100):
        deep = [deep]
    assert _batch.render_json_c(deep) is None
    assert codec.render_json(deep) == codec.render_json_py(deep)


class _Code(int):
    OK = 200


_Code.OK = _Code(200)
