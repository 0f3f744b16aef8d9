"""The one backoff rule after a failed renewal of a version (shared/appviewx/backoff.py), shared with the sweep."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.appviewx.backoff import next_attempt_at, renewal_backoff


@pytest.mark.parametrize(
    ("failures", "hours"), [(-1, 0), (0, 0), (1, 1), (2, 2), (3, 4), (4, 8), (5, 16), (6, 32), (7, 32), (1000, 32)]
)
def test_backoff_doubles_from_one_hour_to_at_most_32_hours(failures: int, hours: int) -> None:
    assert renewal_backoff(failures) == timedelta(hours=hours)


def test_next_attempt_is_the_last_failure_plus_its_backoff() -> None:
    failed = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)
    assert next_attempt_at(failed, 0) == failed
    assert next_attempt_at(failed, 3) == failed + timedelta(hours=4)
    assert next_attempt_at(failed, 10**9) == failed + timedelta(hours=32)
