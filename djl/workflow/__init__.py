"""Workflows (spec §7): graphs of models and functions behind one endpoint.

``files`` finds a workflow's file, ``spec`` reads and validates definitions, ``program``
compiles their graph and ``graph`` evaluates it per request,
``functions`` holds the built-ins and the custom-function contract, ``templates`` the
named templates of ``POST /workflows?template=``. The registry wires these to worker pools
and to the HTTP API; nothing here knows about either.
"""

from djl.workflow.files import workflow_file_of
from djl.workflow.graph import ModelCall, execute
from djl.workflow.spec import (
    AdapterRef,
    ModelRef,
    WorkflowSpec,
    load_workflow,
    parse_workflow,
    single_model_workflow,
)
from djl.workflow.templates import load_template, render_template, template_names

__all__ = [
    "AdapterRef",
    "ModelCall",
    "ModelRef",
    "WorkflowSpec",
    "execute",
    "load_template",
    "load_workflow",
    "parse_workflow",
    "render_template",
    "single_model_workflow",
    "template_names",
    "workflow_file_of",
]
