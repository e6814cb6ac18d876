"""DJL's log level names (log4j's, spec §2.8 ``/server/logging``) as Python levels."""

from __future__ import annotations

import logging

_ALIASES = {"TRACE": "DEBUG", "WARN": "WARNING", "FATAL": "CRITICAL", "OFF": "CRITICAL"}


def python_level(name: str | None) -> int:
    """``trace``…``fatal``/``off``, any case; an unknown or absent name means INFO."""
    level = (name or "info").upper()
    value = logging.getLevelName(_ALIASES.get(level, level))
    return value if isinstance(value, int) else logging.INFO


__all__ = ["python_level"]
