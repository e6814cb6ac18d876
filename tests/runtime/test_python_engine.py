"""What the Python engine adds to every request before the handler sees it (spec §6.4)."""

from __future__ import annotations

import json

from djl.io import Input, PairList
from djl.runtime.python_engine import PythonEngine


def test_request_properties_added_for_the_handler(tmp_path):
    (tmp_path / "model.py").write_text(
        "from djl_python import Output\n\n\n"
        "def handle(inputs):\n"
        "    p = inputs.get_properties()\n"
        "    return Output().add_as_json({k: p[k] for k in "
        "('model_dir', 'device_id', 'cluster_size')})\n"
    )
    engine = PythonEngine(tmp_path, "model.py", "-1")
    output = engine.invoke(Input({}, PairList([("data", b"x")])))
    assert output.code == 200, output.message
    seen = json.loads(bytes(output.get_data_item()))
    assert seen == {"model_dir": str(tmp_path), "device_id": "-1", "cluster_size": 1}
