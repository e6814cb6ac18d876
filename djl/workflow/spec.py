"""Workflow definitions: recognise, read, substitute and parse workflow files (spec §7.1, §7.2).

:func:`~djl.workflow.files.workflow_file_of` says whether a model URL is really a workflow
(§7.1). :func:`load_workflow` reads one (local file or http(s)) and :func:`parse_workflow` turns
its text into a :class:`WorkflowSpec`, which is valid by construction: building one
compiles its graph (``program.compile_program``), so every static error is a 400 at
registration rather than a failure of the first request.

Custom functions (``"functions": {"f": "package.module:function"}``) are imported (by
``libs.py``) from the ``libs/`` folder next to the workflow (``<dir of baseUri>/libs``),
only when the file itself is local: a remote file may not make the server run code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from djl import url_policy
from djl.config import RegisterParams, parse_java_int
from djl.errors import BadRequest, IllegalArgument
from djl.workflow.files import (
    FILE_TYPES,
    local_path,
    locate,
    path_uri,
    workflow_file_type,
)
from djl.workflow.libs import load_functions
from djl.workflow.program import IN, OUT, Program, compile_program
from djl.workflow.refs import AdapterRef, ModelRef

if TYPE_CHECKING:
    from djl.config import ServerConfig

__all__ = [
    "IN",
    "OUT",
    "AdapterRef",
    "ModelRef",
    "WorkflowSpec",
    "load_workflow",
    "parse_workflow",
    "single_model_workflow",
    "substitute",
]

_HTTP = re.compile(r"(?i)https?://")


@dataclass(frozen=True)
class WorkflowSpec:
    """A parsed, validated workflow. Constructing one validates and compiles the graph
    (BadRequest on any problem), so ``dataclasses.replace(spec, name=...)`` is safe."""

    name: str | None
    version: str | None
    #: The file's ``baseUri`` if it has one, else the file's URI (``file:/abs/wf.json``).
    base_uri: str
    models: Mapping[str, ModelRef]
    #: Custom functions by name, loaded (see functions.py for their contract).
    functions: Mapping[str, Callable[..., Any]]
    configs: Mapping[str, Any]
    #: variable -> expression, as written.
    graph: Mapping[str, Any]
    #: ``configs.adapters``, checked against ``models``.
    adapters: Mapping[str, AdapterRef] = field(init=False, repr=False, compare=False)
    program: Program = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        adapters = _parse_adapters(self.configs, self.models)
        object.__setattr__(self, "adapters", adapters)
        program = compile_program(self.models, self.functions, adapters, self.graph)
        object.__setattr__(self, "program", program)


def single_model_workflow(
    ref: ModelRef, name: str | None = None, version: str | None = None
) -> WorkflowSpec:
    """The workflow of a plain ``POST /models`` (§7.7): ``out = [<local_name>, in]``."""
    return WorkflowSpec(
        name=name,
        version=version,
        base_uri=ref.url,
        models={ref.local_name: ref},
        functions={},
        configs={},
        graph={OUT: [ref.local_name, IN]},
    )


async def load_workflow(
    url: str, config: ServerConfig, replacements: Mapping[str, str] | None = None
) -> WorkflowSpec:
    """Read and parse the workflow at ``url`` (the ``url`` of ``POST /workflows``, or what
    :func:`workflow_file_of` returned). Blocking work runs in a thread.

    The file type comes from the URL's extension (``json``/``yml``/``yaml``, else 400
    ``"Unexpected file type: <ext>"``); a local directory holding a workflow file is also
    accepted. ``url`` passes ``allowed_urls`` before the disk is looked at (a refused path
    must not reveal whether it exists). The text comes from ``djl.store.fetch_text`` (local
    paths, relative ones against the working directory, and http(s)), which enforces
    ``allowed_urls`` and the size cap: its errors (403, 404 for a missing file, 413, ...)
    propagate. Other schemes: 400. Parse and validation problems: 400 (see
    :func:`parse_workflow`).
    """
    from djl.store import fetch_text  # size caps and I/O

    is_http = _HTTP.match(url) is not None
    path = None if is_http else local_path(url)
    if not is_http and path is None:
        raise BadRequest(
            f"Cannot read a workflow from {url}: only local files and http(s) URLs are supported"
        )
    url_policy.check(url, config)
    if path is None:
        base_uri = url
    else:
        url, base_uri = await trio.to_thread.run_sync(locate, path, url)
    file_type = workflow_file_type(url)
    text = await fetch_text(url, config)
    return await trio.to_thread.run_sync(
        partial(parse_workflow, text, file_type, base_uri, replacements,
                allow=lambda folder: url_policy.check_path(folder, config))
    )


# -- parsing --------------------------------------------------------------------------------


def substitute(text: str, replacements: Mapping[str, str]) -> str:
    """Replace every ``{key}`` by its value, in one pass (a value is never re-substituted)."""
    if not replacements:
        return text
    keys = "|".join(re.escape(k) for k in sorted(replacements, key=len, reverse=True))
    return re.sub(r"\{(" + keys + r")\}", lambda m: str(replacements[m.group(1)]), text)


def workflow_dir(uri: str) -> str:
    """``{model_dir}``: the URI up to its last ``/`` (``file:/a/wf.json`` → ``file:/a``)."""
    return uri[: uri.rfind("/")] if "/" in uri else ""


def parse_workflow(
    text: str,
    file_type: str,
    base_uri: str,
    replacements: Mapping[str, str] | None = None,
    *,
    allow: Callable[[str], object] | None = None,
) -> WorkflowSpec:
    """Parse a workflow file's text (§7.2) into a validated :class:`WorkflowSpec`.

    ``base_uri`` is the file's URI: ``{model_dir}`` is derived from it (always, over any
    caller value), and custom functions load only when it is local, and only after
    ``allow`` (raising to refuse) has admitted the ``file:`` URL of their ``libs/`` folder:
    the file's ``baseUri`` may name any folder. ``replacements`` are
    applied textually first. Raises IllegalArgument for a ``file_type`` other than
    json/yml/yaml, BadRequest for syntax errors, malformed sections, functions that cannot
    be loaded (``"Could not load function <name>: <why>"``) and every graph error of
    ``program.compile_program``. A missing ``name`` is allowed (POST /models supplies one).
    """
    kind = file_type.lower()
    if kind not in FILE_TYPES:
        raise IllegalArgument.file_type(file_type)
    values = {**(replacements or {}), "model_dir": workflow_dir(base_uri)}
    data = _decode(substitute(text, values), kind, base_uri)
    if not isinstance(data, dict):
        raise BadRequest(
            f"The workflow file {base_uri} must hold an object, not {type(data).__name__}"
        )
    models = _parse_models(data.get("models"))
    configs = _mapping(data, "configs")
    graph = _mapping(data, "workflow")
    effective_base = _optional_str(data, "baseUri") or base_uri
    functions = _load_functions(_mapping(data, "functions"), base_uri, effective_base, allow)
    return WorkflowSpec(
        name=_optional_str(data, "name"),
        version=_optional_str(data, "version"),
        base_uri=effective_base,
        models=models,
        functions=functions,
        configs=configs,
        graph=graph,
    )


def _decode(text: str, kind: str, base_uri: str) -> Any:
    try:
        if kind == "json":
            try:
                return json.loads(text)
            except ValueError as exc:  # json.JSONDecodeError
                raise BadRequest(f"The workflow file {base_uri} is not valid JSON: {exc}") from None
        import yaml

        try:
            return yaml.safe_load(text)
        except (yaml.YAMLError, ValueError) as exc:
            detail = " ".join(str(exc).split())
            raise BadRequest(f"The workflow file {base_uri} is not valid YAML: {detail}") from None
    except RecursionError:
        raise BadRequest(f"The workflow file {base_uri} is nested too deeply") from None


def _mapping(data: Mapping[str, Any], key: str) -> dict[Any, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"The workflow's {key} must be a map, not {type(value).__name__}")
    return value


def _scalar(value: Any) -> str | None:
    """A YAML/JSON scalar as the string Java would see (YAML ``version: 0.1`` is a float)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise TypeError(type(value).__name__)


def _optional_str(data: Mapping[str, Any], key: str) -> str | None:
    try:
        return _scalar(data.get(key)) or None
    except TypeError:
        raise BadRequest(f"The workflow's {key} must be a string") from None


def _parse_models(raw: Any) -> dict[str, ModelRef]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BadRequest("The workflow's models must be a map of names to model URLs or objects")
    models: dict[str, ModelRef] = {}
    for name, definition in raw.items():
        if not isinstance(name, str) or not name:
            raise BadRequest(f"A workflow model name must be a non-empty string, not {name!r}")
        if isinstance(definition, str) and definition:
            params = RegisterParams(url=definition, model_name=name)
            models[name] = ModelRef(name, definition, None, params)
        elif isinstance(definition, dict):
            models[name] = _model_object(name, definition)
        else:
            raise BadRequest(
                f"Unexpected type of model definition for {name}: "
                "should be an object or a URL string"
            )
    return models


#: RegisterParams' number fields by their name in a workflow's model object (Java's
#: ModelInfo), in the order they are read.
_MODEL_INFO_NUMBERS = {
    "job_queue_size": "queueSize",
    "batch_size": "batchSize",
    "max_batch_delay_ms": "maxBatchDelayMillis",
    "max_idle_time_s": "maxIdleSeconds",
    "min_workers": "minWorkers",
    "max_workers": "maxWorkers",
}


def _model_object(name: str, raw: Mapping[str, Any]) -> ModelRef:
    """The object form of a model (Java's ModelInfo field names; unknown keys ignored)."""
    url = raw.get("modelUrl")
    if not isinstance(url, str) or not url:
        raise BadRequest(f"The model {name} must have a modelUrl")

    def text(key: str) -> str | None:
        try:
            return _scalar(raw.get(key)) or None
        except TypeError:
            raise BadRequest(f"The {key} of model {name} must be a string") from None

    def number(key: str) -> int | None:
        value = raw.get(key)
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return parse_java_int(value.strip())
            except ValueError:
                pass
        raise BadRequest(f"The {key} of model {name} must be an integer, not {value!r}")

    version = text("version")
    params = RegisterParams(
        url=url,
        model_name=name,
        model_version=version,
        engine=text("engineName"),
        device=text("loadOnDevices"),
        **{field: number(key) for field, key in _MODEL_INFO_NUMBERS.items()},
    )
    return ModelRef(
        name,
        url,
        version,
        params,
        _string_map(raw.get("arguments"), f"arguments of model {name}"),
        _string_map(raw.get("options"), f"options of model {name}"),
    )


def _string_map(raw: Any, what: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BadRequest(f"The {what} must be a map")
    result: dict[str, str] = {}
    for key, value in raw.items():
        try:
            text = _scalar(value)
        except TypeError:
            raise BadRequest(f"The {what}: {key} must be a string, number or boolean") from None
        if text is not None:
            result[str(key)] = text
    return result


def _parse_adapters(
    configs: Mapping[str, Any], models: Mapping[str, ModelRef]
) -> dict[str, AdapterRef]:
    raw = configs.get("adapters") if isinstance(configs, Mapping) else None
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise BadRequest("The workflow's configs.adapters must be a map")
    adapters: dict[str, AdapterRef] = {}
    for name, entry in raw.items():
        if not isinstance(entry, Mapping):
            raise BadRequest(f"The adapter {name} must be an object with model and src")
        model, src = entry.get("model"), entry.get("src")
        if not isinstance(model, str) or model not in models:
            raise BadRequest(f"The adapter {name} refers to an unknown model: {model}")
        if not isinstance(src, str) or not src:
            raise BadRequest(f"The adapter {name} must have a src")
        options = entry.get("options")
        kept = (
            {k: v for k, v in options.items() if isinstance(v, str)}
            if isinstance(options, Mapping)
            else {}
        )
        adapters[str(name)] = AdapterRef(str(name), model, src, kept)
    return adapters


# -- custom functions -----------------------------------------------------------------------


def _load_functions(
    raw: Mapping[Any, Any], file_uri: str, base_uri: str, allow: Callable[[str], object] | None
) -> dict[str, Callable[..., Any]]:
    """Load ``functions`` from ``<dir of base_uri>/libs``, only for a local file."""
    if not raw:
        return {}
    base_dir = local_path(workflow_dir(base_uri)) if "/" in base_uri else None
    if local_path(file_uri) is None or base_dir is None:
        where = file_uri if local_path(file_uri) is None else f"its baseUri {base_uri}"
        raise BadRequest(
            f"Could not load function {next(iter(raw))}: custom functions load only from "
            f"the libs/ folder of a local workflow file, and {where} is not local"
        )
    libs = base_dir / "libs"
    if allow is not None:
        allow(path_uri(libs))
    return load_functions(raw, libs)
