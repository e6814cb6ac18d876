"""Workflow templates (spec §7.6): named workflows that ``POST /workflows?template=`` expands.

The query's single-valued parameters are the replacements. Built-in templates:

``adapter`` (parameters ``adapter``, ``url``, ``model``)
    Exactly the spec's: a workflow named ``{adapter}``, version 0.1, with model ``m`` =
    ``{model}``, one adapter ``{adapter}`` (src ``{url}``) of ``m``, and
    ``out = ["adapter", "{adapter}", "in"]``.
``ensemble`` (parameters ``name``, ``urls``; optional ``version``)
    ``urls`` is a comma-separated list of classification model URLs; every model gets the
    request and ``out`` is the ``ensemble`` (mean probability per class) of their answers.
``chain`` (parameters ``name``, ``urls``; optional ``version``)
    ``urls`` is a comma-separated list of model URLs run as a pipeline: the first gets the
    request, each next one the previous one's Output (content and properties).

``ensemble`` and ``chain`` name their models ``<name>_m1``, ``<name>_m2``, ... rather than
``m1``..., and give them the workflow's version: models are shared across workflows by
local name and version (§4.3), so two ensembles both calling theirs ``m1`` (or two
versions of one chain) would share one worker pool whatever their URLs.

Placeholders in text templates are replaced by JSON-escaped values (they sit inside JSON
strings, so a value with a quote cannot change the workflow's structure); a placeholder
with no value is a 400 naming it. Plugins may add templates with :func:`register_template`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from djl.errors import IllegalArgument
from djl.workflow.spec import parse_workflow, substitute

if TYPE_CHECKING:
    from djl.workflow.spec import WorkflowSpec

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class _Template:
    name: str
    #: Parameters that must have a value.
    required: tuple[str, ...]
    #: Renders the workflow's JSON text from checked replacements.
    render: Callable[[Mapping[str, str]], str]


_TEMPLATES: dict[str, _Template] = {}


def register_template(
    name: str,
    text: str | None = None,
    *,
    render: Callable[[Mapping[str, str]], str] | None = None,
    required: tuple[str, ...] = (),
) -> None:
    """Add (or replace) a template: JSON ``text`` with ``{key}`` placeholders inside its
    strings (every placeholder is required), or a ``render(replacements) -> JSON text``
    function with its ``required`` parameters."""
    if (text is None) == (render is None):
        raise ValueError("give exactly one of text and render")
    if text is not None:
        placeholders = tuple(dict.fromkeys(_PLACEHOLDER.findall(text)))
        required = tuple(p for p in placeholders if p != "model_dir")

        def fill(values: Mapping[str, str], text: str = text) -> str:
            return substitute(text, {k: json.dumps(str(v))[1:-1] for k, v in values.items()})

        render = fill
    assert render is not None
    _TEMPLATES[name] = _Template(name, required, render)


def template_names() -> list[str]:
    """The registered template names, sorted."""
    return sorted(_TEMPLATES)


def render_template(name: str, replacements: Mapping[str, str]) -> str:
    """The JSON text of template ``name`` with ``replacements`` applied.

    IllegalArgument (400): ``"The workflow template <name> could not be found"`` for an
    unknown name; a message naming the missing parameters when some are absent.
    """
    template = _TEMPLATES.get(name)
    if template is None:
        raise IllegalArgument(f"The workflow template {name} could not be found")
    missing = [p for p in template.required if not replacements.get(p)]
    if missing:
        raise IllegalArgument(
            f"The workflow template {name} requires the parameter(s): {', '.join(missing)}"
        )
    return template.render(replacements)


def load_template(name: str, replacements: Mapping[str, str]) -> WorkflowSpec:
    """Render template ``name`` and parse it as a workflow (its base URI is
    ``template:/<name>.json``, so it cannot load custom functions)."""
    text = render_template(name, replacements)
    return parse_workflow(text, "json", f"template:/{name}.json")


# -- built-ins ------------------------------------------------------------------------------

_ADAPTER = """{
  "name": "{adapter}",
  "version": "0.1",
  "models": {"m": "{model}"},
  "configs": {"adapters": {"{adapter}": {"model": "m", "src": "{url}"}}},
  "workflow": {"out": ["adapter", "{adapter}", "in"]}
}"""


def _models_of(values: Mapping[str, str]) -> dict[str, object]:
    urls = [u.strip() for u in values["urls"].split(",") if u.strip()]
    if not urls:
        raise IllegalArgument("The parameter urls must list at least one model URL")
    version = values.get("version")
    if not version:
        return {f"{values['name']}_m{i}": url for i, url in enumerate(urls, 1)}
    # The models take the workflow's version: chain v1 and chain v2 of other URLs must not
    # share <name>_m1's pool (models are the same model by id *and* version).
    return {f"{values['name']}_m{i}": {"modelUrl": url, "version": version}
            for i, url in enumerate(urls, 1)}


def _workflow(values: Mapping[str, str], models: dict[str, object], out: list[object]) -> str:
    workflow: dict[str, object] = {"name": values["name"]}
    if values.get("version"):
        workflow["version"] = values["version"]
    workflow["models"] = models
    workflow["workflow"] = {"out": out}
    return json.dumps(workflow, indent=2)


def _render_ensemble(values: Mapping[str, str]) -> str:
    models = _models_of(values)
    return _workflow(values, models, ["ensemble", ["functionsApply", list(models), "in"]])


def _render_chain(values: Mapping[str, str]) -> str:
    models = _models_of(values)
    out: list[object] | str = "in"
    for name in models:
        out = [name, out]
    assert isinstance(out, list)
    return _workflow(values, models, out)


register_template("adapter", _ADAPTER)
register_template("ensemble", render=_render_ensemble, required=("name", "urls"))
register_template("chain", render=_render_chain, required=("name", "urls"))
