"""Placing a model's workers on Ray: the device value and what each worker asks for."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from djl.errors import RayPlacement

#: The ``load_on_devices`` / ``device`` value that places a model's workers on Ray.
RAY_DEVICE = "ray"
#: CPUs a worker's actor asks Ray for unless ``option.ray_num_cpus`` says otherwise: one
#: worker is one busy Python process.
RAY_NUM_CPUS = 1.0


@dataclass(frozen=True)
class RayResources:
    """What each Ray-placed worker asks its node for (``option.ray_*`` of the model).

    ``option.ray_num_cpus`` (default 1), ``option.ray_num_gpus`` (default 0) and
    ``option.ray_resources``, a JSON object of custom resources, ``{"node2": 1}``: the
    worker runs only on a node that has them (``ray start --resources``).
    """

    num_cpus: float = RAY_NUM_CPUS
    num_gpus: float = 0.0
    custom: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_options(cls, options: Mapping[str, str]) -> RayResources:
        """Raise RayPlacement (400) naming the option that is not a valid amount."""

        def amount(key: str, default: float) -> float:
            value = options.get(key)
            if value is None or str(value).strip() == "":
                return default
            try:
                number = float(value)
            except ValueError:
                number = -1.0
            if not math.isfinite(number) or number < 0:
                raise RayPlacement.bad_option(key, str(value), "a number >= 0")
            return number

        custom: dict[str, float] = {}
        text = options.get("ray_resources")
        if text is not None and str(text).strip():
            expected = 'a JSON object of resource amounts, e.g. {"node2": 1}'
            try:
                parsed = json.loads(text)
            except ValueError:
                raise RayPlacement.bad_option("ray_resources", str(text), expected) from None
            if not isinstance(parsed, dict):
                raise RayPlacement.bad_option("ray_resources", str(text), expected)
            for name, value in parsed.items():
                good = (isinstance(value, int | float) and not isinstance(value, bool)
                        and math.isfinite(value) and value >= 0)
                if not name or not good or name in ("CPU", "GPU"):
                    raise RayPlacement.bad_option("ray_resources", str(text), expected)
                custom[str(name)] = float(value)
        return cls(amount("ray_num_cpus", RAY_NUM_CPUS), amount("ray_num_gpus", 0.0), custom)

    def __str__(self) -> str:
        parts = {"CPU": self.num_cpus, "GPU": self.num_gpus, **self.custom}
        return json.dumps({k: v for k, v in parts.items() if v})
