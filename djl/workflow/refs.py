"""What a workflow file names: its models and adapters, as parsed values (a leaf module:
the parser, the graph and the built-in functions all read these)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from djl.config import RegisterParams


@dataclass(frozen=True)
class ModelRef:
    """One entry of ``models``: what the registry needs to register that model."""

    #: The key in ``models``: the model's id, its callee name in expressions.
    local_name: str
    #: The model URL, after template substitution.
    url: str
    version: str | None
    params: RegisterParams
    #: The object form's ``arguments`` map, values as strings.
    arguments: Mapping[str, str] = field(default_factory=dict)
    #: The object form's ``options`` map (like ``option.*``), values as strings.
    options: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AdapterRef:
    """One entry of ``configs.adapters`` (§7.5): an adapter to register with a model."""

    #: The key in ``configs.adapters``: the adapter's name, also sent as ``adapter=<name>``.
    name: str
    #: The local name of the model it adapts.
    model: str
    src: str
    #: Only the string-valued options, as Java keeps them.
    options: Mapping[str, str] = field(default_factory=dict)


__all__ = ["AdapterRef", "ModelRef"]
