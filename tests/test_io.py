"""The Input / Output handler contract (spec §6.5, §6.6, §6.8) through the real classes."""

from __future__ import annotations

import datetime
import io
import json
import subprocess
import sys

import numpy as np
import pytest

from djl.io import Input, Output, PairList, batch_key, encode_json
from djl.ndlist import encode_ndlist


def make_input(properties: dict[str, str] | None = None, *items: tuple[str | None, bytes]) -> Input:
    return Input(dict(properties or {}), PairList(items))


# -- PairList --------------------------------------------------------------------------------


def test_pair_list_keeps_order_duplicates_and_none_keys() -> None:
    pairs = PairList([("a", 1), (None, 2), ("a", 3)])
    pairs.add("b", 4)
    assert pairs.size() == len(pairs) == 4
    assert pairs.get_keys() == ["a", None, "a", "b"]
    assert pairs.get_values() == [1, 2, 3, 4]
    assert pairs.get("a") == 1  # the first match
    assert pairs.get("missing") is None
    assert (pairs.key_at(1), pairs.value_at(1)) == (None, 2)
    assert list(pairs) == [("a", 1), (None, 2), ("a", 3), ("b", 4)]
    assert PairList().is_empty() and not pairs.is_empty()


# -- Input: properties -----------------------------------------------------------------------


def test_get_property_is_case_insensitive() -> None:
    inp = make_input({"Content-Type": "application/json", "X-Custom": "v"})
    assert inp.get_property("content-type") == "application/json"
    assert inp.get_property("CONTENT-TYPE") == "application/json"
    assert inp.get_property("x-custom") == "v"
    assert inp.get_property("missing") is None
    assert inp.get_properties() == {"Content-Type": "application/json", "X-Custom": "v"}


def test_exact_case_property_wins_over_other_spellings() -> None:
    inp = make_input({"KEY": "upper", "key": "lower"})
    assert inp.get_property("key") == "lower"
    assert inp.get_property("KEY") == "upper"


# -- Input: content --------------------------------------------------------------------------


def test_get_as_bytes_without_key_prefers_data_then_first_item() -> None:
    inp = make_input({}, ("first", b"1"), ("data", b"2"))
    assert inp.get_as_bytes() == b"2"
    inp = make_input({}, ("first", b"1"), ("second", b"2"))
    assert inp.get_as_bytes() == b"1"
    inp = make_input({}, (None, b"anon"))
    assert inp.get_as_bytes() == b"anon"


def test_get_as_bytes_with_key() -> None:
    inp = make_input({}, ("a", b"1"), ("b", b""))
    assert inp.get_as_bytes("a") == b"1"
    assert inp.get_as_bytes("b") == b""  # present but empty is not missing
    with pytest.raises(KeyError) as info:
        inp.get_as_bytes("c")
    assert info.value.args[0] == "requested data for key:c is not found!"


@pytest.mark.parametrize("getter", ["get_as_bytes", "get_as_string", "get_as_json", "get_data"])
def test_no_content_gives_none(getter: str) -> None:
    inp = Input()
    assert inp.is_empty()
    assert getattr(inp, getter)() is None
    assert getattr(inp, getter)("anything") is None  # djl_python checks emptiness first


def test_string_and_json_with_and_without_key() -> None:
    inp = make_input({}, ("data", "héllo".encode()), ("doc", b'{"a": [1, 2]}'))
    assert inp.get_as_string() == "héllo"
    assert inp.get_as_string("data") == "héllo"
    assert inp.get_as_json("doc") == {"a": [1, 2]}
    with pytest.raises(KeyError, match="requested data for key:nope is not found!"):
        inp.get_as_json("nope")
    inp = make_input({}, ("data", bytearray(b"[1, 2]")))
    assert inp.get_as_json() == [1, 2]


def test_contains_key_and_is_empty() -> None:
    inp = make_input({}, ("data", b""))
    assert not inp.is_empty()  # an HTTP request always has at least an empty data item
    assert inp.contains_key("data")
    assert not inp.contains_key("other")


def test_add_encodes_like_output() -> None:
    inp = Input().add("text", key="s").add(b"raw", key="b").add({"k": 1}, key="j")
    assert inp.get_as_bytes("s") == b"text"
    assert inp.get_as_bytes("b") == b"raw"
    assert inp.get_as_json("j") == {"k": 1}


def test_get_as_csv() -> None:
    inp = make_input({}, ("data", b"a,b\n1,2\n3,4\n"))
    assert inp.get_as_csv() == [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}]


def test_get_as_numpy_reads_ndlist_and_sniffs_npz() -> None:
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2], dtype=np.int64)]
    inp = make_input({}, ("data", encode_ndlist(arrays)))
    decoded = inp.get_as_numpy()
    assert len(decoded) == 2
    for got, want in zip(decoded, arrays, strict=True):
        assert got.dtype == want.dtype and np.array_equal(got, want)

    buf = io.BytesIO()
    np.savez(buf, *arrays)
    inp = make_input({}, ("x", buf.getvalue()))
    for got, want in zip(inp.get_as_numpy("x"), arrays, strict=True):
        assert np.array_equal(got, want)
    for got, want in zip(inp.get_as_npz("x"), arrays, strict=True):
        assert np.array_equal(got, want)


def test_get_as_numpy_corrupt_payload_is_a_value_error() -> None:
    inp = make_input({}, ("data", b"\x00\x00\x00\x01\x00\x04NDA"))
    with pytest.raises(ValueError, match="Malformed NDList"):
        inp.get_as_numpy()


# -- Input: get_data dispatch ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "payload", "expected"),
    [
        ("application/json", b'{"a": 1}', {"a": 1}),
        ("application/json; charset=utf-8", b"[1, 2]", [1, 2]),
        ("Application/JSON", b"3", 3),
        ("text/plain", "héllo".encode(), "héllo"),
        ("text/csv; charset=utf-8", b"a,b", "a,b"),
        ("application/octet-stream", b"\x00\x01", b"\x00\x01"),
    ],
)
def test_get_data_dispatches_on_content_type(
    content_type: str, payload: bytes, expected: object
) -> None:
    inp = make_input({"Content-Type": content_type}, ("data", payload))
    assert inp.get_data() == expected


def test_get_data_json_is_a_prefix_match() -> None:
    # djl_python tests startswith("application/json"), so application/jsonlines is JSON too.
    inp = make_input({"content-type": "application/jsonlines"}, ("data", b'{"a": 1}'))
    assert inp.get_data() == {"a": 1}


def test_get_data_without_content_type_returns_bytes() -> None:
    inp = make_input({}, ("data", b"raw"), ("k", b"other"))
    assert inp.get_data() == b"raw"
    assert inp.get_data("k") == b"other"


def test_get_data_with_key() -> None:
    inp = make_input({"content-type": "application/json"}, ("data", b"1"), ("k", b'"v"'))
    assert inp.get_data("k") == "v"


@pytest.mark.parametrize("content_type", ["tensor/ndlist", "tensor/npz"])
def test_get_data_tensor_types(content_type: str) -> None:
    arrays = [np.array([[1.5, -2.0]], dtype=np.float64)]
    if content_type == "tensor/ndlist":
        payload = encode_ndlist(arrays)
    else:
        buf = io.BytesIO()
        np.savez(buf, *arrays)
        payload = buf.getvalue()
    inp = make_input({"content-type": content_type}, ("data", payload))
    (got,) = inp.get_data()
    assert got.dtype == np.float64 and np.array_equal(got, arrays[0])


def test_get_data_image() -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (3, 2), (255, 0, 0)).save(buf, format="PNG")
    inp = make_input({"content-type": "image/png"}, ("data", buf.getvalue()))
    image = inp.get_data()
    assert isinstance(image, Image.Image)
    assert image.size == (3, 2) and image.getpixel((2, 1)) == (255, 0, 0)


# -- Input: batches (spec §6.8) --------------------------------------------------------------


def test_not_batched_returns_self() -> None:
    inp = make_input({"content-type": "text/plain"}, ("data", b"x"))
    assert not inp.is_batch()
    assert inp.get_batches() == [inp]
    assert inp.get_batches()[0] is inp


def test_batch_key_is_zero_padded_to_three_digits() -> None:
    assert batch_key(0, None) == "batch_000.data"
    assert batch_key(7, "x") == "batch_007.x"
    assert batch_key(123, "data") == "batch_123.data"


def test_get_batches_splits_properties_and_content() -> None:
    requests = [
        make_input({"content-type": "application/json", "X-Tag": "a"}, (None, b'{"n": 0}')),
        make_input({"content-type": "text/plain"}, ("data", b"one"), ("extra", b"e")),
        make_input({}, ("data", b"")),
    ]
    properties: dict[str, str] = {"batch_size": "3"}
    content = PairList()
    for i, req in enumerate(requests):
        for k, v in req.get_properties().items():
            properties[batch_key(i, k)] = v
        for k, v in req.get_content():
            content.add(batch_key(i, k), v)
    batch = Input(properties, content)

    assert batch.is_batch()
    assert batch.get_batch_size() == 3
    items = batch.get_batches()
    assert len(items) == 3
    assert items[0].get_properties() == {"content-type": "application/json", "X-Tag": "a"}
    assert items[0].get_content().get_keys() == ["data"]  # a null key became "data"
    assert items[0].get_data() == {"n": 0}
    assert items[0].get_property("x-tag") == "a"
    assert items[1].get_data() == "one"
    assert items[1].get_as_bytes("extra") == b"e"
    assert items[1].get_content().get_keys() == ["data", "extra"]
    assert items[2].get_properties() == {}
    assert items[2].get_as_bytes() == b""


def test_get_batches_reads_unpadded_and_wide_indices() -> None:
    properties = {"batch_size": "11", "batch_10.k": "ten", "batch_0001.k": "one"}
    content = PairList([("batch_010.data", b"t"), ("batch_1.data", b"o")])
    items = Input(properties, content).get_batches()
    assert len(items) == 11
    assert items[10].get_property("k") == "ten"
    assert items[10].get_as_bytes() == b"t"
    assert items[1].get_property("k") == "one"
    assert items[1].get_as_bytes() == b"o"
    assert all(item.is_empty() for i, item in enumerate(items) if i not in (1, 10))


def test_get_batches_ignores_keys_that_are_not_batch_prefixed() -> None:
    properties = {
        "batch_size": "1",
        "batch_0.ok": "yes",
        "batch_1_0.k": "underscore is not a digit",
        "batch_+0.k": "sign",
        "batch_x.k": "letters",
        "batch_0": "no dot",
    }
    (item,) = Input(properties, PairList([("batch_0.data", b"d")])).get_batches()
    assert item.get_properties() == {"ok": "yes"}
    assert item.get_as_bytes() == b"d"


# -- Output ----------------------------------------------------------------------------------


def test_output_defaults_and_setters() -> None:
    out = Output()
    assert (out.code, out.message) == (200, "OK")
    assert out.set_code(204).set_message("No content") is out
    assert (out.get_code(), out.get_message()) == (204, "No content")
    assert (Output(507, "OOM").code, Output(507, "OOM").message) == (507, "OOM")


def test_output_properties() -> None:
    out = Output().add_property("Content-Type", "text/plain").add_property("x-a", "1")
    assert out.get_properties() == {"Content-Type": "text/plain", "x-a": "1"}
    assert out.get_property("content-type") == "text/plain"


def test_add_encodes_by_type() -> None:
    out = Output()
    out.add("héllo", key="s")
    out.add(b"\x00\x01", key="b")
    out.add(bytearray(b"ba"), key="ba")
    out.add({"a": 1}, key="d")
    out.add([1, "x"], key="l")
    out.add(7, key="i")
    out.add(None, key="n")
    assert out.get_content().get("s") == "héllo".encode()
    assert out.get_content().get("b") == b"\x00\x01"
    assert out.get_content().get("ba") == bytearray(b"ba")
    assert out.get_content().get("d") == b'{\n  "a":1\n}'
    assert out.get_content().get("l") == b'[\n  1,\n  "x"\n]'
    assert out.get_content().get("i") == b"7"
    assert out.get_content().get("n") == b"null"


def test_add_without_key_has_none_key() -> None:
    out = Output().add("x")
    assert out.get_content().get_keys() == [None]


@pytest.mark.parametrize(
    ("key", "index", "expected"),
    [
        ("data", 0, "batch_0.data"),
        ("out", 12, "batch_12.out"),
        (None, 3, "batch_3."),
        ("", 100, "batch_100."),
    ],
)
def test_add_with_batch_index_is_not_padded(key: str | None, index: int, expected: str) -> None:
    out = Output().add("v", key=key, batch_index=index)
    assert out.get_content().get_keys() == [expected]


def test_add_as_json_formatting() -> None:
    assert Output().add_as_json({"a": 1}).get_content().value_at(0) == b'{\n  "a":1\n}'
    nested = Output().add_as_json({"a": [1, {"b": None}], "c": "é"}, key="k", batch_index=2)
    assert nested.get_content().key_at(0) == "batch_2.k"
    assert nested.get_content().value_at(0) == (
        '{\n  "a":[\n    1,\n    {\n      "b":null\n    }\n  ],\n  "c":"é"\n}'.encode()
    )
    with pytest.raises(ValueError):
        Output().add_as_json({"x": float("nan")})


def test_json_converts_numpy_and_datetime() -> None:
    value = {
        "i": np.int64(3),
        "f": np.float32(0.5),
        "arr": np.array([[1, 2]]),
        "when": datetime.datetime(2024, 1, 2, 3, 4, 5),
    }
    decoded = json.loads(encode_json(value))
    assert decoded == {"i": 3, "f": 0.5, "arr": [[1, 2]], "when": "2024-01-02T03:04:05"}


def test_error_sets_code_message_header_and_body() -> None:
    out = Output().error("model error")
    assert (out.code, out.message) == (424, "invoke handler failure")
    assert out.get_properties() == {"content-type": "application/json"}
    assert out.get_content().size() == 1
    body = out.get_content().value_at(0)
    assert json.loads(body) == {
        "code": 424,
        "message": "invoke handler failure",
        "error": "model error",
    }
    assert body == encode_json(
        {"code": 424, "message": "invoke handler failure", "error": "model error"}
    )

    out = Output().error("bad input", code=400, message="Bad Request")
    assert (out.code, out.message) == (400, "Bad Request")
    assert json.loads(out.get_content().value_at(0)) == {
        "code": 400,
        "message": "Bad Request",
        "error": "bad input",
    }


def test_add_as_numpy_and_npz_round_trip_through_input() -> None:
    arrays = [np.arange(4, dtype=np.int32), np.ones((2, 2), dtype=np.float16)]
    out = Output().add_as_numpy(arrays, key="nd").add_as_npz(arrays, key="npz", batch_index=1)
    assert out.get_content().get_keys() == ["nd", "batch_1.npz"]
    inp = out.as_input()
    for key in ("nd", "batch_1.npz"):
        decoded = inp.get_as_numpy(key)
        assert [a.dtype for a in decoded] == [np.int32, np.float16]
        assert all(np.array_equal(g, w) for g, w in zip(decoded, arrays, strict=True))


def test_add_stream_content_default_formatter() -> None:
    out = Output().add_stream_content(f"t-{i}" for i in range(3))
    assert out.stream is not None
    chunks = [out.stream_formatter(item) for item in out.stream]
    assert chunks == [b'{"outputs": "t-0"}\n', b'{"outputs": "t-1"}\n', b'{"outputs": "t-2"}\n']


def test_add_stream_content_custom_and_raw_formatter() -> None:
    out = Output().add_stream_content(["a", "b"], output_formatter=None)
    assert out.stream_formatter is None
    assert list(out.stream) == ["a", "b"]

    def upper(item: str) -> bytes:
        return item.upper().encode()

    out = Output().add_stream_content(iter(["x"]), output_formatter=upper)
    assert [out.stream_formatter(i) for i in out.stream] == [b"X"]


def test_finalize_registers_callbacks_in_order() -> None:
    calls: list[tuple[str, int]] = []
    out = Output().finalize(calls.append, ("a", 1)).finalize(calls.append, ("b", 2))
    for function, args in out.finalizers:
        function(*args)
    assert calls == [("a", 1), ("b", 2)]


def test_output_data_item_and_as_input() -> None:
    out = Output().add_property("content-type", "text/plain").add("x", key="k").add("d", key="data")
    assert out.get_data_item() == b"d"
    assert Output().get_data_item() is None
    inp = out.as_input()
    assert inp.get_data() == "d"
    assert inp.get_as_string("k") == "x"
    inp.add_property("extra", "1")
    assert "extra" not in out.get_properties()  # a copy, not a view


# -- djl_python compatibility ----------------------------------------------------------------


def test_djl_python_reexports_the_same_classes() -> None:
    import djl_python
    from djl_python import Input as PyInput
    from djl_python import Output as PyOutput
    from djl_python import PairList as PyPairList
    from djl_python.inputs import Input as ModInput
    from djl_python.np_util import from_nd_list, to_nd_list
    from djl_python.outputs import Output as ModOutput
    from djl_python.pair_list import PairList as ModPairList

    assert PyInput is ModInput is Input
    assert PyOutput is ModOutput is Output
    assert PyPairList is ModPairList is PairList
    assert set(djl_python.__all__) == {"Input", "Output", "PairList"}
    (back,) = from_nd_list(to_nd_list([np.array([1, 2], dtype=np.uint8)]))
    assert back.dtype == np.uint8 and back.tolist() == [1, 2]


def test_djl_python_imports_no_server_or_torch_modules() -> None:
    code = (
        "import sys\n"
        "import djl_python, djl_python.inputs, djl_python.outputs, djl_python.pair_list\n"
        "import djl_python.np_util\n"
        "heavy = {'quart', 'quart_trio', 'hypercorn', 'torch', 'trio'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_pair_list_takes_djl_pythons_constructor_and_add_forms():
    """djl_python.pair_list.PairList: keys+values, pair_list or pair_map; add(index=,
    pair=) and add_all."""
    assert list(PairList(keys=["a", "b"], values=[1, 2])) == [("a", 1), ("b", 2)]
    assert list(PairList(pair_list=[("a", 1)])) == [("a", 1)]
    assert list(PairList(pair_map={"m": 3})) == [("m", 3)]
    with pytest.raises(ValueError):
        PairList(keys=["a"], values=[])
    pairs = PairList(keys=["a"], values=[1])
    pairs.add(pair=("z", 26))
    pairs.add("first", 0, index=0)
    pairs.add_all(PairList(pair_list=[("x", 9)]))
    assert list(pairs) == [("first", 0), ("a", 1), ("z", 26), ("x", 9)]


def test_a_single_array_is_one_ndlist_entry():
    """djl_python's to_nd_list (and Output.add_as_numpy) wrap a lone array, never split it
    along its first axis."""
    from djl.ndlist import decode_ndlist
    from djl_python.np_util import to_nd_list

    [array] = decode_ndlist(to_nd_list(np.ones((2, 3), dtype=np.float32)))
    assert array.shape == (2, 3)
    out = Output().add_as_numpy(np.arange(4, dtype=np.int32))
    [again] = decode_ndlist(out.get_data_item())
    assert again.tolist() == [0, 1, 2, 3]
