"""Small ONNX graphs for the tests, written with onnx.helper in milliseconds (the
exporter takes tens of seconds); nothing binary in git. Expected answers come from numpy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
#: Linear(4, 3) weights of ``linear``: y = x @ W + B.
W = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
B = np.array([0.5, -1.0, 2.0], np.float32)


def _save(folder: Path, nodes: list, inputs: list, outputs: list, initializers: list,
          name: str = "model.onnx") -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 9
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(model.SerializeToString())
    return folder


def linear(folder: Path, batch: str | int = "batch", name: str = "model.onnx") -> Path:
    """x [batch, 4] → (y [batch, 3] = x @ W + B, rows [batch]: the batch size it saw).

    ``batch`` a string is a dynamic dimension; an int fixes it."""
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "B"], ["y"]),
        helper.make_node("Shape", ["x"], ["n"], start=0, end=1),
        helper.make_node("Expand", ["n", "n"], ["rows"]),
    ]
    return _save(
        folder, nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3]),
         helper.make_tensor_value_info("rows", TensorProto.INT64, [batch])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "B")], name,
    )


def scale(folder: Path) -> Path:
    """Two inputs: ids [batch] int64 and x [batch, 2] float → x * ids (per row)."""
    nodes = [
        helper.make_node("Cast", ["ids"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["f", "axis"], ["col"]),
        helper.make_node("Mul", ["x", "col"], ["scaled"]),
    ]
    return _save(
        folder, nodes,
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch"]),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("scaled", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(np.array([1], np.int64), "axis")],
    )


def doubled_ids(folder: Path) -> Path:
    """ids [batch, 3] int64 → ids + ids: a model whose input is not float."""
    return _save(
        folder, [helper.make_node("Add", ["ids", "ids"], ["doubled"])],
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 3])],
        [helper.make_tensor_value_info("doubled", TensorProto.INT64, ["batch", 3])], [],
    )


def external(folder: Path, location: str) -> Path:
    """``linear``'s W kept as external data at ``location`` (written beside the graph
    when it is a plain file name)."""
    w = TensorProto()
    w.name, w.data_type = "W", TensorProto.FLOAT
    w.dims.extend(W.shape)
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(W.nbytes))):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"])]
    return _save(
        folder, nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], [w],
    )


def expected(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) @ W + B
