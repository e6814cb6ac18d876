"""DJL's log level names (log4j's, spec §2.8 ``/server/logging``) as Python levels."""

from __future__ import annotations

import logging

_ALIASES = {"TRACE": "DEBUG", "WARN": "WARNING", "FATAL": "CRITICAL", "OFF": "CRITICAL"}


def python_level(name: str | None) -> int:
    """``trace``…``fatal``/``off``, any case; an unknown or absent name means INFO."""
    level = (name or "info").upper()
    value = logging.getLevelName(_ALIASES.get(level, level))
    return value if isinstance(value, int) else logging.INFO


#: The names /server/logging takes, most verbose first (TRACE and DEBUG are one level here).
LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "OFF")
_DJL_NAMES = {"WARNING": "WARN", "CRITICAL": "FATAL"}


def djl_level(level: int) -> str:
    """A Python level as /server/logging names it (INFO, WARN, FATAL, ...)."""
    name = logging.getLevelName(level)
    return _DJL_NAMES.get(name, name)


__all__ = ["LEVELS", "djl_level", "python_level"]
