"""The model status enum (spec §4.7), shared by the pools that set it and the HTTP layer
that shows it, so neither has to import the other."""

from __future__ import annotations

import enum


class ModelStatus(enum.Enum):
    PENDING = "PENDING"
    READY = "READY"
    FAILED = "FAILED"
