"""Workflow definitions (spec §7.1-§7.4): recognising, reading, parsing and static checks."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path

import pytest

from djl.config import RegisterParams, ServerConfig
from djl.errors import BadRequest, DjlError, Forbidden, IllegalArgument
from djl.io import Output
from djl.workflow.files import workflow_file_of
from djl.workflow.graph import execute
from djl.workflow.spec import (
    ModelRef,
    load_workflow,
    parse_workflow,
    single_model_workflow,
)

CONFIG = ServerConfig()

BASIC = {
    "name": "BasicWorkflow",
    "version": "0.1",
    "models": {"m": "djl://ai.djl.zoo/mlp/0.0.3/mlp", "local": "{model_dir}/local"},
    "workflow": {"out": ["m", "in"]},
}


def write(path: Path, content: str | dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def parse(document: dict, base_uri: str = "file:/srv/wf/workflow.json", **kw) -> object:
    return parse_workflow(json.dumps(document), "json", base_uri, **kw)


def error_of(document: dict) -> str:
    with pytest.raises(BadRequest) as caught:
        parse(document)
    assert caught.value.status == 400
    return caught.value.message


# -- §7.1: which URLs are workflows ------------------------------------------------------------


def test_workflow_file_of_remote_urls():
    assert workflow_file_of("https://host/p/wf.json") == "https://host/p/wf.json"
    assert workflow_file_of("s3://bucket/wf.yml") == "s3://bucket/wf.yml"
    assert workflow_file_of("https://host/wf.yaml") == "https://host/wf.yaml"
    assert workflow_file_of("djl://ai.djl.zoo/mlp/0.0.3/mlp") is None
    assert workflow_file_of("https://host/model.zip") is None


def test_workflow_file_of_local_paths(tmp_path, monkeypatch):
    model_dir = tmp_path / "model"
    write(model_dir / "model.py", "")
    wf_dir = tmp_path / "wf"
    write(wf_dir / "workflow.yml", "")
    write(wf_dir / "workflow.json", BASIC)  # .json wins over .yml
    json_file = write(tmp_path / "xgb.json", "{}")

    assert workflow_file_of(str(model_dir)) is None
    assert workflow_file_of(str(tmp_path / "missing.json")) is None
    # hits keep the caller's spelling, so allow-list patterns written for it still match
    assert workflow_file_of(str(wf_dir)) == f"{wf_dir}/workflow.json"
    assert workflow_file_of(f"file:{wf_dir}/") == f"file:{wf_dir}/workflow.json"
    assert workflow_file_of(f"file://{wf_dir}") == f"file://{wf_dir}/workflow.json"
    assert workflow_file_of(str(json_file)) == str(json_file)  # [QUIRK] kept
    write(tmp_path / "yml_only" / "workflow.yml", "")
    assert workflow_file_of(str(tmp_path / "yml_only")) == f"{tmp_path}/yml_only/workflow.yml"
    monkeypatch.chdir(tmp_path)
    assert workflow_file_of("wf") == "wf/workflow.json"
    assert workflow_file_of("file:wf") == "file:wf/workflow.json"


# -- reading files -----------------------------------------------------------------------------


async def test_load_json_file_with_model_dir(tmp_path):
    path = write(tmp_path / "basic.json", BASIC)

    spec = await load_workflow(str(path), CONFIG)

    assert (spec.name, spec.version) == ("BasicWorkflow", "0.1")
    assert spec.base_uri == f"file:{path}"
    assert spec.models["local"].url == f"file:{tmp_path}/local"
    assert spec.models["m"] == ModelRef(
        "m",
        "djl://ai.djl.zoo/mlp/0.0.3/mlp",
        None,
        RegisterParams(url="djl://ai.djl.zoo/mlp/0.0.3/mlp", model_name="m"),
    )
    assert spec.graph == {"out": ["m", "in"]}


async def test_load_yaml_file(tmp_path):
    path = write(
        tmp_path / "basic.yaml",
        textwrap.dedent(
            """\
            name: yml
            version: 0.1
            models:
              m: "djl://ai.djl.zoo/mlp/0.0.3/mlp"
            workflow:
              out: ["m", "in"]
            """
        ),
    )

    spec = await load_workflow(f"file:{path}", CONFIG)

    assert (spec.name, spec.version) == ("yml", "0.1")
    assert spec.models["m"].url == "djl://ai.djl.zoo/mlp/0.0.3/mlp"


async def test_load_directory_holding_workflow_json(tmp_path, monkeypatch):
    write(tmp_path / "w1" / "workflow.json", BASIC)
    monkeypatch.chdir(tmp_path)

    spec = await load_workflow(workflow_file_of("w1"), CONFIG)
    again = await load_workflow(f"file:{tmp_path}/w1", CONFIG)

    assert spec.name == again.name == "BasicWorkflow"
    assert spec.base_uri == again.base_uri == f"file:{tmp_path}/w1/workflow.json"
    assert spec.models["local"].url == f"file:{tmp_path}/w1/local"


async def test_relative_paths_are_local_even_when_they_start_with_http(tmp_path, monkeypatch):
    write(tmp_path / "httpdocs" / "wf.json", BASIC)
    monkeypatch.chdir(tmp_path)

    spec = await load_workflow("httpdocs/wf.json", CONFIG)

    assert spec.base_uri == f"file:{tmp_path}/httpdocs/wf.json"


async def test_load_refuses_bad_file_type_and_missing_files(tmp_path):
    write(tmp_path / "wf.zip", "")
    write(tmp_path / "empty" / "model.py", "")

    with pytest.raises(IllegalArgument) as caught:
        await load_workflow(str(tmp_path / "wf.zip"), CONFIG)
    assert (caught.value.status, caught.value.message) == (400, "Unexpected file type: zip")

    with pytest.raises(DjlError) as missing:
        await load_workflow(str(tmp_path / "nope.json"), CONFIG)
    assert missing.value.status == 404

    with pytest.raises(BadRequest, match="holds no workflow.json"):
        await load_workflow(str(tmp_path / "empty"), CONFIG)

    with pytest.raises(BadRequest, match="only local files and http"):
        await load_workflow("s3://bucket/wf.json", CONFIG)


async def test_load_honours_allowed_urls(tmp_path):
    path = write(tmp_path / "wf.json", BASIC)
    config = dataclasses.replace(CONFIG, allowed_urls=(r"/nowhere/.*",))

    with pytest.raises(Forbidden):
        await load_workflow(str(path), config)


def test_parse_bad_file_type():
    with pytest.raises(IllegalArgument) as caught:
        parse_workflow("{}", "txt", "file:/a/wf.txt")
    assert caught.value.message == "Unexpected file type: txt"
    assert caught.value.status == 400


def test_parse_syntax_errors():
    with pytest.raises(BadRequest, match="is not valid JSON"):
        parse_workflow("{", "json", "file:/a/wf.json")
    with pytest.raises(BadRequest, match="is not valid YAML"):
        parse_workflow("a: [", "yaml", "file:/a/wf.yaml")
    with pytest.raises(BadRequest, match="must hold an object"):
        parse_workflow("[]", "json", "file:/a/wf.json")


# -- §7.2: models, replacements ----------------------------------------------------------------


def test_model_object_form():
    spec = parse(
        {
            "models": {
                "m": {
                    "modelUrl": "djl://ai.djl.zoo/mlp/0.0.3/mlp",
                    "version": "2",
                    "engineName": "Python",
                    "loadOnDevices": "cpu",
                    "queueSize": 102,
                    "maxIdleSeconds": 62,
                    "maxBatchDelayMillis": "302",
                    "batchSize": 3,
                    "minWorkers": 1,
                    "maxWorkers": 2,
                    "arguments": {"topK": 1, "flag": True, "none": None},
                    "options": {"rolling_batch": "disable"},
                    "translatorFactory": "ignored",
                }
            },
            "workflow": {"out": ["m", "in"]},
        }
    )

    ref = spec.models["m"]
    assert ref.version == "2"
    assert ref.params == RegisterParams(
        url="djl://ai.djl.zoo/mlp/0.0.3/mlp",
        model_name="m",
        model_version="2",
        engine="Python",
        device="cpu",
        job_queue_size=102,
        batch_size=3,
        max_batch_delay_ms=302,
        max_idle_time_s=62,
        min_workers=1,
        max_workers=2,
    )
    assert ref.arguments == {"topK": "1", "flag": "true"}
    assert ref.options == {"rolling_batch": "disable"}


def test_model_object_errors():
    assert error_of({"models": {"m": {"url": "x"}}, "workflow": {"out": ["m", "in"]}}) == (
        "The model m must have a modelUrl"
    )
    message = error_of(
        {"models": {"m": {"modelUrl": "x", "batchSize": "big"}}, "workflow": {"out": ["m", "in"]}}
    )
    assert message == "The batchSize of model m must be an integer, not 'big'"
    assert "Unexpected type of model definition for m" in error_of(
        {"models": {"m": 3}, "workflow": {"out": ["m", "in"]}}
    )


def test_replacements_are_textual_and_model_dir_is_derived():
    text = json.dumps(
        {"name": "{wf}", "models": {"m": "{model_dir}/m"}, "workflow": {"out": ["m", "in"]}}
    )

    spec = parse_workflow(
        text, "json", "https://host/p/wf.json", {"wf": "named", "model_dir": "ignored"}
    )

    assert spec.name == "named"
    assert spec.models["m"].url == "https://host/p/m"


def test_missing_name_is_allowed():
    spec = parse({"models": {"m": "u"}, "workflow": {"out": ["m", "in"]}})

    assert spec.name is None and spec.version is None


def test_single_model_workflow():
    ref = ModelRef("mlp", "file:/m/mlp", None, RegisterParams(url="file:/m/mlp"))

    spec = single_model_workflow(ref, "mlp", "1")

    assert spec.graph == {"out": ["mlp", "in"]}
    assert (spec.name, spec.version, dict(spec.models)) == ("mlp", "1", {"mlp": ref})


# -- §7.4: static errors -----------------------------------------------------------------------


def test_out_missing():
    assert error_of({"models": {"m": "u"}, "workflow": {"x": ["m", "in"]}}) == (
        "Expected to find variable but it is not defined: out"
    )
    assert (
        error_of({"models": {"m": "u"}}) == "Expected to find variable but it is not defined: out"
    )


def test_undefined_variable():
    assert error_of({"models": {"m": "u"}, "workflow": {"out": ["m", "nope"]}}) == (
        "Expected to find variable but it is not defined: nope"
    )


def test_unknown_callee():
    assert error_of({"workflow": {"out": ["mystery", "in"]}}) == (
        "Could not find find model or function: mystery"
    )
    assert error_of(
        {"models": {"m": "u"}, "workflow": {"out": ["functionsApply", ["m", "nope"], "in"]}}
    ) == ("Could not find find model or function: nope")


def test_unknown_callee_in_an_unused_variable_is_still_an_error():
    assert error_of(
        {"models": {"m": "u"}, "workflow": {"out": ["m", "in"], "dead": ["typo", "in"]}}
    ) == ("Could not find find model or function: typo")


def test_cycles():
    assert error_of(
        {
            "models": {"m": "u"},
            "workflow": {"out": ["m", "a"], "a": ["m", "b"], "b": ["m", "a"]},
        }
    ) == ("Your workflow contains a cycle with target: a")
    assert error_of({"models": {"m": "u"}, "workflow": {"out": ["m", "out"]}}) == (
        "Your workflow contains a cycle with target: out"
    )


def test_arity_errors():
    models = {"m": "u"}
    cases = {
        "The model or worker type m should have one arg, but has 2": ["m", "in", "in"],
        "Expected one argument to id": ["id", "in", "in"],
        "Expected two arguments: the list of functions to run and the input, but found 1": [
            "functionsApply",
            ["m"],
        ],
        "Expected one arguments, the list of items to ensemble": ["ensemble"],
        "The adapter workflow function should have two args, but has 1": ["adapter", "in"],
    }
    for message, expr in cases.items():
        assert error_of({"models": models, "workflow": {"out": expr}}) == message
    # applying a two-argument built-in through functionsApply is the same mistake
    assert error_of(
        {"models": models, "workflow": {"out": ["id", ["functionsApply", ["adapter"], "in"]]}}
    ) == ("The adapter workflow function should have two args, but has 1")


def test_adapter_errors():
    assert error_of({"models": {"m": "u"}, "workflow": {"out": ["adapter", "a9", "in"]}}) == (
        "The adapter function was called with unknown adapter a9"
    )
    assert error_of(
        {
            "models": {"m": "u"},
            "configs": {"adapters": {"a1": {"model": "x", "src": "s"}}},
            "workflow": {"out": ["m", "in"]},
        }
    ) == ("The adapter a1 refers to an unknown model: x")


def test_malformed_expressions():
    assert "must be an expression" in error_of({"workflow": {"out": "in"}})
    assert "must start with the name" in error_of({"workflow": {"out": [["id"], "in"]}})
    assert "an argument must be a variable name" in error_of({"workflow": {"out": ["id", 3]}})
    assert "cannot define the variable in" in error_of(
        {"workflow": {"in": ["id", "out"], "out": ["id", "in"]}}
    )
    assert error_of({"workflow": {"out": ["functionsApply", ["id"], "in"]}}) == (
        "The workflow did not return an output. Instead it returned an list"
    )


def test_depth_limit():
    expr: list | str = "in"
    for _ in range(150):
        expr = ["id", expr]
    assert "more than 100 deep" in error_of({"workflow": {"out": expr}})

    chain = {f"v{i}": ["id", f"v{i + 1}"] for i in range(150)}
    chain["v150"] = ["id", "in"]
    chain["out"] = ["id", "v0"]
    assert "more than 100 deep" in error_of({"workflow": chain})


def test_shared_subtrees_are_bounded(make_spec):
    # YAML aliases let a small file repeat a subtree exponentially often.
    expr: list = ["join", "in"]
    for _ in range(40):
        expr = ["join", expr, expr]

    with pytest.raises(BadRequest, match="more than 10000 expressions"):
        make_spec({"out": expr}, functions={"join": lambda *v: v[0]})


def test_yaml_aliases_parse(tmp_path):
    text = "models: {m: u}\nworkflow:\n  a: &call [m, in]\n  out: [m, *call]\n"

    spec = parse_workflow(text, "yaml", "file:/a/wf.yaml")

    assert spec.graph["out"] == ["m", ["m", "in"]]


# -- custom functions from libs/ -----------------------------------------------------------------

FUNCS = """\
from djl.io import Output

from . import helper


def oid(value):
    return helper.copy(value)


async def shout(value):
    output = Output()
    output.add(bytes(value.get_content().value_at(0)).upper())
    return output
"""

HELPER = """\
from djl.io import Output


def copy(value):
    output = Output()
    output.add(b"oid:" + bytes(value.get_content().value_at(0)))
    return output
"""


async def test_custom_functions_load_from_libs_and_run(tmp_path, models, make_request):
    write(tmp_path / "wf" / "libs" / "mypkg" / "funcs.py", FUNCS)
    write(tmp_path / "wf" / "libs" / "mypkg" / "helper.py", HELPER)
    write(
        tmp_path / "wf" / "workflow.json",
        {
            "name": "functions",
            "models": {"m": "u"},
            "functions": {"oid": "mypkg.funcs:oid", "shout": "mypkg.funcs:shout"},
            "workflow": {"out": ["shout", ["oid", ["id", ["m", "in"]]]]},
        },
    )

    spec = await load_workflow(str(tmp_path / "wf"), CONFIG)
    result = await execute(spec, make_request("x"), models)

    assert isinstance(result, Output)
    assert bytes(result.get_content().value_at(0)) == b"OID:M(X)"


async def test_libs_of_two_workflows_do_not_collide(tmp_path):
    for name in ("a", "b"):
        write(tmp_path / name / "libs" / "funcs.py", f"def f(v):\n    return {name!r}\n")
        write(
            tmp_path / name / "workflow.json",
            {"functions": {"f": "funcs:f"}, "workflow": {"out": ["f", "in"]}},
        )

    a = await load_workflow(str(tmp_path / "a"), CONFIG)
    b = await load_workflow(str(tmp_path / "b"), CONFIG)

    assert (a.functions["f"](None), b.functions["f"](None)) == ("a", "b")


async def test_reregistering_reloads_changed_code(tmp_path):
    source = write(tmp_path / "libs" / "funcs.py", "def f(v):\n    return 1\n")
    wf = write(
        tmp_path / "wf.json", {"functions": {"f": "funcs:f"}, "workflow": {"out": ["f", "in"]}}
    )
    first = await load_workflow(str(wf), CONFIG)
    source.write_text("def f(v):\n    return 22\n")

    second = await load_workflow(str(wf), CONFIG)

    assert (first.functions["f"](None), second.functions["f"](None)) == (1, 22)


def test_function_load_errors(tmp_path):
    write(tmp_path / "libs" / "funcs.py", "x = 1\nraise_later = None\n")
    write(tmp_path / "libs" / "broken.py", "import not_a_module_anywhere\n")
    base = f"file:{tmp_path}/wf.json"

    def message(target: str, base_uri: str = base) -> str:
        document = {"functions": {"f": target}, "workflow": {"out": ["f", "in"]}}
        with pytest.raises(BadRequest) as caught:
            parse_workflow(json.dumps(document), "json", base_uri)
        return caught.value.message

    assert message("funcs:nope") == "Could not load function f: module funcs has no attribute nope"
    assert message("funcs:x") == "Could not load function f: funcs:x is not callable"
    assert message("missing:f").startswith("Could not load function f: no module named 'missing'")
    assert message("broken:f") == (
        "Could not load function f: ModuleNotFoundError: No module named "
        "'not_a_module_anywhere' (modules in libs/ import each other relatively: from . import x)"
    )
    assert "is not of the form" in message("../evil:f")
    assert message("funcs:x", "https://host/wf.json") == (
        "Could not load function f: custom functions load only from the libs/ folder of a "
        "local workflow file, and https://host/wf.json is not local"
    )
    assert message("funcs:x", f"file:{tmp_path}/sub/wf.json").endswith("libs is not a directory")


def test_remote_file_cannot_point_base_uri_at_local_libs(tmp_path):
    write(tmp_path / "libs" / "funcs.py", "def f(v):\n    return v\n")
    document = {
        "baseUri": f"file:{tmp_path}/wf.json",
        "functions": {"f": "funcs:f"},
        "workflow": {"out": ["f", "in"]},
    }

    with pytest.raises(BadRequest, match="https://host/wf.json is not local"):
        parse_workflow(json.dumps(document), "json", "https://host/wf.json")


async def test_base_uri_cannot_load_functions_from_outside_allowed_urls(tmp_path):
    marker = tmp_path / "RAN"
    write(tmp_path / "evil" / "libs" / "funcs.py",
          f"import pathlib\npathlib.Path({str(marker)!r}).write_text('x')\n"
          "def f(v):\n    return v\n")
    document = {
        "name": "w",
        "baseUri": f"file:{tmp_path}/evil/wf.json",
        "functions": {"f": "funcs:f"},
        "workflow": {"out": ["f", "in"]},
    }
    path = write(tmp_path / "allowed" / "wf.json", document)
    narrow = ServerConfig(allowed_urls=(f"file:{tmp_path}/allowed/.*",))
    with pytest.raises(Forbidden, match=f"allowed_urls: file:{tmp_path}/evil/libs"):
        await load_workflow(f"file:{path}", narrow)
    assert not marker.exists()
    # A link inside the allowed folder is no way around it.
    (tmp_path / "allowed" / "libs").symlink_to(tmp_path / "evil" / "libs")
    del document["baseUri"]
    write(path, document)
    with pytest.raises(Forbidden, match="resolves to"):
        await load_workflow(f"file:{path}", narrow)
    assert not marker.exists()
    assert (await load_workflow(f"file:{path}", CONFIG)).functions["f"](1) == 1
