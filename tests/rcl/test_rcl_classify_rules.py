"""The rule chain behind `classify`, and the pure steps of the morning check (judging the open records, the
deployed expiries): each case is decided by its own rule, the first in the chain that speaks."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from shared.rcl.client import CertificateResponse
from shared.rcl.decisions import (
    CERTIFICATE_GONE,
    CLASSIFY_RULES,
    EXPIRY_EARLIER,
    NOT_INSTALLED,
    CertificateIndex,
    Judgement,
    Outcome,
    classify,
    deployed_expiries,
    judge_open_renewals,
)
from shared.rcl.scheduled import RecordState, ScheduledRenewal, scheduled_from

NOW = datetime(2025, 3, 10, 2, 30, tzinfo=UTC)
GRACE = timedelta(hours=24)
INSTALL_GRACE = timedelta(hours=24)
OLD_EXPIRY = NOW + timedelta(days=5)


def cert(
    name: str = "a.contoso.com", *, cid: int = 1, expiry: datetime | None, installed: bool = False
) -> CertificateResponse:
    return CertificateResponse(
        id=cid,
        name=name,
        issue_date=NOW - timedelta(hours=2),
        expiry_date=expiry,
        remote_create_date=NOW if installed else None,
        target="Azure DNS",
        renewal="Automatic",
    )


def scheduled(name: str = "a.contoso.com", *, cid: int = 1, hours_ago: float = 1) -> ScheduledRenewal:
    return scheduled_from(cert(name, cid=cid, expiry=OLD_EXPIRY), NOW - timedelta(hours=hours_ago), "run-1")


def seen_renewed(record: ScheduledRenewal, hours_ago: float) -> ScheduledRenewal:
    """The record as a check that saw it renewed but not installed `hours_ago` left it."""
    return replace(record, state=RecordState.NOT_INSTALLED, renewed_at=NOW - timedelta(hours=hours_ago))


def deciding_rules(facts: Judgement) -> list[str]:
    return [rule.__name__ for rule in CLASSIFY_RULES if rule(facts) is not None]


def test_each_case_is_decided_by_its_own_rule_first() -> None:
    renewed = NOW + timedelta(days=90)
    cases = {
        "_expiry_moved_earlier": Judgement(scheduled(), cert(expiry=NOW), NOW, GRACE, INSTALL_GRACE),
        "_renewed_and_installed": Judgement(
            scheduled(), cert(expiry=renewed, installed=True), NOW, GRACE, INSTALL_GRACE
        ),
        "_renewed_not_installed_yet": Judgement(scheduled(), cert(expiry=renewed), NOW, GRACE, INSTALL_GRACE),
        "_renewed_but_not_installed_in_time": Judgement(
            seen_renewed(scheduled(), 25), cert(expiry=renewed), NOW, GRACE, INSTALL_GRACE
        ),
        "_within_grace": Judgement(scheduled(), cert(expiry=OLD_EXPIRY), NOW, GRACE, INSTALL_GRACE),
    }
    for name, facts in cases.items():
        # Where two rules could speak, the earlier one is the one that holds (the order is part of the decision).
        assert deciding_rules(facts)[0] == name
    # Later rules may speak too (a renewed record is also within the grace): only the order keeps them silent.
    assert deciding_rules(cases["_renewed_but_not_installed_in_time"]) == [
        "_renewed_but_not_installed_in_time",
        "_renewed_not_installed_yet",
        "_within_grace",
    ]
    # No rule decides a renewal that did not happen in time: classify's last word is "not renewed".
    late = Judgement(scheduled(hours_ago=30), cert(expiry=OLD_EXPIRY), NOW, GRACE, INSTALL_GRACE)
    assert deciding_rules(late) == []
    assert classify(late.record, late.current, NOW, GRACE).outcome is Outcome.FAILED


def test_an_earlier_expiry_fails_even_within_the_grace() -> None:
    verdict = classify(scheduled(), cert(expiry=NOW), NOW, GRACE)
    assert (verdict.outcome, verdict.reason) == (Outcome.FAILED, EXPIRY_EARLIER)


def test_a_believed_list_fails_the_vanished_records_and_a_suspect_one_keeps_them_open() -> None:
    records = [scheduled(f"c{i}.contoso.com", cid=i) for i in range(4)]
    kept = CertificateIndex.of([cert("c0.contoso.com", cid=0, expiry=OLD_EXPIRY)])
    verdicts, suspicion = judge_open_renewals(records, kept, 1, NOW, GRACE, INSTALL_GRACE)
    assert suspicion == "3 of 4 open renewals vanished from RCL's list at once"
    assert [v.record.certificate_name for v in verdicts] == ["c0.contoso.com"]

    one_gone = CertificateIndex.of([cert(f"c{i}.contoso.com", cid=i, expiry=OLD_EXPIRY) for i in range(3)])
    verdicts, suspicion = judge_open_renewals(records, one_gone, 3, NOW, GRACE, INSTALL_GRACE)
    assert suspicion is None
    assert [v.reason for v in verdicts] == [None, None, None, CERTIFICATE_GONE]


def test_deployed_expiries_name_the_old_expiry_of_renewed_but_not_installed_certificates() -> None:
    renewed = NOW + timedelta(days=90)
    listed = [
        cert("a.contoso.com", cid=1, expiry=renewed),
        cert("b.contoso.com", cid=2, expiry=renewed, installed=True),
    ]
    index = CertificateIndex.of(listed)
    verdicts, _ = judge_open_renewals(
        [scheduled("a.contoso.com", cid=1), scheduled("b.contoso.com", cid=2)], index, 2, NOW, GRACE, INSTALL_GRACE
    )
    assert [v.outcome for v in verdicts] == [Outcome.NOT_INSTALLED, Outcome.RENEWED]
    assert deployed_expiries(verdicts, index) == {"id-1": OLD_EXPIRY}
    late = classify(seen_renewed(verdicts[0].record, 25), listed[0], NOW, GRACE, INSTALL_GRACE)
    assert (late.outcome, late.reason) == (Outcome.FAILED, NOT_INSTALLED)
