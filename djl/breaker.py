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

from collections.abc import Callable

import trio

from djl.config import Rule, parse_duration, parse_rule
from djl.errors import Failure


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
