"""The pure rules of `shared/appviewx/renewal_finder.py` (issue 22): which listed AppViewX certificate is a record's
renewal, now that AVX files every renewal under a new record. The end-to-end cases are in test_avx_new_records.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.appviewx.client import AvxCertificateRecord
from shared.appviewx.records import PendingRecord
from shared.appviewx.renewal_rules import (
    BACKDATE_ALLOWANCE,
    RenewalChoice,
    choose_renewal,
    current_certificate,
    holds_replaced,
    is_candidate,
    knowing_replaced,
    named_record,
    normalise_serial,
    renewal_in_named,
)

NOW = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)


def listed(resource_id: str, serial: str, start: datetime, status: str = "Active") -> AvxCertificateRecord:
    end = start + timedelta(days=90)
    return AvxCertificateRecord(resource_id, "twin.example", serial, status, end.isoformat(), start.isoformat())


def record(**fields: object) -> PendingRecord:
    base: dict[str, object] = {"reason": "AVX_TIMEOUT", "storage": "import", "common_name": "twin.example"}
    return PendingRecord.new(NOW, **{**base, **fields})


def test_serials_compare_normalised() -> None:
    assert normalise_serial("00:0a:Bc") == normalise_serial("ABC") == normalise_serial(" 0abc ") == "ABC"
    assert normalise_serial("") is None and normalise_serial("000") == "0"


def test_the_record_avx_named_is_the_renewal_only_when_it_is_not_the_requested_one() -> None:
    assert named_record(record(avx_resource_id="new", requested_resource_id="old")) == "new"
    assert named_record(record(avx_resource_id="new")) == "new"  # commonName + serialNumber request
    assert named_record(record(avx_resource_id="old", requested_resource_id="old")) is None  # same-id records
    assert named_record(record(requested_resource_id="old")) is None  # the answer was lost


def test_in_the_named_record_any_certificate_but_the_replaced_one_is_the_renewal() -> None:
    mine = record(avx_resource_id="new", serial_number="0A")
    renewal = listed("new", "1A", NOW)
    assert renewal_in_named(mine, [renewal]) == renewal
    assert renewal_in_named(mine, []) is None  # not approved yet
    assert holds_replaced(mine, [listed("new", "0a", NOW - timedelta(days=30))])  # AVX named the renewed record
    assert renewal_in_named(record(avx_resource_id="new"), [renewal]) == renewal  # serial unknown: still exact


def test_a_candidate_has_the_common_name_another_serial_and_is_not_revoked() -> None:
    mine = record(serial_number="0A")
    assert is_candidate(mine, listed("x", "1A", NOW))
    assert not is_candidate(mine, listed("x", "000a", NOW))  # the replaced certificate, spelled otherwise
    assert not is_candidate(mine, listed("x", "1A", NOW, status="Revoked"))
    other_name = AvxCertificateRecord("x", "other.example", "1A", "Active", None, NOW.isoformat())
    assert not is_candidate(mine, other_name)


def test_only_certificates_issued_after_the_request_qualify() -> None:
    mine = record(serial_number="0A")
    replaced = listed("old", "0A", NOW - timedelta(days=30))
    history = listed("older", "09", NOW - timedelta(days=90))
    twin = listed("twin", "0B", NOW - timedelta(days=10))  # another record of the name, issued before
    renewal = listed("new", "1A", NOW + timedelta(minutes=1))

    def dated(*items: AvxCertificateRecord) -> list[tuple[AvxCertificateRecord, datetime | None]]:
        return [(i, datetime.fromisoformat(i.valid_from or "")) for i in items]

    assert choose_renewal(mine, dated(replaced, history, twin)) == RenewalChoice(None)
    assert choose_renewal(mine, dated(replaced, history, twin, renewal)) == RenewalChoice(renewal)
    backdated = listed("new", "1A", NOW - BACKDATE_ALLOWANCE + timedelta(minutes=1))  # a CA's backdated notBefore
    assert choose_renewal(mine, dated(backdated)) == RenewalChoice(backdated)
    assert choose_renewal(mine, [(renewal, None)]) == RenewalChoice(None)  # undated: never a guess


def test_renewals_under_several_records_are_ambiguous() -> None:
    mine = record(serial_number="0A")
    renewal, twin_renewal = listed("new", "1A", NOW), listed("twin-new", "1B", NOW + timedelta(minutes=3))
    both = [(renewal, NOW), (twin_renewal, NOW + timedelta(minutes=3))]
    assert choose_renewal(mine, both) == RenewalChoice(None, ("new", "twin-new"))
    assert choose_renewal(mine, both[:1]) == RenewalChoice(renewal)


def test_the_replaced_certificate_is_read_from_the_renewed_record() -> None:
    old = listed("old", "0A", NOW - timedelta(days=30))
    assert current_certificate([old], None) == old
    assert current_certificate([old], "0a") == old and current_certificate([old], "0B") is None
    learned = knowing_replaced(record(common_name=None, requested_resource_id="old"), old)
    assert (learned.common_name, learned.serial_number, learned.replaced_valid_from) == (
        "twin.example",
        "0A",
        old.valid_from,
    )
    kept = knowing_replaced(record(serial_number="0C"), old)
    assert kept.serial_number == "0C"  # what the request named wins
