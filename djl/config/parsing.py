"""How a setting's text reads: Java ints and booleans, ISO-8601 durations, error-rate
rules. Shared by the server and model configuration and by the request parameters."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from djl.config.constants import ERROR_RATE_WINDOW_S
from djl.errors import IllegalArgument

_JAVA_INT = re.compile(r"[+-]?[0-9]+")


def parse_java_int(value: Any) -> int:
    """Java ``Integer.parseInt``: optional sign and ASCII digits within 32 bits, nothing else
    (Python's int() also takes ``_``, blanks and other digits, and truncates floats and
    bools); ValueError otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _JAVA_INT.fullmatch(value):
        number = int(value)
    else:
        raise ValueError(value)
    if not -(2**31) <= number < 2**31:
        raise ValueError(value)
    return number


def parse_int(value: Any, default: int | None = None) -> int | None:
    """A request parameter or model setting: ``default`` when absent (None or ""), else
    read as ``parse_java_int`` reads it; IllegalArgument (NumberFormatException, 400) if it
    is not a number."""
    if value is None or value == "":
        return default
    try:
        return parse_java_int(value)
    except ValueError:
        raise IllegalArgument.number(str(value)) from None


def parse_java_bool(value: str | None, default: bool = False) -> bool:
    """Java ``Boolean.parseBoolean`` with a default for an absent value (None): true only
    for ``true`` in any case; any other value, the empty one included, is false (spec
    §2.2 ``synchronous``, §3.8 ``x-synchronous``). Every boolean parameter reads this way."""
    if value is None:
        return default
    return value.lower() == "true"


_DURATION = re.compile(
    r"P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:[.,]\d{1,9})?)S)?)?",
    re.IGNORECASE,
)


def parse_duration(text: str) -> float:
    """An ISO-8601 duration as ``java.time.Duration`` reads it (``PnDTnHnMn.nS``), in
    seconds. Raises ValueError for anything else, or for a duration that is not positive."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or text.strip().upper() in ("P", "PT") or text.strip()[-1:] in "Tt":
        raise ValueError(f"not an ISO-8601 duration (e.g. PT5M): {text!r}")
    days, hours, minutes, seconds = (match.group(k) for k in "dhms")
    total = (int(days or 0) * 86400 + int(hours or 0) * 3600 + int(minutes or 0) * 60
             + float((seconds or "0").replace(",", ".")))
    if total <= 0:
        raise ValueError(f"the duration must be positive: {text!r}")
    return total


@dataclass(frozen=True)
class Rule:
    """``count`` errors tolerated per ``window_s``."""

    count: int
    window_s: float


def parse_rule(text: str) -> Rule | None:
    """``count[/duration]``, e.g. ``10/PT1M``; empty means no rule. ValueError otherwise."""
    text = text.strip()
    if not text:
        return None
    count_text, sep, duration = text.partition("/")
    count_text = count_text.strip()
    if not count_text.isascii() or not count_text.isdigit() or int(count_text) < 1:
        raise ValueError(f"the count must be a positive integer: {text!r}")
    return Rule(int(count_text), parse_duration(duration) if sep else ERROR_RATE_WINDOW_S)
