"""What ``/ping`` answers with (spec §3.2): the status code, from the models' health and
the error-rate breaker. Which model counts as healthy is the registry's and the pool's
business; this is only the policy that turns those facts into one code."""

from __future__ import annotations


def ping_status(*, failed: bool, pending: bool, tripped: bool,
                allow_multi_status: bool) -> int:
    """503 once the breaker tripped (§3.9), else 500 if any model failed, else 207 while a
    model is pending and ``allow_multi_status`` is set, else 200."""
    if tripped:
        return 503
    if failed:
        return 500
    if pending and allow_multi_status:
        return 207
    return 200


__all__ = ["ping_status"]
