"""DJL's level names as Python logging levels (spec §2.8)."""

import logging

import pytest

from djl.log_levels import python_level


@pytest.mark.parametrize(("name", "level"), [
    ("trace", logging.DEBUG), ("DEBUG", logging.DEBUG), ("info", logging.INFO),
    ("Warn", logging.WARNING), ("error", logging.ERROR), ("fatal", logging.CRITICAL),
    ("off", logging.CRITICAL), (None, logging.INFO), ("nonsense", logging.INFO),
])
def test_levels(name, level):
    assert python_level(name) == level
