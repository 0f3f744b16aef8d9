"""RCL's protocol pieces: dates, CertificateResponse parsing, error mapping, retry rules; and the state table's
call budget under concurrency (real TableClient against Azurite)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone

import pytest
from azure.data.tables import TableClient
from hypothesis import given
from hypothesis import strategies as st

from shared.core.errors import RclError
from shared.rcl.client import (
    BAD_RESPONSE,
    CONNECTION_LOST,
    QUOTA_EXCEEDED,
    SERVER_ERROR,
    TIMEOUT,
    UNAUTHORIZED,
    UNREACHABLE,
    CertificateResponse,
    error_for_status,
    is_retryable,
    parse_certificates,
    parse_rcl_date,
)
from shared.rcl.decisions import Outcome, Verdict
from shared.rcl.scheduled import scheduled_from
from shared.rcl.state import BUDGET_PARTITION, RenewalStateStore
from tests.standins.rcl import rcl_time
from tests.standins.stack import Azurite

# -- dates ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2021-04-30T01:04:32.1430019", datetime(2021, 4, 30, 1, 4, 32, 143001, tzinfo=UTC)),
        ("2021-04-30T01:04:32", datetime(2021, 4, 30, 1, 4, 32, tzinfo=UTC)),
        ("2021-04-30T01:04:32.5Z", datetime(2021, 4, 30, 1, 4, 32, 500000, tzinfo=UTC)),
        ("2021-04-30T03:04:32.1430019+02:00", datetime(2021, 4, 30, 1, 4, 32, 143001, tzinfo=UTC)),
        ("2021-04-30 01:04", datetime(2021, 4, 30, 1, 4, tzinfo=UTC)),
        ("2021-04-30", datetime(2021, 4, 30, tzinfo=UTC)),
        ("", None),
        (None, None),
        ("0001-01-01T00:00:00", None),  # .NET's MinValue: no date (Azure Tables cannot hold it)
        ("9999-12-31T23:59:59.9999999", None),  # .NET's MaxValue: no date (arithmetic on it would overflow)
        ("1601-01-02T00:00:00", datetime(1601, 1, 2, tzinfo=UTC)),
        ("not a date", None),
        ("2021-02-30T00:00:00", None),
        (12345, None),
    ],
)
def test_rcl_dates(text: object, expected: datetime | None) -> None:
    assert parse_rcl_date(text) == expected


@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9998, 12, 30)), st.integers(0, 9))
def test_rcl_dates_round_trip_with_seven_digits(moment: datetime, seventh: int) -> None:
    text = moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + str(seventh)  # RCL's form: no zone, 7 fractional digits
    assert parse_rcl_date(text) == moment.replace(tzinfo=UTC)
    assert parse_rcl_date(rcl_time(moment.replace(tzinfo=UTC))) == moment.replace(tzinfo=UTC)  # as the stand-in writes


@given(
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9998, 1, 1), timezones=st.just(UTC)),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)
def test_rcl_dates_with_an_offset_are_the_same_instant(moment: datetime, minutes: int) -> None:
    local = moment.astimezone(timezone(timedelta(minutes=minutes)))
    assert parse_rcl_date(local.isoformat()) == moment


# -- CertificateResponse ----------------------------------------------------------------------------------------


def test_the_documented_sample_parses() -> None:
    body = b"""[{"id":158,"name":"contoso.com","issueDate":"2021-01-30T01:04:32.1430009",
    "expiryDate":"2021-04-30T01:04:32.1430019","remoteCreateDate":"","target":"Azure DNS","renewal":"Automatic",
    "pemUri":"","pfxUri":"","crtUri":"","cerUri":"","privateKeyUri":"","certificateUri":"",
    "intermediateCertificateUri":"","fullChainCertificateUri":""}]"""
    (item,) = parse_certificates(body)
    assert item.id == 158 and item.name == "contoso.com" and item.target == "Azure DNS"
    assert item.expiry_date == datetime(2021, 4, 30, 1, 4, 32, 143001, tzinfo=UTC)
    assert item.remote_create_date is None and item.renewal == "Automatic"


@pytest.mark.parametrize(
    "body",
    [b"[]", b"\xef\xbb\xbf[]", b" [ ] "],  # empty, with a byte-order mark, with whitespace
)
def test_empty_answers(body: bytes) -> None:
    assert parse_certificates(body) == []


def test_tolerant_fields() -> None:
    (item,) = parse_certificates(b'[{"id": "42", "name": "x.com", "expiryDate": "garbage", "future": true}]')
    assert (item.id, item.expiry_date) == (42, None)
    (item,) = parse_certificates(b'[{"id": true, "name": "y.com"}]')
    assert item.id is None


@pytest.mark.parametrize(
    "body",
    [b"", b"null", b"{}", b'{"certificates": []}', b'"text"', b"[1]", b'[{"id": 1}]', b"[{", b"\xff\xfe", b"<html/>"],
)
def test_malformed_answers(body: bytes) -> None:
    with pytest.raises(RclError) as raised:
        parse_certificates(body)
    assert raised.value.code == BAD_RESPONSE and raised.value.remediation


# -- errors -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (401, UNAUTHORIZED),
        (403, UNAUTHORIZED),
        (429, QUOTA_EXCEEDED),
        (500, SERVER_ERROR),
        (503, SERVER_ERROR),
        (400, "RCL_BAD_REQUEST"),
        (404, "RCL_NOT_FOUND"),
        (409, "RCL_BAD_REQUEST"),
    ],
)
def test_status_mapping(status: int, code: str) -> None:
    error = error_for_status(status, b"text/plain answer", "POST CertificateRenewal", ())
    assert (error.code, error.http_status) == (code, status)
    assert error.remediation and "POST CertificateRenewal" in error.message


def test_error_text_is_short_single_line_and_token_free() -> None:
    jwt = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwcyJ9.c2lnbmF0dXJl"
    body = f"line one\nBearer abc.def token={jwt} and SENTINEL-token-x {'z' * 500}".encode()
    error = error_for_status(400, body, "POST CertificateRenewal", ("SENTINEL-token-x",))
    assert jwt not in error.message and "abc.def" not in error.message and "SENTINEL" not in error.message
    assert "\n" not in error.message and len(error.message) < 400


def test_retry_after_is_read() -> None:
    assert error_for_status(429, b"", "x", (), "120").retry_after == 120
    assert error_for_status(503, b"", "x", (), "soon").retry_after is None


@pytest.mark.parametrize(
    ("code", "post", "get"),
    [
        (SERVER_ERROR, True, True),
        (UNREACHABLE, True, True),
        (TIMEOUT, False, True),  # RCL may have scheduled: a second POST is not blind
        (CONNECTION_LOST, False, True),
        (QUOTA_EXCEEDED, False, False),
        (UNAUTHORIZED, False, False),
        (BAD_RESPONSE, False, False),
    ],
)
def test_what_is_retried(code: str, post: bool, get: bool) -> None:
    error = RclError("x", code=code)
    assert (is_retryable(error, "POST"), is_retryable(error, "GET")) == (post, get)


# -- the state table ------------------------------------------------------------------------------------------------


@pytest.fixture
def store(azurite: Azurite) -> Iterator[RenewalStateStore]:
    name = f"rcl{uuid.uuid4().hex[:12]}"
    client = TableClient.from_connection_string(azurite.connection_string, name)
    client.create_table()
    yield RenewalStateStore(client)
    client.delete_table()
    client.close()


def test_racing_invocations_cannot_exceed_the_nights_budget(store: RenewalStateStore) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        granted = list(pool.map(lambda _: store.reserve_call("20250310", "renewal", 2), range(16)))
    assert sorted(g for g in granted if g is not None) == [1, 2]
    assert store.reserve_call("20250310", "renewal", 2) is None  # spent: the next invocation is refused too
    budget = store.table.get_entity(BUDGET_PARTITION, "20250310")
    assert budget["renewalCalls"] == 2 and "listCalls" not in budget
    assert store.reserve_call("20250310", "list", 2) == 1  # each endpoint has its own budget
    assert store.reserve_call("20250311", "renewal", 2) == 1  # and each night


def test_records_round_trip_in_batches_and_close(store: RenewalStateStore) -> None:
    now = datetime(2025, 3, 10, 2, 0, 0, 123456, tzinfo=UTC)
    certificates = [
        CertificateResponse(i, f"c{i}.com", None, now + timedelta(days=i % 20), None, "Azure DNS", None)
        for i in range(230)
    ]
    certificates.append(CertificateResponse(2**40, "big-id.com", None, None, None, None, None))
    records = [scheduled_from(c, now, "run-1") for c in certificates]
    store.record_scheduled(records)
    read = {r.record_key: r for r in store.open_renewals()}
    assert read == {r.record_key: r for r in records}

    verdicts = [Verdict(records[0], Outcome.RENEWED, installed=True, new_expiry=now + timedelta(days=90))]
    verdicts += [Verdict(r, Outcome.PENDING) for r in records[1:200]]
    verdicts += [Verdict(r, Outcome.FAILED, reason="RCL_NOT_RENEWED", message="m") for r in records[200:]]
    store.close_verdicts(verdicts, now)
    assert {r.record_key for r in store.open_renewals()} == {r.record_key for r in records[1:200]}


def test_old_rows_are_removed_in_bounded_batches_and_open_ones_never(store: RenewalStateStore) -> None:
    old = datetime(2025, 1, 1, tzinfo=UTC)
    for index in range(250):
        store.table.upsert_entity(
            {"PartitionKey": "rcl", "RowKey": f"old-{index:03}", "state": "failed", "scheduledAt": old, "closedAt": old}
        )
    store.table.upsert_entity({"PartitionKey": "rcl", "RowKey": "open", "state": "notinstalled", "scheduledAt": old})
    store.table.upsert_entity({"PartitionKey": "rclbudget", "RowKey": "20250101", "listCalls": 2})
    cutoff = datetime(2025, 3, 1, tzinfo=UTC)

    first = store.remove_older_than(cutoff, limit=120)
    assert (first.records, first.budget_rows) == (120, 0)  # the night's limit is spent on records first
    second = store.remove_older_than(cutoff, limit=1000)
    assert (second.records, second.budget_rows) == (130, 1)
    left = [e["RowKey"] for e in store.table.query_entities("PartitionKey eq 'rcl'")]
    assert left == ["open"]
