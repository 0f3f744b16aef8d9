"""The webhook's request validation, error mapping and answer shaping (shared.appviewx.validation) on their own:
pure functions, no I/O. The same rules driven through `function_app.app` are in test_webhook.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.appviewx.client import AvxRenewRequest, AvxRenewResult
from shared.appviewx.validation import (
    MAX_BODY_BYTES,
    MAX_FIELD_LENGTH,
    MAX_NUMBER_LENGTH,
    RenewCommand,
    avx_error_answer,
    certificate_tags,
    check_body_size,
    parse_renew_request,
    renewed_answer,
    unstorable,
)
from shared.azure.keyvault import StoredCertificate
from shared.core.certificates import KEY_VAULT_NAME_PATTERN, Storage
from shared.core.errors import ApiError, AvxError, Rejected

CALLER_PASSWORD = "SENTINEL-caller-pfx-password-1Aa!"


def parse(document: Any, query: dict[str, str] | None = None) -> RenewCommand:
    return parse_renew_request(json.dumps(document).encode(), query or {})


def refusal(body: bytes | Any, query: dict[str, str] | None = None) -> ApiError:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(Rejected) as caught:
        parse_renew_request(raw, query or {})
    answer = caught.value.answer
    assert answer.status == 400 and answer.remediation  # every refusal says what to do
    return answer


# -- what is accepted ---------------------------------------------------------------------------------------------------


def test_a_resource_id_alone_asks_for_a_pfx_with_a_generated_password() -> None:
    command = parse({"resourceId": "  r-1  "})
    assert command.avx.resource_id == "r-1"  # trimmed
    assert command.avx.format == "PFX" and command.storage is Storage.IMPORT_PFX
    assert command.password_generated and command.avx.password and len(command.avx.password) >= 8
    assert (command.key_vault_name, command.auto_approval, command.avx.workflow_type) == (None, None, None)
    assert command.target_name() is None  # nothing to name it by until AVX answers


def test_common_name_and_serial_number_with_every_optional_field() -> None:
    command = parse(
        {
            "commonName": "*.contoso.com",
            "serialNumber": "0A1B",
            "workflowType": "direct",
            "keyVaultCertificateName": "contoso-wildcard",
            "certificateFormat": {"format": "pk12", "password": CALLER_PASSWORD},
            "autoApproval": False,
        }
    )
    assert command.avx == AvxRenewRequest(
        common_name="*.contoso.com",
        serial_number="0A1B",
        format="PK12",  # the format is matched case-insensitively and sent as AVX spells it
        password=CALLER_PASSWORD,
        workflow_type="direct",
    )
    assert command.password_generated is False  # the caller's password: never registered as the app's own
    assert command.auto_approval is False
    assert command.target_name() == "contoso-wildcard"


def test_a_format_without_password_gets_none_and_the_name_comes_from_the_common_name() -> None:
    command = parse({"commonName": "www.contoso.com", "serialNumber": "01", "certificateFormat": {"format": "PEM"}})
    assert (command.avx.format, command.avx.password, command.password_generated) == ("PEM", None, False)
    assert command.target_name() == "www-contoso-com"


def test_an_empty_password_means_none_given() -> None:
    command = parse({"resourceId": "r-1", "certificateFormat": {"format": "PFX", "password": ""}})
    assert command.password_generated and command.avx.password


@pytest.mark.parametrize(
    ("body", "query", "expected"),
    [
        ({"autoApproval": True}, {}, True),
        ({}, {"autoApproval": "TRUE"}, True),
        ({}, {"autoApproval": "false"}, False),
        ({}, {}, None),
    ],
)
def test_auto_approval_from_the_body_or_the_query(body: dict[str, Any], query: dict[str, str], expected: bool) -> None:
    assert parse({"resourceId": "r-1", **body}, query).auto_approval is expected


# -- what is refused ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"\xff\xfe", b"[]", b'"text"', b"null", b"[" * 100_000],
    ids=["empty", "text", "not-utf8", "array", "string", "null", "deeply-nested"],
)
def test_a_body_that_is_not_a_json_object(body: bytes) -> None:
    answer = refusal(body)
    assert (answer.code, answer.message) == ("INVALID_REQUEST", "The request body must be a JSON object")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'{"resourceId": NaN}', "NaN, which is not JSON"),
        (b'{"resourceId": "r", "x": -Infinity}', "-Infinity, which is not JSON"),
        (b'{"resourceId": "r", "x": ' + b"9" * (MAX_NUMBER_LENGTH + 1) + b"}", "number longer than"),
        (b'{"resourceId": "r", "x": 1e400}', "out of range"),
    ],
)
def test_numbers_json_does_not_allow_or_the_app_will_not_read(body: bytes, words: str) -> None:
    assert words in refusal(body).message


@pytest.mark.parametrize(
    ("document", "code", "words"),
    [
        ({}, "MANDATORY_FIELD_MISSING", "Either resourceId or commonName & serialNumber are Mandatory."),
        ({"resourceId": "   "}, "MANDATORY_FIELD_MISSING", "Mandatory."),
        ({"commonName": "a.example"}, "MANDATORY_FIELD_MISSING", "missing or invalid - serialNumber."),
        ({"serialNumber": "01"}, "MANDATORY_FIELD_MISSING", "missing or invalid - commonName."),
        ({"resourceId": 7}, "INVALID_REQUEST", "resourceId must be a string"),
        ({"resourceId": "r" * (MAX_FIELD_LENGTH + 1)}, "INVALID_REQUEST", f"at most {MAX_FIELD_LENGTH} characters"),
        ({"resourceId": "r", "certificateFormat": "PFX"}, "INVALID_REQUEST", "certificateFormat must be an object"),
        ({"resourceId": "r", "certificateFormat": {"format": 1}}, "INVALID_REQUEST", "format must be a string"),
        ({"resourceId": "r", "certificateFormat": {"password": 1}}, "INVALID_REQUEST", "password must be a string"),
        ({"resourceId": "r", "certificateFormat": {"format": "ZIP"}}, "VALIDATION_ERROR_0004", "one of CRT, CERT"),
        ({"resourceId": "r", "workflowType": "approval"}, "VALIDATION_ERROR_0004", "workflowType may only be direct"),
        ({"resourceId": "r", "keyVaultCertificateName": "a_b"}, "INVALID_REQUEST", "keyVaultCertificateName"),
        ({"resourceId": "r", "autoApproval": "true"}, "INVALID_REQUEST", "a JSON boolean"),
    ],
)
def test_fields_that_are_missing_or_wrong(document: dict[str, Any], code: str, words: str) -> None:
    answer = refusal(document)
    assert answer.code == code and words in answer.message, answer


def test_a_too_long_password_is_refused_without_being_echoed() -> None:
    password = "P" * (MAX_FIELD_LENGTH + 1)
    answer = refusal({"resourceId": "r", "certificateFormat": {"password": password}})
    assert "certificateFormat.password must be at most" in answer.message and password not in answer.message


@pytest.mark.parametrize("value", ["yes", "1", ""])
def test_auto_approval_in_the_query_is_true_or_false(value: str) -> None:
    assert refusal({"resourceId": "r"}, {"autoApproval": value}).message == "autoApproval must be true or false"


def test_auto_approval_may_be_given_once() -> None:
    answer = refusal({"resourceId": "r", "autoApproval": True}, {"autoApproval": "true"})
    assert "once" in answer.message


def test_the_body_size_rule() -> None:
    check_body_size(b"x" * MAX_BODY_BYTES)  # at the limit: accepted
    with pytest.raises(Rejected) as caught:
        check_body_size(b"x" * (MAX_BODY_BYTES + 1))
    assert (caught.value.answer.status, caught.value.answer.code) == (413, "PAYLOAD_TOO_LARGE")


def test_every_accepted_name_is_a_key_vault_name() -> None:
    assert KEY_VAULT_NAME_PATTERN.match(parse({"resourceId": "r", "keyVaultCertificateName": "a-" * 63}).target_name())
    refusal({"resourceId": "r", "keyVaultCertificateName": "a" * 128})


# -- what Key Vault can store -------------------------------------------------------------------------------------------


def command_for(fmt: str, name: str | None = "kv-name") -> RenewCommand:
    return RenewCommand(AvxRenewRequest(resource_id="r", format=fmt), key_vault_name=name, auto_approval=None)


@pytest.mark.parametrize(("fmt", "words"), [("JKS", "a Java keystore"), ("PK8", "a private key without")])
def test_formats_key_vault_cannot_import(fmt: str, words: str) -> None:
    answer = unstorable(command_for(fmt), pending_exists=True)
    assert answer is not None and (answer.status, answer.code) == (422, "UNSTORABLE_FORMAT") and words in answer.message


def test_a_format_without_key_needs_a_pending_operation_to_merge_into() -> None:
    without = unstorable(command_for("CRT"), pending_exists=False)
    assert without is not None and without.status == 422 and "under 'kv-name'" in without.message
    unnamed = unstorable(command_for("CRT", name=None), pending_exists=None)
    assert unnamed is not None and "no keyVaultCertificateName given" in unnamed.message
    assert unstorable(command_for("CRT"), pending_exists=True) is None


@pytest.mark.parametrize("fmt", ["PFX", "PK12", "PEM"])
def test_formats_with_their_key_are_storable(fmt: str) -> None:
    assert unstorable(command_for(fmt), pending_exists=False) is None


# -- AVX failures and answers -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "http_status", "answered"),
    [
        ("AVX_TIMEOUT", None, 504),
        ("NO_RECORDS_FOUND", 404, 404),
        ("VALIDATION_ERROR_0004", 400, 400),
        ("CERT-VWF-0006", 406, 406),
        ("OPEN_WORK_ORDERS_FOUND", 417, 417),
        ("AVX_GW_003", 401, 502),
        ("AVX_GW_005", 403, 502),
        ("AVX_BAD_RESPONSE", 500, 502),
        ("AVX_UNREACHABLE", None, 502),
    ],
)
def test_avx_failures_map_to_the_issues_error_table(code: str, http_status: int | None, answered: int) -> None:
    answer = avx_error_answer(AvxError("AVX said no", code=code, http_status=http_status, remediation="do this"))
    assert (answer.status, answer.code, answer.remediation) == (answered, code, "do this")
    if http_status in (401, 403):  # the app's own account was refused, not the caller
        assert "AVX_USERNAME/AVX_PASSWORD" in answer.message and "AVX said no" in answer.message
    else:
        assert answer.message == "AVX said no"


def test_the_renewed_answer_and_the_tags_carry_the_avx_ids() -> None:
    avx = AvxRenewResult(
        "r-2", "q-9", "renewed", "www.contoso.com", certificate_content="Zm9v", private_key_content=None
    )
    stored = StoredCertificate(
        id="https://kv.example/certificates/www/v1",
        name="www",
        version="v1",
        thumbprint="AB",
        not_before=datetime(2026, 1, 1, tzinfo=UTC),
        expires_on=None,
        subject="CN=www.contoso.com",
        tags={"source": "appviewx"},
    )
    answer = renewed_answer(stored, avx)
    assert answer["status"] == "renewed"
    assert answer["avx"] == {"resourceId": "r-2", "requestId": "q-9", "message": "renewed"}
    assert answer["keyVault"]["notBefore"].startswith("2026-01-01") and "tags" not in answer["keyVault"]
    assert "Zm9v" not in json.dumps(answer)  # the certificate content is never part of the answer
    assert certificate_tags(avx, "0A") == {
        "source": "appviewx",
        "avxResourceId": "r-2",
        "avxRequestId": "q-9",
        "serialNumber": "0A",
    }
