"""Device names (spec §5.8): ``cpu``, ``gpu0``, ``nc1``, integers, ``*``, ``a;b`` lists."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from djl.errors import IllegalArgument


@dataclass(frozen=True, order=True)
class Device:
    device_type: str
    device_id: int

    @classmethod
    def parse(cls, text: str) -> Device:
        value = text.strip()
        if value == "":
            return cls("cpu", -1)
        if re.fullmatch(r"-?\d+", value):
            number = int(value)
            return cls("cpu", -1) if number < 0 else cls("gpu", number)
        m = re.fullmatch(r"([a-zA-Z]+)(\d*)", value)
        if not m:
            raise IllegalArgument(f"Failed to parse device name: {text}")
        kind = m.group(1).lower()
        if kind == "cpu":
            return cls("cpu", -1)
        return cls(kind, int(m.group(2)) if m.group(2) else 0)

    def __str__(self) -> str:
        return "cpu" if self.device_type == "cpu" else f"{self.device_type}{self.device_id}"


def gpu_count(visible: str | None = None) -> int:
    """GPUs the NVIDIA driver exposes, or those ``visible`` (ServerConfig's
    CUDA_VISIBLE_DEVICES) names; no torch import."""
    if visible is not None:
        return len([v for v in visible.split(",") if v.strip() and v.strip() != "-1"])
    gpus = Path("/proc/driver/nvidia/gpus")
    return len(list(gpus.iterdir())) if gpus.is_dir() else 0


def resolve_devices(load_on_devices: str, gpus: int | None = None, *,
                    visible_devices: str | None = None) -> list[Device]:
    """The devices a model loads on: ``*`` = every GPU, else CPU; or a ``;`` list."""
    spec = (load_on_devices or "*").strip()
    if spec == "*":
        count = gpu_count(visible_devices) if gpus is None else gpus
        return [Device("gpu", i) for i in range(count)] or [Device("cpu", -1)]
    devices: list[Device] = []
    for part in spec.split(";"):
        device = Device.parse(part)
        if device not in devices:
            devices.append(device)
    return devices
