"""The AppViewX webhook, driven through `function_app.app` against the AVX, Key Vault and identity stand-ins."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from cryptography import x509

from tests.standins import certs
from tests.standins.avx import STATUS_TABLE, page_error
from tests.standins.base import Response
from tests.standins.stack import AVX_PASSWORD, AVX_USERNAME, KEY_VAULT_RESOURCE, StandIns


def test_bindings_are_what_the_host_reads(functions: dict[str, Any]) -> None:
    binding = json.loads(functions["renew_http"].get_function_json())["bindings"][0]
    assert binding["type"] == "httpTrigger"
    assert binding["route"] == "certificates/renew"
    assert binding["methods"] == ["POST"]
    assert binding["authLevel"] == "FUNCTION"


def test_pfx_renewal_lands_in_key_vault_with_tags(standins: StandIns, call_webhook: Any) -> None:
    item = standins.avx.add_certificate("www.contoso.com")

    status, answer = call_webhook({"resourceId": item.resource_id})

    assert status == 200, answer
    renewed = item.renewals[-1]
    stored = standins.key_vault.latest("www-contoso-com")
    assert stored is not None and stored.has_key
    assert stored.thumbprint == certs.thumbprint_hex(renewed.certificate)
    vault = answer["keyVault"]
    assert vault["name"] == "www-contoso-com"
    assert vault["id"] == f"{standins.key_vault.url}/certificates/www-contoso-com/{vault['version']}"
    assert vault["thumbprint"] == certs.thumbprint_hex(renewed.certificate)
    assert vault["subject"] == "CN=www.contoso.com"
    assert vault["expiresOn"].endswith("Z") and vault["notBefore"].endswith("Z")
    # AVX files the renewal under a new record (page 188, 332-336); the answer and the tags name it
    assert answer["avx"]["resourceId"] == renewed.resource_id != item.resource_id
    assert answer["avx"]["requestId"].startswith("REQ")
    assert answer["invocationId"] == call_webhook.last_context.invocation_id
    assert stored.tags == {
        "source": "appviewx",
        "avxResourceId": renewed.resource_id,
        "avxRequestId": answer["avx"]["requestId"],
        "serialNumber": format(renewed.certificate.serial_number, "X"),
    }

    (sent,) = standins.avx.renew_calls()
    assert sent.path == "/avxapi/certificate/renew"
    assert sent.query == {"gwsource": ["external"], "isSync": ["true"], "ttl": ["300"]}
    assert sent.header("userName") == AVX_USERNAME and sent.header("password") == AVX_PASSWORD
    assert sent.header("Content-Type") == "application/json"
    body = sent.json()
    # No format named: the app asks for PFX with a strong one-time password it made itself.
    assert body["certificateFormat"]["format"] == "PFX"
    password = body["certificateFormat"]["password"]
    assert len(password) >= 16 and re.search(r"[a-z]", password) and re.search(r"[A-Z]", password)
    assert re.search(r"\d", password) and re.search(r"[^A-Za-z0-9]", password)
    assert password not in json.dumps(answer)


def test_caller_password_and_name_are_used(standins: StandIns, call_webhook: Any) -> None:
    item = standins.avx.add_certificate("api.contoso.com")
    serial = item.serial_number
    status, answer = call_webhook(
        {
            "commonName": item.common_name,
            "serialNumber": serial,
            "certificateFormat": {"format": "PK12", "password": "Caller-Pass-123!"},
            "workflowType": "direct",
            "keyVaultCertificateName": "api-prod",
        }
    )
    assert status == 200, answer
    assert answer["keyVault"]["name"] == "api-prod"
    body = standins.avx.renew_calls()[0].json()
    assert body == {
        "commonName": "api.contoso.com",
        "serialNumber": serial,
        "certificateFormat": {"format": "PK12", "password": "Caller-Pass-123!"},
        "workflowType": "direct",
    }
    assert "Caller-Pass-123!" not in json.dumps(answer)


def test_wildcard_name_is_derived(standins: StandIns, call_webhook: Any) -> None:
    item = standins.avx.add_certificate("*.contoso.com")
    status, answer = call_webhook({"resourceId": item.resource_id})
    assert status == 200, answer
    assert answer["keyVault"]["name"] == "wildcard-contoso-com"
    assert standins.key_vault.latest("wildcard-contoso-com") is not None


def test_unknown_fields_are_not_forwarded(standins: StandIns, call_webhook: Any) -> None:
    item = standins.avx.add_certificate("x.contoso.com")
    status, _ = call_webhook({"resourceId": item.resource_id, "evil": {"$where": 1}, "caConnectorInfo": "x"})
    assert status == 200
    assert set(standins.avx.renew_calls()[0].json()) == {"resourceId", "certificateFormat"}


@pytest.mark.parametrize("pkcs8", [True, False], ids=["pkcs8-key", "pkcs1-key-converted"])
def test_pem_with_key_is_imported(standins: StandIns, call_webhook: Any, pkcs8: bool) -> None:
    standins.avx.pem_key_pkcs8 = pkcs8
    item = standins.avx.add_certificate("pem.contoso.com")
    status, answer = call_webhook({"resourceId": item.resource_id, "certificateFormat": {"format": "PEM"}})
    assert status == 200, answer
    stored = standins.key_vault.latest("pem-contoso-com")
    assert stored is not None and stored.has_key
    assert stored.thumbprint == certs.thumbprint_hex(item.renewals[-1].certificate)
    assert "password" not in standins.avx.renew_calls()[0].json()["certificateFormat"]


def test_pem_without_key_and_no_pending_operation_is_kept_pending(standins: StandIns, call_webhook: Any) -> None:
    standins.avx.pem_includes_key = False
    item = standins.avx.add_certificate("nokey.contoso.com")
    status, answer = call_webhook({"resourceId": item.resource_id, "certificateFormat": {"format": "PEM"}})
    assert status == 202
    assert answer["status"] == "pending" and answer["reason"] == "KEY_VAULT_STORE_FAILED"
    assert answer["avx"]["resourceId"] == item.renewals[-1].resource_id  # the new record (page 188)
    assert standins.key_vault.latest("nokey-contoso-com") is None


@pytest.mark.parametrize("fmt", ["CRT", "CERT", "CER", "DER", "DERCER", "P7B", "P7C", "PEM"])
def test_keyless_format_merges_into_pending_csr(standins: StandIns, call_webhook: Any, fmt: str) -> None:
    standins.avx.pem_includes_key = False
    name = f"merge-{fmt.lower()}"
    csr_der = standins.key_vault.create_pending(name, subject=f"CN={name}.contoso.com")
    csr = x509.load_der_x509_csr(csr_der)
    item = standins.avx.add_certificate(f"{name}.contoso.com")
    # AVX signs the CSR Key Vault made (its key never left the vault).
    original_issue = certs.issue_certificate

    def sign_pending(common_name: str, **kw: Any) -> certs.IssuedCertificate:
        return certs.sign_csr(csr_der) if common_name == item.common_name else original_issue(common_name, **kw)

    certs.issue_certificate = sign_pending  # type: ignore[assignment]
    try:
        status, answer = call_webhook(
            {"resourceId": item.resource_id, "certificateFormat": {"format": fmt}, "keyVaultCertificateName": name}
        )
    finally:
        certs.issue_certificate = original_issue  # type: ignore[assignment]
    assert status == 200, answer
    stored = standins.key_vault.latest(name)
    assert stored is not None and stored.has_key
    assert stored.certificate.public_key().public_numbers() == csr.public_key().public_numbers()
    assert answer["keyVault"]["name"] == name
    assert standins.key_vault.received("POST", "/pending/merge")


@pytest.mark.parametrize("fmt", ["CRT", "DER", "P7B", "JKS", "PK8"])
def test_unstorable_format_is_refused_before_avx(standins: StandIns, call_webhook: Any, fmt: str) -> None:
    item = standins.avx.add_certificate("plain.contoso.com")
    status, answer = call_webhook(
        {"resourceId": item.resource_id, "certificateFormat": {"format": fmt, "password": "Jks-Pass-1!"}}
    )
    assert status == 422
    assert answer["error"]["code"] == "UNSTORABLE_FORMAT"
    assert answer["error"]["remediation"]
    assert standins.avx.renew_calls() == []


def test_auto_approval_is_forwarded(standins: StandIns, call_webhook: Any) -> None:
    item = standins.avx.add_certificate("aa.contoso.com")
    status, _ = call_webhook({"resourceId": item.resource_id}, params={"autoApproval": "true"})
    assert status == 200
    assert standins.avx.renew_calls()[0].query_one("autoApproval") == "true"


def test_manual_approval_without_certificate_is_kept_pending(standins: StandIns, call_webhook: Any) -> None:
    item = standins.avx.add_certificate("manual.contoso.com")
    status, answer = call_webhook({"resourceId": item.resource_id}, params={"autoApproval": "false"})
    assert status == 202
    assert answer["status"] == "pending" and answer["reason"] == "AVX_NO_CERTIFICATE"
    assert re.fullmatch(r"[0-9a-f]{32}", answer["pendingId"])
    assert answer["avx"]["resourceId"] == item.renewals[-1].resource_id  # the new record (page 188)
    assert standins.avx.renew_calls()[0].query_one("autoApproval") == "false"


INVALID: list[tuple[str, Any, int, str]] = [
    ("not-json", b"{nope", 400, "INVALID_REQUEST"),
    ("array", b"[1,2]", 400, "INVALID_REQUEST"),
    ("string", b'"resourceId"', 400, "INVALID_REQUEST"),
    ("not-utf8", b"\xff\xfe{}", 400, "INVALID_REQUEST"),
    ("empty", b"", 400, "INVALID_REQUEST"),
    ("nothing", {}, 400, "MANDATORY_FIELD_MISSING"),
    ("cn-only", {"commonName": "a.contoso.com"}, 400, "MANDATORY_FIELD_MISSING"),
    ("serial-only", {"serialNumber": "0A"}, 400, "MANDATORY_FIELD_MISSING"),
    ("blank-id", {"resourceId": "  "}, 400, "MANDATORY_FIELD_MISSING"),
    ("id-number", {"resourceId": 42}, 400, "INVALID_REQUEST"),
    ("cn-list", {"commonName": ["a"], "serialNumber": "1"}, 400, "INVALID_REQUEST"),
    ("format-string", {"resourceId": "r", "certificateFormat": "PFX"}, 400, "INVALID_REQUEST"),
    ("format-number", {"resourceId": "r", "certificateFormat": {"format": 7}}, 400, "INVALID_REQUEST"),
    (
        "password-number",
        {"resourceId": "r", "certificateFormat": {"format": "PFX", "password": 1}},
        400,
        "INVALID_REQUEST",
    ),
    ("bad-format", {"resourceId": "r", "certificateFormat": {"format": "ZIP"}}, 400, "VALIDATION_ERROR_0004"),
    ("bad-workflow", {"resourceId": "r", "workflowType": "full"}, 400, "VALIDATION_ERROR_0004"),
    ("kv-name-dots", {"resourceId": "r", "keyVaultCertificateName": "a.b"}, 400, "INVALID_REQUEST"),
    ("kv-name-long", {"resourceId": "r", "keyVaultCertificateName": "a" * 128}, 400, "INVALID_REQUEST"),
    ("kv-name-type", {"resourceId": "r", "keyVaultCertificateName": True}, 400, "INVALID_REQUEST"),
]


@pytest.mark.parametrize(("case", "body", "status", "code"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_requests_are_refused_before_any_call(
    standins: StandIns, call_webhook: Any, case: str, body: Any, status: int, code: str
) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    got_status, answer = call_webhook(raw=raw)
    assert (got_status, answer["error"]["code"]) == (status, code), answer
    assert answer["error"]["message"]
    assert answer["invocationId"]
    assert standins.avx.requests == [] and standins.key_vault.requests == [] and standins.identity.requests == []


def test_bad_auto_approval_is_refused(standins: StandIns, call_webhook: Any) -> None:
    status, answer = call_webhook({"resourceId": "r"}, params={"autoApproval": "maybe"})
    assert (status, answer["error"]["code"]) == (400, "INVALID_REQUEST")
    assert standins.avx.requests == []


def test_oversized_body_is_413(standins: StandIns, call_webhook: Any) -> None:
    status, answer = call_webhook({"resourceId": "r", "pad": "x" * (64 * 1024)})
    assert status == 413 and answer["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert standins.avx.requests == []


EXPECTED_STATUS = {400: 400, 404: 404, 406: 406, 417: 417, 401: 502, 403: 502, 500: 502}


@pytest.mark.parametrize("row", sorted(STATUS_TABLE))
def test_every_avx_status_row_maps_to_the_error_table(standins: StandIns, call_webhook: Any, row: str) -> None:
    avx_status, app_code, avx_message = STATUS_TABLE[row]
    standins.avx.script(page_error(row))
    status, answer = call_webhook({"resourceId": "r1"})
    if row == "FAILED_DOWNLOAD":  # "performed successfully but failed to download": AVX renewed, kept pending
        assert (status, answer["status"], answer["reason"]) == (202, "pending", app_code), answer
        assert avx_message in answer["message"]
        return
    assert status == EXPECTED_STATUS[avx_status]
    assert answer["error"]["code"] == app_code
    assert avx_message in answer["error"]["message"]
    if avx_status in (401, 403):
        assert "AVX account" in answer["error"]["message"]
        assert "caller's function key is fine" in answer["error"]["message"]
    if app_code not in ("avx-common-011",):
        assert answer["error"]["remediation"]
    assert standins.key_vault.requests == []


def test_a_gateway_error_page_keeps_the_renewal_pending(standins: StandIns, call_webhook: Any) -> None:
    # A gateway's 502 (not AVX's own answer) does not prove AVX did not renew: tracked, never sent again.
    standins.avx.script(Response.text("<html>bad gateway</html>", status=502, content_type="text/html"))
    status, answer = call_webhook({"resourceId": "r1"})
    assert (status, answer["status"], answer["reason"]) == (202, "pending", "AVX_BAD_RESPONSE"), answer
    assert len(standins.avx.renew_calls()) == 1


@pytest.mark.parametrize(
    "response",
    [
        Response.text("not json at all", status=200),
        Response.text('{"response": {"certificateContent": "trunc', status=200),
        Response.json({"message": "x", "appStatusCode": None, "response": {"certificateContent": "!!notbase64"}}),
    ],
    ids=["text-200", "truncated-json", "bad-base64"],
)
def test_unusable_avx_success_answers_are_kept_pending(
    standins: StandIns, call_webhook: Any, response: Response
) -> None:
    # AVX answered 200: it may have renewed, so the answer is 202 with a record the timer completes.
    standins.avx.script(response)
    status, answer = call_webhook({"resourceId": "r1"})
    assert status == 202, answer
    assert answer["status"] == "pending" and answer["reason"] == "AVX_BAD_RESPONSE" and answer["pendingId"]


def test_avx_unreachable_is_502(standins: StandIns, call_webhook: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared import context as app_context
    from tests.standins.stack import free_port

    monkeypatch.setenv("AVX_API_URL", f"https://127.0.0.1:{free_port()}/avxapi")
    app_context.reset()
    status, answer = call_webhook({"resourceId": "r1"})
    assert (status, answer["error"]["code"]) == (502, "AVX_UNREACHABLE")


def test_avx_read_timeout_is_kept_pending_and_not_resent(
    standins: StandIns, call_webhook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared import context as app_context

    monkeypatch.setenv("AVX_TIMEOUT_SECONDS", "1")
    app_context.reset()
    standins.avx.script(Response(delay=5))
    status, answer = call_webhook({"resourceId": "r1"})
    assert status == 202
    assert answer["reason"] == "AVX_TIMEOUT" and answer["avx"] is None
    assert len(standins.avx.renew_calls()) == 1  # a PUT that may have reached AVX is never sent again


def test_untrusted_avx_certificate_is_unreachable(
    standins: StandIns, call_webhook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared import context as app_context

    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    app_context.reset()
    status, answer = call_webhook({"resourceId": "r1"})
    assert (status, answer["error"]["code"]) == (502, "AVX_UNREACHABLE")
    assert "AVX_CA_BUNDLE" in answer["error"]["remediation"]


def test_avx_ca_bundle_setting_trusts_a_private_ca(
    standins: StandIns, call_webhook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared import context as app_context

    monkeypatch.setenv("AVX_CA_BUNDLE", str(standins.ca.bundle_path))
    app_context.reset()
    item = standins.avx.add_certificate("ca.contoso.com")
    status, answer = call_webhook({"resourceId": item.resource_id})
    assert status == 200, answer


@pytest.mark.parametrize("kv_status", [400, 403, 500])
def test_key_vault_failure_is_kept_pending_with_the_avx_ids(
    standins: StandIns, call_webhook: Any, kv_status: int
) -> None:
    item = standins.avx.add_certificate("kvfail.contoso.com")
    error = {"error": {"code": "Forbidden", "message": "The user does not have certificates import permission"}}
    standins.key_vault.fail_next(10, Response.json(error, status=kv_status), operation="import")
    status, answer = call_webhook({"resourceId": item.resource_id})
    assert status == 202
    assert answer["reason"] == "KEY_VAULT_STORE_FAILED"
    assert answer["avx"]["resourceId"] == item.renewals[-1].resource_id  # the new record (page 188)
    assert answer["avx"]["requestId"].startswith("REQ")


def test_renewal_table_down_stops_before_avx(
    standins: StandIns, call_webhook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared import context as app_context
    from tests.standins.stack import unreachable_storage

    # The record is written before AVX is called: without it, nothing is renewed that could be lost.
    monkeypatch.setenv("AzureWebJobsStorage", unreachable_storage())
    app_context.reset()
    item = standins.avx.add_certificate("bothfail.contoso.com")
    status, answer = call_webhook({"resourceId": item.resource_id})
    assert (status, answer["error"]["code"]) == (503, "STATE_STORE_UNAVAILABLE")
    assert answer["error"]["remediation"]
    assert standins.avx.renew_calls() == []


def test_tokens_and_challenge_are_fetched_once_per_process(standins: StandIns, call_webhook: Any) -> None:
    from azure.keyvault.certificates._shared import http_challenge_cache

    # A fresh process has no cached challenge (the SDK keeps it per host:port for the process's life).
    http_challenge_cache.remove_challenge_for_url(standins.key_vault.url)
    challenges_before = standins.key_vault.challenge_count
    for name in ("one.contoso.com", "two.contoso.com", "three.contoso.com"):
        item = standins.avx.add_certificate(name)
        status, answer = call_webhook({"resourceId": item.resource_id})
        assert status == 200, answer
    assert len(standins.identity.token_requests(KEY_VAULT_RESOURCE)) == 1
    assert standins.key_vault.challenge_count - challenges_before == 1
    assert len(standins.avx.renew_calls()) == 3
    assert standins.avx.connections == 1  # one kept-alive session


def test_identity_endpoint_failure_is_a_clear_error(standins: StandIns, call_webhook: Any) -> None:
    item = standins.avx.add_certificate("mi.contoso.com")
    standins.identity.script(*[Response.json({"error": "unavailable"}, status=500)] * 10)
    status, answer = call_webhook({"resourceId": item.resource_id})
    assert status == 502
    assert answer["error"]["code"] == "IDENTITY_UNAVAILABLE"
    assert answer["error"]["remediation"]
    assert standins.avx.renew_calls() == []  # nothing renewed that could not be stored


def test_missing_settings_are_named(call_webhook: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared import context as app_context

    monkeypatch.delenv("AVX_USERNAME")
    monkeypatch.setenv("AVX_TIMEOUT_SECONDS", "soon")
    app_context.reset()
    status, answer = call_webhook({"resourceId": "r1"})
    assert (status, answer["error"]["code"]) == (500, "CONFIGURATION_ERROR")
    assert "AVX_USERNAME is required" in answer["error"]["message"]
    assert "AVX_TIMEOUT_SECONDS must be a number" in answer["error"]["message"]


def test_user_assigned_identity_is_asked_for_by_client_id(
    standins: StandIns, call_webhook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared import context as app_context

    client_id = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
    monkeypatch.setenv("AZURE_CLIENT_ID", client_id)
    app_context.reset()
    standins.identity.expected_client_id = client_id
    try:
        item = standins.avx.add_certificate("uami.contoso.com")
        status, answer = call_webhook({"resourceId": item.resource_id})
    finally:
        standins.identity.expected_client_id = None
    assert status == 200, answer
    (token_request,) = standins.identity.token_requests(KEY_VAULT_RESOURCE)
    assert token_request.query_one("client_id") == client_id
    assert token_request.query_one("api-version") == "2019-08-01"
