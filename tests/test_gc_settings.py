"""The server process's GC settings (issue 10): gc_freeze and gc_thresholds."""

from __future__ import annotations

import gc

import pytest

from djl.app import settle_gc
from djl.config import ConfigError, ServerConfig, load_server_config


@pytest.fixture
def gc_state():
    thresholds = gc.get_threshold()
    yield
    gc.set_threshold(*thresholds)
    gc.unfreeze()


def test_settle_gc_freezes_what_start_up_left_and_sets_thresholds(gc_state):
    gc.unfreeze()
    settle_gc(ServerConfig(gc_thresholds="5000,20,30"))
    assert gc.get_threshold() == (5000, 20, 30)
    assert gc.get_freeze_count() > 1000


def test_gc_can_be_left_as_python_sets_it(gc_state):
    gc.unfreeze()
    before = gc.get_threshold()
    settle_gc(ServerConfig(gc_freeze=False, gc_thresholds=""))
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize("value", ["1,2,x", "1,2,3,4", "-1", ","])
def test_bad_gc_thresholds_are_refused_at_start_up(tmp_path, value):
    with pytest.raises(ConfigError, match="gc_thresholds"):
        load_server_config(env={"MODEL_SERVER_HOME": str(tmp_path)},
                           overrides={"gc_thresholds": value})
