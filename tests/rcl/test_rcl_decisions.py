"""The pure decisions of the nightly RCL path, with example and property-based (hypothesis) tests over dates."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from shared.rcl.client import CertificateResponse
from shared.rcl.decisions import (
    CERTIFICATE_GONE,
    EXPIRY_MOVE_TOLERANCE,
    NOT_RENEWED,
    CertificateIndex,
    Outcome,
    classify,
    days_left,
    is_installed,
    is_renewed,
    near_expiry,
)
from shared.rcl.scheduled import ScheduledRenewal, night_of, record_key, scheduled_from, without_duplicates
from shared.rcl.summaries import RenewalRunSummary, VerifySummary

NOW = datetime(2025, 3, 10, 2, 30, tzinfo=UTC)
GRACE = timedelta(hours=24)

moments = st.datetimes(min_value=datetime(2015, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC))
offsets = st.timedeltas(min_value=timedelta(days=-400), max_value=timedelta(days=400))
graces = st.timedeltas(min_value=timedelta(minutes=1), max_value=timedelta(days=14))


def cert(
    name: str = "a.contoso.com",
    *,
    id: int | None = 1,  # noqa: A002 - RCL's field name
    expiry: datetime | None = None,
    issued: datetime | None = None,
    installed_at: datetime | None = None,
    target: str | None = "Azure DNS",
) -> CertificateResponse:
    return CertificateResponse(
        id=id,
        name=name,
        issue_date=issued,
        expiry_date=expiry,
        remote_create_date=installed_at,
        target=target,
        renewal="Automatic",
    )


def record(
    *,
    expiry: datetime | None,
    scheduled_at: datetime = NOW - timedelta(hours=1),
    id: int | None = 1,  # noqa: A002
) -> ScheduledRenewal:
    return scheduled_from(cert(id=id, expiry=expiry), scheduled_at, "run-1")


# -- examples ---------------------------------------------------------------------------------------------------


def test_renewed_and_installed() -> None:
    old = NOW + timedelta(days=5)
    new = cert(expiry=NOW + timedelta(days=90), issued=NOW, installed_at=NOW + timedelta(minutes=5))
    verdict = classify(record(expiry=old), new, NOW, GRACE)
    assert (verdict.outcome, verdict.installed, verdict.new_expiry) == (Outcome.RENEWED, True, new.expiry_date)
    assert verdict.closes


def test_renewed_but_not_yet_installed() -> None:
    new = cert(expiry=NOW + timedelta(days=90), issued=NOW, installed_at=None)
    verdict = classify(record(expiry=NOW + timedelta(days=5)), new, NOW, GRACE)
    # Renewed, but the deployed certificate is still the old one: the record stays open.
    assert (verdict.outcome, verdict.installed, verdict.closes) == (Outcome.NOT_INSTALLED, False, False)


def test_an_install_date_of_the_previous_certificate_does_not_count() -> None:
    new = cert(expiry=NOW + timedelta(days=90), issued=NOW, installed_at=NOW - timedelta(days=80))
    assert not is_installed(new)


def test_pending_within_grace_then_failed() -> None:
    old = NOW + timedelta(days=5)
    current = cert(expiry=old)
    scheduled_at = NOW - timedelta(hours=3)
    pending = classify(record(expiry=old, scheduled_at=scheduled_at), current, NOW, GRACE)
    assert pending.outcome is Outcome.PENDING and not pending.closes
    failed = classify(record(expiry=old, scheduled_at=scheduled_at), current, NOW + timedelta(hours=22), GRACE)
    assert (failed.outcome, failed.reason) == (Outcome.FAILED, NOT_RENEWED)
    assert "a.contoso.com" in (failed.message or "") and "24 h" in (failed.message or "")


def test_gone_from_the_list_fails_at_once() -> None:
    verdict = classify(record(expiry=NOW), None, NOW, GRACE)
    assert (verdict.outcome, verdict.reason) == (Outcome.FAILED, CERTIFICATE_GONE)


def test_without_a_recorded_expiry_the_issue_date_decides() -> None:
    scheduled_at = NOW - timedelta(hours=2)
    rec = record(expiry=None, scheduled_at=scheduled_at)
    assert is_renewed(rec, cert(expiry=NOW + timedelta(days=90), issued=NOW - timedelta(hours=1)))
    assert not is_renewed(rec, cert(expiry=NOW + timedelta(days=3), issued=NOW - timedelta(days=87)))
    assert not is_renewed(rec, cert(expiry=None, issued=None))


def test_rounding_of_the_expiry_is_not_a_renewal() -> None:
    old = NOW + timedelta(days=5)
    assert not is_renewed(record(expiry=old), cert(expiry=old + timedelta(microseconds=1)))


def test_index_finds_by_id_then_by_unambiguous_name() -> None:
    a = cert("a.contoso.com", id=1)
    b = cert("B.contoso.com", id=2)
    b_twin = cert("b.contoso.com", id=3, target="Azure Key Vault")
    index = CertificateIndex.of([a, b, b_twin])
    assert index.find(record(expiry=None, id=1)) is a
    # Re-created under a new id: found by name when the name (and target) are unambiguous.
    moved = scheduled_from(cert("b.contoso.com", id=99, target="Azure DNS"), NOW, None)
    assert index.find(moved) is b
    # RCL keeps names as given: the exact name wins; only a case-insensitive match that is ambiguous finds nothing.
    exact = scheduled_from(cert("b.contoso.com", id=None, target=None), NOW, None)
    assert index.find(exact) is b_twin
    ambiguous = scheduled_from(cert("B.CONTOSO.COM", id=None, target=None), NOW, None)
    assert index.find(ambiguous) is None


def test_record_keys_are_per_night_and_safe() -> None:
    assert record_key(NOW, cert(id=158)) == "20250310-id-158"
    assert record_key(NOW, cert("www.contoso.com", id=None)) == "20250310-name-www.contoso.com"  # kept as is
    # A name with characters a RowKey forbids is made safe, plus a digest of the original: names differing only
    # there (or beyond the length limit) get distinct keys, or one night's batch would hold a key twice.
    weird = record_key(NOW, cert("we/ird#name?.com", id=None))
    assert weird.startswith("20250310-name-we_ird_name_.com~") and not re.search(r"[/\\#?\x00-\x1f]", weird)
    others = ["we_ird_name_.com", "we#ird/name?.com", "we\\ird\x01name\x7f.com", "we_ird_name_.com~" + "0" * 32]
    keys = {weird, *(record_key(NOW, cert(name, id=None)) for name in others)}
    assert len(keys) == 1 + len(others)
    long_names = ["x" * 600 + "a", "x" * 600 + "b"]
    long_keys = {record_key(NOW, cert(name, id=None)) for name in long_names}
    assert len(long_keys) == 2 and all(len(key) <= 512 for key in long_keys)
    assert night_of(datetime(2025, 3, 10, 23, 59, tzinfo=UTC)) == "20250310"
    # A naive moment is UTC (as RCL's dates are).
    assert night_of(datetime(2025, 3, 10, 23, 59)) == "20250310"


@given(st.text(max_size=700), st.text(max_size=700))
def test_different_names_never_share_a_record_key(first: str, second: str) -> None:
    if first != second:
        assert record_key(NOW, cert(first, id=None)) != record_key(NOW, cert(second, id=None))


def test_without_duplicates_given_the_night_drops_a_repeat_of_the_stored_key() -> None:
    names = ["a/b.contoso.com", "a#b.contoso.com", "a/b.contoso.com", "other.contoso.com"]
    unique, repeated = without_duplicates([cert(n, id=None) for n in names], NOW)
    assert [c.name for c in unique] == ["a/b.contoso.com", "a#b.contoso.com", "other.contoso.com"]
    assert [c.name for c in repeated] == ["a/b.contoso.com"]
    assert len({record_key(NOW, c) for c in unique}) == len(unique)


def test_near_expiry_includes_expired_and_sorts_soonest_first() -> None:
    certificates = [
        cert("later.com", expiry=NOW + timedelta(days=20)),
        cert("soon.com", expiry=NOW + timedelta(days=3, hours=12)),
        cert("expired.com", expiry=NOW - timedelta(hours=1)),
        cert("edge.com", expiry=NOW + timedelta(days=14)),
        cert("unknown.com", expiry=None),
    ]
    found = near_expiry(certificates, NOW, 14)
    assert [(n.certificate.name, n.days_left) for n in found] == [
        ("expired.com", -1),
        ("soon.com", 3),
        ("edge.com", 14),
    ]


def test_summaries() -> None:
    assert "nothing was due" in RenewalRunSummary(()).line()
    line = RenewalRunSummary(tuple(f"c{i}.com" for i in range(25)), late=True).line()
    assert "(run was late)" in line and "25 certificate(s)" in line and "and 5 more" in line
    renewed = classify(
        record(expiry=NOW), cert(expiry=NOW + timedelta(days=90), issued=NOW, installed_at=NOW), NOW, GRACE
    )
    pending = classify(record(expiry=NOW), cert(expiry=NOW), NOW, GRACE)
    summary = VerifySummary.of([renewed, pending], near_expiry([cert(expiry=NOW)], NOW, 14), 1, 14)
    assert summary.line().startswith(
        "RCL check of 1 listed certificate(s): 1 renewed (1 installed), 1 pending, 0 failed"
    )
    assert "1 expire within 14 days: a.contoso.com" in summary.line()


# -- properties over dates --------------------------------------------------------------------------------------


@given(old_expiry=moments, move=offsets, scheduled_at=moments, now=moments, grace=graces)
def test_a_moved_expiry_is_renewed_whenever_it_is_checked(
    old_expiry: datetime, move: timedelta, scheduled_at: datetime, now: datetime, grace: timedelta
) -> None:
    verdict = classify(record(expiry=old_expiry, scheduled_at=scheduled_at), cert(expiry=old_expiry + move), now, grace)
    if move > EXPIRY_MOVE_TOLERANCE:
        assert verdict.outcome in (Outcome.RENEWED, Outcome.NOT_INSTALLED) and verdict.new_expiry == old_expiry + move
    elif move < -EXPIRY_MOVE_TOLERANCE:
        # An expiry earlier than recorded is flagged at once, never taken for "not renewed yet".
        assert (verdict.outcome, verdict.reason) == (Outcome.FAILED, "RCL_EXPIRY_EARLIER")
    else:
        assert verdict.outcome in (Outcome.PENDING, Outcome.FAILED)
        assert verdict.reason in (None, NOT_RENEWED)


@given(expiry=moments, scheduled_at=moments, age=offsets, grace=graces)
def test_not_renewed_is_pending_exactly_within_grace(
    expiry: datetime, scheduled_at: datetime, age: timedelta, grace: timedelta
) -> None:
    now = scheduled_at + age
    verdict = classify(record(expiry=expiry, scheduled_at=scheduled_at), cert(expiry=expiry), now, grace)
    assert verdict.outcome is (Outcome.PENDING if age <= grace else Outcome.FAILED)
    assert verdict.closes is (age > grace)


@given(expiry=moments, scheduled_at=moments, first=offsets, later=st.timedeltas(min_value=timedelta(0)), grace=graces)
def test_once_failed_it_stays_failed(
    expiry: datetime, scheduled_at: datetime, first: timedelta, later: timedelta, grace: timedelta
) -> None:
    rec = record(expiry=expiry, scheduled_at=scheduled_at)
    now = scheduled_at + first
    if classify(rec, cert(expiry=expiry), now, grace).outcome is Outcome.FAILED:
        try:
            then = now + later
        except OverflowError:
            return
        assert classify(rec, cert(expiry=expiry), then, grace).outcome is Outcome.FAILED


@given(scheduled_at=moments, now=moments, grace=graces)
def test_gone_is_failed_whatever_the_time(scheduled_at: datetime, now: datetime, grace: timedelta) -> None:
    verdict = classify(record(expiry=None, scheduled_at=scheduled_at), None, now, grace)
    assert (verdict.outcome, verdict.reason) == (Outcome.FAILED, CERTIFICATE_GONE)


@given(
    expiries=st.lists(st.one_of(st.none(), offsets), max_size=40),
    now=moments,
    warning_days=st.integers(min_value=1, max_value=120),
)
def test_near_expiry_selects_exactly_the_certificates_inside_the_window(
    expiries: list[timedelta | None], now: datetime, warning_days: int
) -> None:
    certificates = [cert(f"c{i}.com", id=i, expiry=None if e is None else now + e) for i, e in enumerate(expiries)]
    found = near_expiry(certificates, now, warning_days)
    chosen = {n.certificate.name for n in found}
    for certificate, offset in zip(certificates, expiries, strict=True):
        inside = offset is not None and offset <= timedelta(days=warning_days)
        assert (certificate.name in chosen) is inside
    for item in found:
        assert item.days_left <= warning_days
        assert item.certificate.expiry_date is not None
        # days_left is the whole days left, rounded down
        left = item.certificate.expiry_date - now
        assert timedelta(days=item.days_left) <= left < timedelta(days=item.days_left + 1)
    assert [n.certificate.expiry_date for n in found] == sorted(n.certificate.expiry_date for n in found)


@given(expiry=moments, now=moments)
def test_days_left_is_negative_exactly_when_expired(expiry: datetime, now: datetime) -> None:
    assert (days_left(expiry, now) < 0) is (expiry < now)


@given(scheduled_at=moments, cid=st.integers(min_value=0, max_value=2**40))
def test_one_record_per_certificate_per_night(scheduled_at: datetime, cid: int) -> None:
    same_night = scheduled_at.replace(hour=0, minute=0, second=0, microsecond=0)
    assert record_key(scheduled_at, cert(id=cid)) == record_key(same_night, cert(id=cid))
    assert record_key(scheduled_at, cert(id=cid)) != record_key(same_night + timedelta(days=1), cert(id=cid))
