"""Callers proven, kept apart and bounded (issue 11): signatures cannot be replayed or widened, the App Service
principal is trusted only behind App Service authentication, idempotency keys are per caller, callers cannot feed
the redaction guard, dangerous settings are refused, RCL gets a token of its own identity, notifications are
escaped and de-duplicated. Everything through `function_app.app`."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import azure.functions as func
import pytest

from shared import context as app_context
from shared.core import redaction
from shared.core.settings import Settings
from shared.core.telemetry import add_event_sink, remove_event_sink
from shared.security import signature
from tests.standins.stack import WEBHOOK_HMAC_SECRET, FakeContext, StandIns


@pytest.fixture
def events() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    seen: list[tuple[str, dict[str, Any]]] = []

    def sink(name: str, attributes: dict[str, Any]) -> None:
        seen.append((name, attributes))

    add_event_sink(sink)
    yield seen
    remove_event_sink(sink)


@pytest.fixture
def hmac_env(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("WEBHOOK_HMAC_SECRET", WEBHOOK_HMAC_SECRET)
    app_context.reset()
    return WEBHOOK_HMAC_SECRET


def signed(body: dict[str, Any], secret: str = WEBHOOK_HMAC_SECRET) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    ts = str(int(time.time()))
    return raw, {"X-Signature-Timestamp": ts, "X-Signature": signature.sign(secret, ts, raw)}


def status_of(functions: dict[str, Any], pending_id: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    request = func.HttpRequest(
        method="GET",
        url=f"http://localhost/api/certificates/renew/{pending_id}",
        headers=headers or {},
        params={},
        route_params={"pendingId": pending_id},
        body=b"",
    )
    response = functions["renew_status"].get_user_function()(request, FakeContext("renew_status"))
    assert response.status_code == 200
    return json.loads(response.get_body())


# -- 1. signatures cannot be replayed or widened -------------------------------------------------------------------


def test_a_replayed_signature_is_refused_and_avx_is_called_once(
    standins: StandIns, call_webhook: Any, hmac_env: str
) -> None:
    item = standins.avx.add_certificate("replay.contoso.com")
    raw, headers = signed({"resourceId": item.resource_id})
    assert call_webhook(raw=raw, headers=headers)[0] == 200
    status, answer = call_webhook(raw=raw, headers=headers)
    assert (status, answer["error"]["code"]) == (401, "SIGNATURE_REPLAYED")
    assert len(standins.avx.renew_calls()) == 1


def test_a_replayed_signature_with_its_idempotency_key_gets_the_first_answer(
    standins: StandIns, call_webhook: Any, hmac_env: str
) -> None:
    item = standins.avx.add_certificate("replay-key.contoso.com")
    raw, headers = signed({"resourceId": item.resource_id})
    headers["Idempotency-Key"] = "change-1"
    first = call_webhook(raw=raw, headers=headers)
    second = call_webhook(raw=raw, headers=headers)
    assert first[0] == 200 and second == first
    assert len(standins.avx.renew_calls()) == 1


@pytest.mark.parametrize("params", [{"autoApproval": "false"}, {"code": "k", "extra": "1"}, {"autoapproval": "true"}])
def test_signed_requests_accept_no_query_but_the_function_key(
    standins: StandIns, call_webhook: Any, hmac_env: str, params: dict[str, str]
) -> None:
    raw, headers = signed({"resourceId": "r1"})
    status, answer = call_webhook(raw=raw, headers=headers, params=params)
    assert (status, answer["error"]["code"]) == (400, "INVALID_REQUEST")
    assert standins.avx.requests == []


def test_signed_request_with_only_the_function_key_and_body_auto_approval(
    standins: StandIns, call_webhook: Any, hmac_env: str
) -> None:
    item = standins.avx.add_certificate("bodyapproval.contoso.com")
    raw, headers = signed({"resourceId": item.resource_id, "autoApproval": False})
    status, answer = call_webhook(raw=raw, headers=headers, params={"code": "function-key"})
    assert status == 202, answer
    assert standins.avx.renew_calls()[0].query_one("autoApproval") == "false"


@pytest.mark.parametrize("value", ["false", 0, None, "true"])
def test_body_auto_approval_must_be_a_boolean(standins: StandIns, call_webhook: Any, value: Any) -> None:
    status, answer = call_webhook({"resourceId": "r1", "autoApproval": value})
    assert (status, answer["error"]["code"]) == (400, "INVALID_REQUEST")
    assert standins.avx.requests == []


def test_body_and_query_auto_approval_must_agree(standins: StandIns, call_webhook: Any) -> None:
    status, answer = call_webhook({"resourceId": "r1", "autoApproval": True}, params={"autoApproval": "false"})
    assert (status, answer["error"]["code"]) == (400, "INVALID_REQUEST")
    assert standins.avx.requests == []


@pytest.mark.parametrize("value", ["   ", "\t"])
def test_a_blank_hmac_secret_is_a_configuration_error(
    standins: StandIns, call_webhook: Any, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("WEBHOOK_HMAC_SECRET", value)
    app_context.reset()
    status, answer = call_webhook({"resourceId": "r1"})
    assert (status, answer["error"]["code"]) == (500, "CONFIGURATION_ERROR")
    assert "WEBHOOK_HMAC_SECRET" in answer["error"]["message"]
    assert standins.avx.requests == []


def test_required_signature_without_a_secret_is_a_configuration_error(
    standins: StandIns, call_webhook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEBHOOK_REQUIRE_SIGNATURE", "true")
    monkeypatch.setenv("WEBHOOK_HMAC_SECRET", "")
    app_context.reset()
    status, answer = call_webhook({"resourceId": "r1"})
    assert (status, answer["error"]["code"]) == (500, "CONFIGURATION_ERROR")
    assert "WEBHOOK_REQUIRE_SIGNATURE" in answer["error"]["message"]
    assert standins.avx.requests == []


@pytest.mark.parametrize("timestamp", ["²³", "١٧٠٠٠٠٠٠٠٠", "+1700000000", " 1700000000", "1e9", "-5"])
def test_malformed_timestamps_are_signature_invalid(
    standins: StandIns, call_webhook: Any, hmac_env: str, timestamp: str
) -> None:
    raw = json.dumps({"resourceId": "r1"}).encode()
    headers = {"X-Signature-Timestamp": timestamp, "X-Signature": signature.sign(hmac_env, timestamp, raw)}
    status, answer = call_webhook(raw=raw, headers=headers)
    assert (status, answer["error"]["code"]) == (401, "SIGNATURE_INVALID")


@pytest.mark.parametrize("number", ["9" * 5000, "1" + "0" * 400 + ".5", "1e999999"])
def test_oversized_numbers_are_400(standins: StandIns, call_webhook: Any, number: str) -> None:
    raw = ('{"resourceId": "r1", "n": ' + number + "}").encode()
    status, answer = call_webhook(raw=raw)
    assert (status, answer["error"]["code"]) == (400, "INVALID_REQUEST")
    assert standins.avx.requests == []


# -- 2. callers kept apart ----------------------------------------------------------------------------------------------


def test_principal_headers_are_ignored_without_app_service_authentication(
    standins: StandIns, call_webhook: Any, events: list[Any]
) -> None:
    item = standins.avx.add_certificate("forged.contoso.com")
    headers = {"X-MS-CLIENT-PRINCIPAL-NAME": "ceo@contoso.com", "X-MS-CLIENT-PRINCIPAL-ID": "forged"}
    assert call_webhook({"resourceId": item.resource_id}, headers=headers)[0] == 200
    assert "ceo@contoso.com" not in json.dumps(events, default=str)
    assert dict(events)["CertificateRenewed"].get("caller") in (None, "anonymous")


def test_principal_headers_are_used_behind_app_service_authentication(
    standins: StandIns, call_webhook: Any, events: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")
    item = standins.avx.add_certificate("easyauth.contoso.com")
    headers = {"X-MS-CLIENT-PRINCIPAL-NAME": "cmdb-workflow", "X-MS-CLIENT-PRINCIPAL-ID": "oid-1"}
    assert call_webhook({"resourceId": item.resource_id}, headers=headers)[0] == 200
    assert dict(events)["CertificateRenewed"]["caller"] == "cmdb-workflow"


def test_idempotency_keys_are_per_caller(
    standins: StandIns, call_webhook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")
    item = standins.avx.add_certificate("keys.contoso.com")
    body = {"resourceId": item.resource_id}

    def as_caller(principal: str) -> dict[str, str]:
        return {
            "Idempotency-Key": "shared-key",
            "X-MS-CLIENT-PRINCIPAL-ID": principal,
            "X-MS-CLIENT-PRINCIPAL-NAME": principal,
        }

    status_a, answer_a = call_webhook(body, headers=as_caller("caller-a"))
    assert status_a == 200
    # B with A's key and A's body: a renewal of B's own, never A's answer.
    status_b, answer_b = call_webhook(body, headers=as_caller("caller-b"))
    assert status_b == 200 and answer_b["invocationId"] != answer_a["invocationId"]
    # C with A's key and another body: not 422 (which would tell C the key exists), a renewal of its own.
    other = standins.avx.add_certificate("other.contoso.com")
    status_c, answer_c = call_webhook({"resourceId": other.resource_id}, headers=as_caller("caller-c"))
    assert status_c == 200 and answer_c["keyVault"]["id"] != answer_a["keyVault"]["id"]
    assert len(standins.avx.renew_calls()) == 3
    # A's own repeat still gets A's first answer, without renewing again.
    assert call_webhook(body, headers=as_caller("caller-a")) == (200, answer_a)
    assert len(standins.avx.renew_calls()) == 3


def test_status_route_does_not_tell_who_asked(
    standins: StandIns, call_webhook: Any, functions: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")
    item = standins.avx.add_certificate("status.contoso.com")
    headers = {"X-MS-CLIENT-PRINCIPAL-NAME": "secret-team@contoso.com", "X-MS-CLIENT-PRINCIPAL-ID": "oid-2"}
    status, answer = call_webhook({"resourceId": item.resource_id}, params={"autoApproval": "false"}, headers=headers)
    assert status == 202, answer
    shown = status_of(functions, answer["pendingId"])
    assert "secret-team" not in json.dumps(shown)
    assert {"state", "reason", "createdAt"} <= set(shown)
    assert "caller" not in shown


def test_status_route_bounds_and_sanitises_upstream_text(
    standins: StandIns, call_webhook: Any, functions: dict[str, Any]
) -> None:
    from datetime import UTC, datetime

    from shared.appviewx.records import PendingRecord

    record = PendingRecord.new(
        datetime.now(UTC),
        reason="KEY_VAULT_STORE_FAILED",
        storage="import",
        last_error="x\x1b[31m\r\nfake" + "y" * 5000,
    )
    app_context.pending_store().save(record)
    shown = status_of(functions, record.pending_id)
    assert len(shown["lastError"]) <= 500
    assert not any(ord(c) < 32 or ord(c) == 127 for c in shown["lastError"])


# -- 3. callers cannot feed the redaction guard ------------------------------------------------------------------------


def test_caller_passwords_are_not_registered_and_stay_out_of_logs(
    standins: StandIns, call_webhook: Any, caplog: pytest.LogCaptureFixture
) -> None:
    item = standins.avx.add_certificate("pwd.contoso.com")
    password = "the"  # an ordinary word as a password must not blank "the" from every log line
    before = len(redaction._registered)
    status, _ = call_webhook(
        {"resourceId": item.resource_id, "certificateFormat": {"format": "PFX", "password": "correct horse battery"}}
    )
    assert status == 200
    assert len(redaction._registered) == before
    assert redaction.redact("the renewal of the certificate") == "the renewal of the certificate"
    assert password  # the ordinary word stays readable
    for record in caplog.records:
        text = record.getMessage() + json.dumps({k: str(v) for k, v in record.__dict__.items()})
        assert "correct horse battery" not in text


def test_refused_requests_with_fresh_passwords_do_not_slow_later_renewals(
    standins: StandIns, call_webhook: Any
) -> None:
    import secrets

    def timed_renewals(n: int) -> float:
        started = time.perf_counter()
        for i in range(n):
            item = standins.avx.add_certificate(f"speed{i}-{secrets.token_hex(3)}.contoso.com")
            assert call_webhook({"resourceId": item.resource_id})[0] == 200
        return (time.perf_counter() - started) / n

    baseline = timed_renewals(3)
    for _ in range(2000):  # refused before AVX: JKS cannot be stored
        body = {
            "resourceId": "r1",
            "certificateFormat": {"format": "JKS", "password": secrets.token_urlsafe(750)[:1000]},
        }
        assert call_webhook(body)[0] == 422
    after = timed_renewals(3)
    print(f"renewal before: {baseline:.3f} s, after 2,000 refused requests: {after:.3f} s")
    assert after < baseline * 2 + 0.2


# -- 5. settings refuse dangerous values -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "group"),
    [
        ("AVX_API_URL", "http://avx.contoso.com/avxapi", "avx"),
        ("RCL_API_URL", "http://rcl.contoso.com/api/v2", "rcl"),
        ("NOTIFY_WEBHOOK_URL", "http://hooks.contoso.com/x", "notify"),
        ("AVX_TIMEOUT_SECONDS", "nan", "avx"),
        ("AVX_TIMEOUT_SECONDS", "inf", "avx"),
        ("AVX_TIMEOUT_SECONDS", "1e308", "avx"),
        ("RCL_TIMEOUT_SECONDS", "-inf", "rcl"),
        ("RCL_VERIFY_GRACE_HOURS", "nan", "rcl"),
        ("RCL_RETRY_DELAY_SECONDS", "inf", "rcl"),
        ("PENDING_MAX_DAYS", "inf", "webhook"),
        ("AVX_SYNC_TTL_SECONDS", "99999999999", "avx"),
        ("RENEWAL_WARNING_DAYS", "100000", "rcl"),
    ],
)
def test_dangerous_setting_values_are_refused(name: str, value: str, group: str) -> None:
    from shared.core.errors import SettingsError

    env = {"AVX_API_URL": "https://avx.contoso.com/avxapi", "AVX_USERNAME": "u", "AVX_PASSWORD": "p4ss", name: value}
    with pytest.raises(SettingsError) as raised:
        getattr(Settings(env), group)
    assert name in raised.value.message


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/avxapi", "http://localhost/avxapi", "http://[::1]:9/avxapi"])
def test_http_is_allowed_for_loopback_only(url: str) -> None:
    assert Settings({"AVX_API_URL": url, "AVX_USERNAME": "u", "AVX_PASSWORD": "p4ss"}).avx.api_url == url


# -- 6. least privilege for RCL ---------------------------------------------------------------------------------------


def test_rcl_gets_the_key_vault_token_of_its_own_identity(
    standins: StandIns, functions: dict[str, Any], app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_CLIENT_ID", "app-identity")
    monkeypatch.setenv("RCL_KEY_VAULT_CLIENT_ID", "rcl-kv-identity")
    monkeypatch.setenv("RCL_RETRY_DELAY_SECONDS", "0.05")
    app_context.reset()
    standins.rcl.add_certificate("leastprivilege.contoso.com", 3)
    functions["renew_timer"].get_user_function()(func.timer.TimerRequest(past_due=False), FakeContext("renew_timer"))
    asked = {(r.query_one("resource"), r.query_one("client_id")) for r in standins.identity.token_requests()}
    assert ("https://vault.azure.net", "rcl-kv-identity") in asked
    assert ("https://vault.azure.net", "app-identity") not in asked
    assert ("https://management.core.windows.net", "app-identity") in asked
    (sent,) = standins.rcl.renewal_calls()
    assert sent.json()["keyVaultAccessToken"]


def test_the_app_keeps_its_own_identity_for_its_key_vault_calls(
    standins: StandIns, call_webhook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_CLIENT_ID", "app-identity")
    monkeypatch.setenv("RCL_KEY_VAULT_CLIENT_ID", "rcl-kv-identity")
    app_context.reset()
    item = standins.avx.add_certificate("own.contoso.com")
    assert call_webhook({"resourceId": item.resource_id})[0] == 200
    clients = {r.query_one("client_id") for r in standins.identity.token_requests("https://vault.azure.net")}
    assert clients == {"app-identity"}


def test_without_the_rcl_identity_one_warning_per_process(
    standins: StandIns,
    functions: dict[str, Any],
    app_env: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shared.azure import identity

    monkeypatch.setattr(identity, "_warned_shared_key_vault_identity", False, raising=False)
    monkeypatch.setenv("RCL_RETRY_DELAY_SECONDS", "0.05")
    app_context.reset()
    for _ in range(2):
        functions["renew_timer"].get_user_function()(
            func.timer.TimerRequest(past_due=False), FakeContext("renew_timer")
        )
    warnings = [r for r in caplog.records if "RCL_KEY_VAULT_CLIENT_ID" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING


def test_expired_signature_records_are_purged(standins: StandIns, call_webhook: Any, hmac_env: str) -> None:
    from datetime import UTC, datetime, timedelta

    from azure.data.tables import TableClient

    from shared.security import replay

    table = TableClient.from_connection_string(hmac_env_storage(), app_context.settings().storage.idempotency_table)
    item = standins.avx.add_certificate("purge.contoso.com")
    raw, headers = signed({"resourceId": item.resource_id})
    assert call_webhook(raw=raw, headers=headers)[0] == 200
    old = {"PartitionKey": replay.PARTITION, "RowKey": "0" * 64, "expiresAt": datetime.now(UTC) - timedelta(hours=1)}
    table.create_entity(old)
    app_context.signature_replays()._next_purge = 0.0  # the purge runs at most every 10 minutes per process
    raw, headers = signed({"resourceId": item.resource_id, "keyVaultCertificateName": "purge-2"})
    assert call_webhook(raw=raw, headers=headers)[0] == 200
    rows = {e["RowKey"] for e in table.query_entities("PartitionKey eq 'signature'")}
    assert "0" * 64 not in rows and len(rows) == 2  # the two live signatures stay


def hmac_env_storage() -> str:
    return app_context.settings().storage.connection_string or ""
