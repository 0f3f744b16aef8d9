"""The one backoff rule after a failed renewal of a certificate version (the Key Vault event path and the daily
sweep): 1 h after the first failure, doubling per further failure, at most 32 h; no wait before any failure. Pure.

AVX's transient refusals (417 OPEN_WORK_ORDERS_FOUND: "trigger again once the work order completes") make a failed
version worth another try; the doubling keeps a certificate AVX keeps refusing from being sent every event or sweep.
"""

from __future__ import annotations

from datetime import datetime, timedelta

FIRST_WAIT = timedelta(hours=1)
MAX_WAIT = timedelta(hours=32)
_MAX_DOUBLINGS = 5  # 1 h * 2**5 = 32 h


def renewal_backoff(consecutive_failures: int) -> timedelta:
    """How long to wait after the n-th consecutive failed renewal: 0 failures → none; 1 h, 2 h, 4 h … 32 h."""
    if consecutive_failures <= 0:
        return timedelta(0)
    return min(FIRST_WAIT * (2 ** min(consecutive_failures - 1, _MAX_DOUBLINGS)), MAX_WAIT)


def next_attempt_at(last_failure_at: datetime, consecutive_failures: int) -> datetime:
    """When a version may be renewed again after `consecutive_failures` failures, the last at `last_failure_at`."""
    return last_failure_at + renewal_backoff(consecutive_failures)
