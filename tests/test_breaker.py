"""The error-rate breaker (spec §3.9): rule syntax, token buckets, what counts."""

from __future__ import annotations

import pytest

from djl.breaker import ErrorRateBreaker, Rule, parse_duration, parse_rule
from djl.config import ConfigError, load_server_config
from djl.errors import Failure


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("text", "seconds"), [
    ("PT5M", 300), ("PT1H", 3600), ("P1D", 86400), ("PT0.5S", 0.5), ("pt2m30s", 150),
    ("P1DT1H", 90000), ("PT1,5S", 1.5),
])
def test_iso_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5M", "P", "PT", "P1DT", "PT-5M", "PT0S", "PT5X", ""])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_rules():
    assert parse_rule("") is None
    assert parse_rule("3") == Rule(3, 60.0)
    assert parse_rule("1/PT5M") == Rule(1, 300.0)
    for bad in ("0/PT1M", "x", "-1", "1/", "1/5M"):
        with pytest.raises(ValueError):
            parse_rule(bad)


def test_a_bad_rule_stops_start_up():
    with pytest.raises(ConfigError, match="error_rate_wlm"):
        load_server_config(env={}, overrides={"error_rate_wlm": "ten/PT1M"})


def test_any_rule_tolerates_count_errors_per_window_then_latches():
    clock = Clock()
    breaker = ErrorRateBreaker.from_config("", "", "2/PT1M", clock=clock)
    breaker.count(Failure.SERVER)
    clock.now = 30
    breaker.count(Failure.WLM)
    assert not breaker.tripped
    clock.now = 60  # a whole window passed: refilled
    breaker.count(Failure.SERVER)
    breaker.count(Failure.WLM)
    assert not breaker.tripped
    breaker.count(Failure.SERVER)
    assert breaker.tripped
    clock.now = 10_000
    assert breaker.tripped  # never reset (spec §3.9)


def test_refill_needs_a_whole_window():
    clock = Clock()
    breaker = ErrorRateBreaker(server=Rule(1, 60), clock=clock)
    clock.now = 59
    breaker.count(Failure.SERVER)
    clock.now = 61  # 2 s into the second window: the first window's token was refilled
    breaker.count(Failure.SERVER)
    assert not breaker.tripped
    clock.now = 119.9
    breaker.count(Failure.SERVER)
    assert breaker.tripped


def test_specific_rules_count_their_own_kind():
    clock = Clock()
    breaker = ErrorRateBreaker(wlm=Rule(1, 60), clock=clock)
    for _ in range(5):
        breaker.count(Failure.SERVER)
    assert not breaker.tripped
    breaker.count(Failure.WLM)
    breaker.count(Failure.WLM)
    assert breaker.tripped


def test_no_rules_nothing_counted():
    breaker = ErrorRateBreaker(clock=Clock())
    assert not breaker.active
    for _ in range(100):
        breaker.count(Failure.SERVER)
        breaker.count(Failure.WLM)
    assert not breaker.tripped
