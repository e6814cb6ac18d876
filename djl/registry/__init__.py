"""The registry: endpoints → versions → workflows → models, and their worker pools.

Everything is a workflow (spec §0, §7.7): ``POST /models`` wraps one model in a
single-model workflow of the same name. Models with the same (id, version) share one
WorkerPool, reference-counted, released with the last workflow that uses it (§4.3).

Rooms, one job each, composed by ``ModelManager`` (``manager.py``):

* ``endpoints``: what is registered, found, listed and how healthy (synchronous).
* ``pools``: starting, sharing, counting and scaling worker pools.
* ``loading``: registration, loading and unregistering.
* ``dynamic``: loading a model on its first prediction (``model_url_pattern``).
* ``invocation``: predictions (call, infer, watch), observed for the breaker and metrics.

The manager's nursery lives as long as the app; each pool runs inside it and fails at
its own boundary.
"""

from djl.registry.endpoints import Endpoint, Endpoints, Model, Workflow
from djl.registry.invocation import Watch, watching
from djl.registry.manager import ModelManager

__all__ = ["Endpoint", "Endpoints", "Model", "ModelManager", "Watch", "Workflow", "watching"]
