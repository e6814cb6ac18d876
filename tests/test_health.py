"""The /ping status policy (spec §3.2, §3.9)."""

import pytest

from djl.health import ping_status


@pytest.mark.parametrize(("failed", "pending", "tripped", "multi", "status"), [
    (False, False, False, False, 200),
    (False, True, False, False, 200),
    (False, True, False, True, 207),
    (True, True, False, True, 500),
    (True, False, True, False, 503),  # the breaker beats everything
    (False, False, True, True, 503),
])
def test_ping_status(failed, pending, tripped, multi, status):
    assert ping_status(failed=failed, pending=pending, tripped=tripped,
                       allow_multi_status=multi) == status
