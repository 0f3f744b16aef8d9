"""How long a certificate's renewal waits after failures: 1 h after the first, doubling to at most 32 h (cert-manager's
issuance backoff), reset by a success. Pure: the sweep, the Key Vault event path and the plan read the same rule.

And how long one open AppViewX renewal record waits between tries to complete it (15 min doubling to 24 h), and when
it is given up."""

from __future__ import annotations

from datetime import datetime, timedelta

FIRST_BACKOFF = timedelta(hours=1)
MAX_BACKOFF = timedelta(hours=32)
_MAX_DOUBLINGS = 5  # 1 h * 2**5 = 32 h: no larger power is ever needed (and none can overflow)


def renewal_backoff(consecutive_failures: int) -> timedelta:
    """The wait after `consecutive_failures` failed renewals in a row (none after none)."""
    if consecutive_failures <= 0:
        return timedelta(0)
    return min(FIRST_BACKOFF * 2 ** min(consecutive_failures - 1, _MAX_DOUBLINGS), MAX_BACKOFF)


def next_attempt_at(last_failure_at: datetime, consecutive_failures: int) -> datetime:
    """The earliest time the next renewal may be tried."""
    return last_failure_at + renewal_backoff(consecutive_failures)


# -- one open renewal record's tries (shared.appviewx.records) -------------------------------------------------------
FIRST_RECORD_RETRY = timedelta(minutes=15)
MAX_RECORD_RETRY = timedelta(hours=24)


def record_retry_at(failed_attempts: int, last_attempt: datetime) -> datetime:
    """After the n-th failed try, wait 15 min doubling per try, at most 24 h (cert-manager-style backoff)."""
    if failed_attempts <= 0:
        return last_attempt
    delay = FIRST_RECORD_RETRY * (2 ** min(failed_attempts - 1, 16))
    return last_attempt + min(delay, MAX_RECORD_RETRY)


def gives_up(created_at: datetime, now: datetime, max_days: float) -> bool:
    return now - created_at >= timedelta(days=max_days)
