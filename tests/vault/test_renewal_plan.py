"""The daily sweep's pure rules: the renewal time by lifetime (cert-manager style), the jitter, the expiry ladder, the
backoff after failures, and what the plan says of each kind of certificate. No I/O: a fake clock is a parameter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.appviewx.backoff import MAX_BACKOFF, next_attempt_at, renewal_backoff
from shared.vault.event_decisions import Owner
from shared.vault.renewal_plan import (
    EXPIRED_STEP,
    MAX_JITTER,
    CertificateFacts,
    PlanAction,
    RenewalFailures,
    RenewalWindow,
    due_at,
    jitter,
    ladder_step,
    plan_certificate,
)

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
DEFAULT = RenewalWindow()


def facts(days_total: float, days_left: float, owner: Owner = Owner.APPVIEWX, **kw: object) -> CertificateFacts:
    expires = NOW + timedelta(days=days_left)
    values: dict[str, object] = {
        "name": "www-contoso-com",
        "version": "v1",
        "not_before": expires - timedelta(days=days_total),
        "expires_on": expires,
        "enabled": True,
        "owner": owner,
    }
    values.update(kw)
    return CertificateFacts(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("total", "left", "action"),
    [
        (90, 20, PlanAction.RENEW),  # the example: 20 of 90 days left
        (90, 80, PlanAction.WAIT),  # 80 of 90 days left
        (6, 2, PlanAction.RENEW),  # a 6-day certificate with 2 days left (half its lifetime rule)
        (6, 4, PlanAction.WAIT),
        (90, 31, PlanAction.WAIT),  # a third of 90 is 30 days (jitter at most 24 h)
        (90, 28.5, PlanAction.RENEW),
        (365, 100, PlanAction.RENEW),  # a third of a year is 121 days
        (90, -1, PlanAction.RENEW),  # already expired and still ours: renew
    ],
)
def test_due_by_lifetime(total: float, left: float, action: PlanAction) -> None:
    assert plan_certificate(facts(total, left), None, DEFAULT, NOW).action is action


def test_renew_before_days_makes_a_certificate_due_earlier_never_later() -> None:
    window = RenewalWindow(before_days=45)
    assert plan_certificate(facts(90, 40), None, window, NOW).action is PlanAction.RENEW
    # The fraction still applies when it comes first (a 365-day certificate with 100 days left).
    assert plan_certificate(facts(365, 100), None, window, NOW).action is PlanAction.RENEW


def test_short_lifetimes_use_at_least_half() -> None:
    # A fraction set lower than 1/2 does not apply to a 6-day certificate; a larger one still does.
    assert plan_certificate(facts(6, 2.9), None, RenewalWindow(0.1), NOW).action is PlanAction.RENEW
    assert plan_certificate(facts(6, 4.5), None, RenewalWindow(0.8), NOW).action is PlanAction.RENEW


def test_unknown_lifetime_falls_back_to_thirty_days() -> None:
    assert plan_certificate(facts(90, 29, not_before=None), None, DEFAULT, NOW).action is PlanAction.RENEW
    assert plan_certificate(facts(90, 31.5, not_before=None), None, DEFAULT, NOW).action is PlanAction.WAIT


@pytest.mark.parametrize(
    ("owner", "action"),
    [(Owner.APPVIEWX, PlanAction.RENEW), (Owner.RCL, PlanAction.LEFT_TO_RCL), (Owner.UNMANAGED, PlanAction.REPORT)],
)
def test_what_a_due_certificate_gets_by_owner(owner: Owner, action: PlanAction) -> None:
    planned = plan_certificate(facts(90, 10, owner), None, DEFAULT, NOW)
    assert planned.action is action
    assert planned.reason


def test_an_unmanaged_certificate_is_always_left_to_the_ladder() -> None:
    assert plan_certificate(facts(90, 80, Owner.UNMANAGED), None, DEFAULT, NOW).action is PlanAction.REPORT


def test_disabled_and_expiry_unknown_are_skipped() -> None:
    assert plan_certificate(facts(90, 10, enabled=False), None, DEFAULT, NOW).action is PlanAction.SKIP
    assert plan_certificate(facts(90, 10, expires_on=None), None, DEFAULT, NOW).action is PlanAction.SKIP


def test_backoff_holds_a_due_certificate_until_it_ends_and_force_skips_it() -> None:
    failures = RenewalFailures(count=3, last_failure_at=NOW - timedelta(hours=3), last_reason="OPEN_WORK_ORDERS_FOUND")
    planned = plan_certificate(facts(90, 10), failures, DEFAULT, NOW)
    assert planned.action is PlanAction.BACKOFF
    assert "OPEN_WORK_ORDERS_FOUND" in planned.reason and "2026-12-05T13:00:00Z" in planned.reason
    assert plan_certificate(facts(90, 10), failures, DEFAULT, NOW, force=True).action is PlanAction.RENEW
    assert plan_certificate(facts(90, 10), failures, DEFAULT, NOW + timedelta(hours=1)).action is PlanAction.RENEW
    assert planned.to_json(NOW)["retryAt"] == "2026-12-05T13:00:00Z"


def test_backoff_doubles_from_one_hour_to_thirty_two() -> None:
    assert [renewal_backoff(n) / timedelta(hours=1) for n in range(0, 9)] == [0, 1, 2, 4, 8, 16, 32, 32, 32]
    assert renewal_backoff(10**9) == MAX_BACKOFF  # no overflow however many failures
    assert next_attempt_at(NOW, 2) == NOW + timedelta(hours=2)


@pytest.mark.parametrize(
    ("days_left", "step"),
    [(45, None), (30.5, None), (30, 30), (20, 30), (14, 14), (8, 14), (6, 7), (3, 3), (2.5, 3), (1, 1), (0.2, 1)],
)
def test_ladder_step(days_left: float, step: int | None) -> None:
    assert ladder_step(NOW + timedelta(days=days_left), NOW) == step


def test_ladder_expired_and_unknown() -> None:
    assert ladder_step(NOW, NOW) == EXPIRED_STEP
    assert ladder_step(NOW - timedelta(days=3), NOW) == EXPIRED_STEP
    assert ladder_step(None, NOW) is None


def test_jitter_is_stable_per_name_and_spreads_names() -> None:
    lifetime = timedelta(days=90)
    assert jitter("a", lifetime) == jitter("A", lifetime)
    draws = {jitter(f"cert-{i}", lifetime) for i in range(50)}
    assert len(draws) == 50
    assert all(timedelta(0) <= d < MAX_JITTER for d in draws)


@given(
    total=st.floats(min_value=0.01, max_value=3650),
    left_share=st.floats(min_value=-1, max_value=1),
    fraction=st.floats(min_value=0.01, max_value=0.99),
    name=st.text(alphabet="abcdefghijklmnopqrstuvwxyz-0123456789", min_size=1, max_size=20),
)
def test_due_time_is_never_after_the_rule_and_never_more_than_the_jitter_before(
    total: float, left_share: float, fraction: float, name: str
) -> None:
    lifetime = timedelta(days=total)
    expires = NOW + lifetime * left_share
    due = due_at(name, expires - lifetime, expires, RenewalWindow(fraction))
    assert due is not None
    share = max(fraction, 0.5) if lifetime < timedelta(days=10) else fraction
    rule = expires - lifetime * share
    assert rule - min(MAX_JITTER, lifetime * 0.05) <= due <= rule
    assert due < expires


@pytest.mark.parametrize("days_total", [6, 14, 30])
def test_renew_before_days_longer_than_the_lifetime_does_not_make_a_fresh_certificate_due(days_total: int) -> None:
    """Review: RENEW_BEFORE_DAYS=30 with a 6-day (or 30-day) certificate would make every new version due the day it
    is issued: the sweep would renew it again each day. Like cert-manager (a renewBefore not shorter than the
    duration falls back to the default), it then counts only when shorter than the lifetime."""
    window = RenewalWindow(before_days=30)
    fresh = facts(days_total, days_total - 0.5)
    assert plan_certificate(fresh, None, window, NOW).action is PlanAction.WAIT
    assert plan_certificate(facts(days_total, 1), None, window, NOW).action is PlanAction.RENEW
    # A lifetime longer than RENEW_BEFORE_DAYS keeps it: a 90-day certificate is due with 30 days left.
    assert plan_certificate(facts(90, 29), None, window, NOW).action is PlanAction.RENEW


def test_failures_end_when_a_renewal_landed_after_the_last_of_them() -> None:
    from shared.vault.renewal_plan import RenewalFailures, failures_since

    failed_at = datetime(2026, 12, 1, 12, tzinfo=UTC)
    failures = RenewalFailures(3, failed_at, "OPEN_WORK_ORDERS_FOUND")
    assert failures_since(failures, None) is failures
    assert failures_since(failures, failed_at - timedelta(minutes=1)) is failures  # renewed before: still counts
    assert failures_since(failures, failed_at) is failures
    assert failures_since(failures, failed_at + timedelta(seconds=1)) is None
    assert failures_since(None, failed_at) is None
    naive = datetime(2026, 12, 1, 13)  # RCL's dates come without a zone: taken as UTC
    assert failures_since(failures, naive) is None
