"""The error-rate circuit breaker (spec §3.9): token buckets over inference failures that,
once one runs dry, latch ``/ping`` to 503 until the process restarts.

Three rules, each ``count[/ISO-8601 duration]`` (the window defaults to one minute):
``error_rate_wlm`` counts workload-manager failures (queue full, model not ready, worker
died), ``error_rate_server`` counts server errors (an Output whose code is ≥ 500 or 424, an
unexpected failure), ``error_rate_any`` counts both. A bucket holds ``count`` tokens and is
refilled to full only once whole windows have passed, so ``1/PT5M`` tolerates one error in
five minutes and trips on the second.

Which failure is which is decided by ``errors.failure_of`` / ``failure_of_code``; the
registry's ``FailureObserver`` hands each one to ``count`` here and to the metrics. Unset
rules cost nothing: a server without them never builds a bucket.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import trio

from djl.config import ERROR_RATE_WINDOW_S
from djl.errors import Failure

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


class TokenBucket:
    """``rule.count`` tokens, refilled to full once whole windows have elapsed."""

    __slots__ = ("clock", "rule", "tokens", "window_start")

    def __init__(self, rule: Rule, clock: Callable[[], float]) -> None:
        self.rule = rule
        self.clock = clock
        #: Tokens left in the current window; an event that finds none exceeds the rule.
        self.tokens = rule.count
        #: When the current window began (clock seconds), moved on by whole windows only.
        self.window_start = clock()

    def consume(self) -> bool:
        """Take a token; False when there was none left (the rule is exceeded)."""
        now = self.clock()
        windows = int((now - self.window_start) // self.rule.window_s)
        if windows > 0:
            self.window_start += windows * self.rule.window_s
            self.tokens = self.rule.count
        if self.tokens == 0:
            return False
        self.tokens -= 1
        return True


class ErrorRateBreaker:
    """The process-wide latch of spec §3.9. ``tripped`` never goes back to False."""

    def __init__(self, wlm: Rule | None = None, server: Rule | None = None,
                 any_error: Rule | None = None, *,
                 clock: Callable[[], float] = trio.current_time) -> None:
        self._wlm = TokenBucket(wlm, clock) if wlm else None
        self._server = TokenBucket(server, clock) if server else None
        self._any = TokenBucket(any_error, clock) if any_error else None
        #: False when no rule is set: then nothing is ever counted.
        self.active = bool(wlm or server or any_error)
        #: Set when a bucket ran dry; /ping answers 503 from then on.
        self.tripped = False

    @classmethod
    def from_config(cls, wlm: str, server: str, any_error: str, *,
                    clock: Callable[[], float] = trio.current_time) -> ErrorRateBreaker:
        return cls(parse_rule(wlm), parse_rule(server), parse_rule(any_error), clock=clock)

    def _count(self, specific: TokenBucket | None) -> None:
        # The specific rule first, then "any"; both are charged even once one is dry.
        exceeded = specific is not None and not specific.consume()
        if self._any is not None and not self._any.consume():
            exceeded = True
        if exceeded:
            self.tripped = True

    def count(self, kind: Failure) -> None:
        """One failed inference of ``kind``: its own rule, then ``error_rate_any``."""
        if self.active:
            self._count(self._wlm if kind is Failure.WLM else self._server)


__all__ = ["ErrorRateBreaker", "Rule", "TokenBucket", "parse_duration",
           "parse_rule"]
