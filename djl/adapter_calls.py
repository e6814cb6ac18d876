"""What the server and a worker say to each other about LoRA adapters (spec §2.10). Shared
by both ends, like djl/rolling.py; imports nothing of djl.

Registering, updating and unregistering are jobs whose ``handler`` property names the
operation, with properties ``name``, ``alias`` and ``src`` and one content item per option
(``preload``, ``pin``, ...): DJL's contract, so a model.py defining these functions gets the
same calls. The text-generation engine answers them itself (djl/runtime/generation/).
An inference job that selected an adapter by query or header carries its name in ``ADAPTER``.
"""

from __future__ import annotations

REGISTER = "register_adapter"
UPDATE = "update_adapter"
UNREGISTER = "unregister_adapter"
HANDLERS = frozenset((REGISTER, UPDATE, UNREGISTER))

#: Request property: the adapter an inference job selected ("": the base model).
ADAPTER = "x-djl-adapter"
#: Request property set on the jobs that bring a new worker every registered adapter
#: before it serves (its answer >= 300 kills that worker).
REPLAY = "x-djl-adapter-replay"


def flag(value: str | None, default: bool) -> bool:
    """A string boolean option (``preload``, ``pin``): Java's Boolean.parseBoolean."""
    if value is None or value == "":
        return default
    return value.strip().lower() == "true"
