"""Issue 29: a caller writes only what it may, AppViewX's answer cannot break a record, no secret rides upstream text.

Each finding is reproduced through `function_app.app` against the AVX and Key Vault stand-ins and Azurite (each test
failed on the code as reviewed)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from shared import context as app_context
from tests.appviewx.test_avx_pipeline import run_complete_pending, status_of, time_passes
from tests.appviewx.test_renew_queue import deliver, imports, post_async
from tests.standins import certs
from tests.standins.base import RecordedRequest, Response
from tests.standins.stack import AVX_PASSWORD, StandIns

CALLER_PASSWORD = "Caller-Pfx-Pass-9z!"


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}.contoso.com"


# -- 1. control characters and duplicate keys are refused before AVX ------------------------------------------------


@pytest.mark.parametrize(
    ("field", "body"),
    [
        ("certificateFormat.password", {"certificateFormat": {"format": "PFX", "password": "a\u0000b"}}),
        ("certificateFormat.password", {"certificateFormat": {"format": "PFX", "password": "pass\u007fword-1A"}}),
        ("commonName", {"commonName": "www.contoso.com\u202e", "serialNumber": "0A"}),
        ("serialNumber", {"commonName": "www.contoso.com", "serialNumber": "0A\u0007"}),
        ("resourceId", {"resourceId": "\u200eabc"}),
        ("resourceId", {"resourceId": "abc\u2066"}),
        ("keyVaultCertificateName", {"resourceId": "abc", "keyVaultCertificateName": "name\u0085"}),
    ],
)
def test_control_and_bidi_characters_are_refused_naming_the_field_before_avx(
    standins: StandIns, call_webhook: Any, field: str, body: dict[str, Any]
) -> None:
    item = standins.avx.add_certificate(_unique("ctl"))
    body = {"resourceId": item.resource_id, **body}
    status, answer = call_webhook(body)
    assert status == 400, answer
    assert field in answer["error"]["message"]
    assert standins.avx.renew_calls() == []


def test_a_body_with_a_duplicate_key_is_refused_naming_it(standins: StandIns, call_webhook: Any) -> None:
    item = standins.avx.add_certificate(_unique("dup"))
    raw = json.dumps({"resourceId": item.resource_id})[:-1] + ', "resourceId": "other"}'
    status, answer = call_webhook(raw=raw.encode())
    assert status == 400, answer
    assert "resourceId" in answer["error"]["message"] and "more than once" in answer["error"]["message"]
    assert standins.avx.renew_calls() == []


# -- 2. a BaseException after AVX acted keeps the record and the caller's key ----------------------------------------


class NativePanic(BaseException):
    """Like pyo3_runtime.PanicException: derives from BaseException, not Exception."""


def test_a_base_exception_after_avx_answers_202_pending_and_the_retry_renews_nothing(
    standins: StandIns, call_webhook: Any, functions: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    item = standins.avx.add_certificate(_unique("panic"))

    def panicking_loader(*_: Any, **__: Any) -> Any:
        raise NativePanic("rust panicked while reading the PKCS#12")

    monkeypatch.setattr("shared.appviewx.storing.leaf_of_pfx", panicking_loader)
    headers = {"Idempotency-Key": f"panic-{uuid.uuid4().hex}"}
    first = call_webhook({"resourceId": item.resource_id}, headers=headers)
    again = call_webhook({"resourceId": item.resource_id}, headers=headers)

    assert first[0] == 202 and first[1]["status"] == "pending" and first[1]["pendingId"], first
    assert again == first
    assert len(standins.avx.renew_calls()) == 1
    record = status_of(functions, first[1]["pendingId"])
    assert record["state"] == "pending", record

    time_passes(20)
    run_complete_pending(functions)  # the timer meets the same panic: the record is backed off, the run goes on
    record = status_of(functions, first[1]["pendingId"])
    assert record["state"] == "pending" and record["attempts"] >= 1, record
    assert len(standins.avx.renew_calls()) == 1


# -- 3. AVX's error text never carries the app's secrets to the caller ------------------------------------------------


def _avx_echoes_credentials(standins: StandIns, monkeypatch: pytest.MonkeyPatch, status: int, code: str | None) -> None:
    """AVX's validation errors quote the request's values: here its credentials and the PFX password."""

    def echo(request: RecordedRequest) -> Response:
        sent = request.json()["certificateFormat"].get("password")
        message = f"Field password has an invalid value {sent}; user {request.header('password')} is not permitted"
        return Response.json({"response": None, "message": message, "appStatusCode": code}, status=status)

    monkeypatch.setattr(standins.avx, "_renew", echo)


@pytest.mark.parametrize("password", [CALLER_PASSWORD, None], ids=["caller-password", "one-time-password"])
@pytest.mark.parametrize(("status", "code"), [(400, "INVALID_REQUEST"), (500, None)], ids=["refused", "unknown"])
def test_avx_echoing_the_avx_and_pfx_passwords_reaches_neither_answer_nor_status_route(
    standins: StandIns,
    call_webhook: Any,
    functions: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    password: str | None,
    status: int,
    code: str | None,
) -> None:
    item = standins.avx.add_certificate(_unique("echo"))
    _avx_echoes_credentials(standins, monkeypatch, status, code)
    certificate_format = {"format": "PFX", **({"password": password} if password else {})}
    answered, answer = call_webhook({"resourceId": item.resource_id, "certificateFormat": certificate_format})
    (sent,) = standins.avx.renew_calls()
    used_password = sent.json()["certificateFormat"]["password"]
    text = json.dumps(answer)
    assert AVX_PASSWORD not in text and used_password not in text, answer
    assert "Field password has an invalid value" in text  # the rest of AVX's message is kept
    pending_id = answer.get("pendingId") or (answer.get("error") or {}).get("pendingId")
    if answered == 202:
        record = status_of(functions, pending_id)
        shown = json.dumps(record)
        assert AVX_PASSWORD not in shown and used_password not in shown, record
        stored = app_context.pending_store().get(pending_id)
        assert stored is not None and used_password not in (stored.last_error or "")


# -- 4. the target name is owned ----------------------------------------------------------------------------------


def _seed(standins: StandIns, name: str, common_name: str, tags: dict[str, str] | None) -> Any:
    issued = certs.issue_certificate(common_name)
    return standins.key_vault.seed(name, issued.certificate, issued.private_key, tags=tags)


@pytest.mark.parametrize(
    ("tags", "owner"),
    [
        ({"source": "rcl", "team": "payments"}, "source=rcl"),
        (None, "no source tag"),
        ({"source": "appviewx", "avxResourceId": "other"}, "source=appviewx"),  # ours, but another common name
    ],
    ids=["rcl", "untagged", "appviewx-other-name"],
)
def test_a_webhook_never_writes_a_certificate_the_app_does_not_own(
    standins: StandIns, call_webhook: Any, tags: dict[str, str] | None, owner: str
) -> None:
    item = standins.avx.add_certificate("*.fabrikam.com")
    seeded = _seed(standins, "payments-contoso-com", "payments.contoso.com", tags)

    status, answer = call_webhook(
        {
            "commonName": "*.fabrikam.com",
            "serialNumber": item.serial_number,
            "keyVaultCertificateName": "payments-contoso-com",
        }
    )

    assert status == 409, answer
    assert answer["error"]["code"] == "TARGET_NOT_OWNED"
    assert owner in answer["error"]["message"]
    assert standins.avx.renew_calls() == []  # refused before AVX
    latest = standins.key_vault.latest("payments-contoso-com")
    assert latest is not None and latest.version == seeded.version and latest.tags == tags


def test_a_resource_id_only_renewal_into_another_common_names_certificate_is_refused_before_storing(
    standins: StandIns, call_webhook: Any, functions: dict[str, Any]
) -> None:
    """By resourceId alone the common name is known only from AVX's answer (one AVX round trip, issue 22): this
    app's certificate of another common name is refused then, and the vault is left as it was."""
    item = standins.avx.add_certificate("*.fabrikam.com")
    seeded = _seed(
        standins, "payments-contoso-com", "payments.contoso.com", {"source": "appviewx", "avxResourceId": "x"}
    )

    status, answer = call_webhook({"resourceId": item.resource_id, "keyVaultCertificateName": "payments-contoso-com"})

    assert status == 409 and answer["error"]["code"] == "TARGET_NOT_OWNED", answer
    assert "source=appviewx" in answer["error"]["message"] and answer["error"]["pendingId"]
    latest = standins.key_vault.latest("payments-contoso-com")
    assert latest is not None and latest.version == seeded.version
    assert status_of(functions, answer["error"]["pendingId"])["state"] == "failed"
    run_complete_pending(functions)
    assert standins.key_vault.latest("payments-contoso-com").version == seeded.version


def test_a_certificate_the_app_stored_for_the_same_name_is_renewed_and_a_grant_allows_another(
    standins: StandIns, call_webhook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    item = standins.avx.add_certificate("shop.contoso.com")
    _seed(standins, "shop", "shop.contoso.com", {"source": "appviewx", "avxResourceId": item.resource_id})
    status, answer = call_webhook({"resourceId": item.resource_id, "keyVaultCertificateName": "shop"})
    assert status == 200, answer

    _seed(standins, "legacy-shop", "shop.contoso.com", {"source": "manual"})
    monkeypatch.setenv("AVX_ADOPTABLE_CERTIFICATES", "legacy-shop")
    app_context.reset()
    status, answer = call_webhook({"resourceId": item.resource_id, "keyVaultCertificateName": "legacy-shop"})
    assert status == 200, answer
    latest = standins.key_vault.latest("legacy-shop")
    assert latest is not None and latest.tags and latest.tags["source"] == "appviewx"


def test_a_certificate_adopted_for_one_caller_is_stored_by_the_completion_of_its_renewal(
    standins: StandIns, call_webhook: Any, functions: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The caller the operator allowed renews its adopted certificate; the import fails once (Key Vault 503), so the
    # completion timer stores it: for the caller who asked (the record's), not refused as nobody's to write.
    common_name = _unique("ops")
    _seed(standins, "legacy-ops", common_name, {"source": "manual"})
    item = standins.avx.add_certificate(common_name)
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")
    monkeypatch.setenv("AVX_ADOPTABLE_CERTIFICATES", "legacy-ops=ops@contoso.com")
    app_context.reset()
    ops = {"X-MS-CLIENT-PRINCIPAL-ID": "ops-id", "X-MS-CLIENT-PRINCIPAL-NAME": "ops@contoso.com"}
    standins.key_vault.fail_next(1, Response(503, {"error": {"code": "ServiceUnavailable", "message": "x"}}), "import")
    status, answer = call_webhook(
        {"resourceId": item.resource_id, "keyVaultCertificateName": "legacy-ops"}, headers=ops
    )
    assert status == 202, answer

    run_complete_pending(functions)

    record = status_of(functions, answer["pendingId"])
    assert record["state"] == "renewed", record
    latest = standins.key_vault.latest("legacy-ops")
    assert latest is not None and latest.tags and latest.tags["source"] == "appviewx"


def test_a_pending_csr_for_another_subject_is_never_merged_into(standins: StandIns, call_webhook: Any) -> None:
    item = standins.avx.add_certificate("merge.contoso.com")
    standins.key_vault.create_pending("merge-target", "CN=other.contoso.com")
    status, answer = call_webhook(
        {
            "resourceId": item.resource_id,
            "certificateFormat": {"format": "DER"},
            "keyVaultCertificateName": "merge-target",
        }
    )
    assert status == 409 and answer["error"]["code"] == "TARGET_NOT_OWNED", answer
    assert answer["error"]["pendingId"]  # AVX renewed: the record is settled (failed, with this reason)
    assert standins.key_vault.latest("merge-target") is None
    assert "merge-target" in standins.key_vault.pending  # the operator's pending operation is left as it was


# -- 5. AVX's ids are bounded ------------------------------------------------------------------------------------------


def test_a_100_kb_avx_resource_id_is_a_bad_answer_the_record_is_settled_and_nothing_is_imported_twice(
    standins: StandIns, call_webhook: Any, functions: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    item = standins.avx.add_certificate(_unique("huge"))
    original = standins.avx._renew

    def huge_id(request: RecordedRequest) -> Response:
        answer = original(request)
        document = json.loads(answer.body)
        document["response"]["resourceId"] = document["response"]["newCertificateId"] = "r" * 100_000
        return Response.json(document)

    monkeypatch.setattr(standins.avx, "_renew", huge_id)
    status, answer = call_webhook({"resourceId": item.resource_id})
    assert status == 202, answer
    assert len(json.dumps(answer)) < 4096
    assert "AVX_BAD_RESPONSE" in json.dumps(answer)
    record = app_context.pending_store().get(answer["pendingId"])
    assert record is not None and record.state == "pending", record
    for _ in range(2):
        time_passes(20)
        run_complete_pending(functions)
    assert len(imports(standins)) <= 1
    assert len(standins.avx.renew_calls()) == 1


# -- 6. the idempotency fingerprint ignores the function key ------------------------------------------------------------


def test_a_retry_after_moving_the_function_key_to_the_header_gets_the_first_answer(
    standins: StandIns, call_webhook: Any
) -> None:
    item = standins.avx.add_certificate(_unique("keyrot"))
    key = {"Idempotency-Key": f"rot-{uuid.uuid4().hex}"}
    first = call_webhook({"resourceId": item.resource_id}, params={"code": "old-function-key"}, headers=key)
    again = call_webhook(
        {"resourceId": item.resource_id}, params={"_": "cache-buster"}, headers={**key, "x-functions-key": "new-key"}
    )
    assert first[0] == 200, first
    assert again == first
    assert len(standins.avx.renew_calls()) == 1


# -- 7. queue messages --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        '{"v": 1, "pendingId": "' + "a" * 32 + '", "request": {"resourceId": "x"}, "n": ' + "9" * 5000 + "}",
        '{"v": true, "pendingId": "' + "a" * 32 + '", "request": {"resourceId": "x"}}',
        "[" * 100_000,
    ],
    ids=["5000-digit-integer", "v-true", "deep-nesting"],
)
@pytest.mark.parametrize("poison", [False, True], ids=["queue", "poison"])
def test_a_malformed_queue_message_is_dropped(
    standins: StandIns, functions: dict[str, Any], app_env: dict[str, str], message: str, poison: bool
) -> None:
    deliver(functions, message, poison=poison)  # dropped with an error line: no exception for the host to retry
    assert standins.avx.renew_calls() == []


def test_a_forged_queue_message_never_redirects_a_renewal(
    standins: StandIns, functions: dict[str, Any], app_env: dict[str, str]
) -> None:
    wanted = standins.avx.add_certificate(_unique("wanted"))
    victim = standins.avx.add_certificate(_unique("victim"))
    response, body, queue = post_async(functions, {"resourceId": wanted.resource_id})
    assert response.status_code == 202 and queue.value
    forged = json.loads(queue.value)
    forged["request"]["resourceId"] = victim.resource_id
    forged["request"]["keyVaultCertificateName"] = "victim-target"

    deliver(functions, json.dumps(forged))
    assert standins.avx.renew_calls() == []
    assert victim.renewals == []

    deliver(functions, queue.value)  # the genuine message still renews what the record says
    assert len(wanted.renewals) == 1 and victim.renewals == []
    record = status_of(functions, body["pendingId"])
    assert record["state"] == "renewed", record


# -- 6b. replays answer with the record's real state --------------------------------------------------------------------


def test_a_stored_renewal_is_never_reported_pending_to_a_repeat(
    standins: StandIns, call_webhook: Any, functions: dict[str, Any]
) -> None:
    item = standins.avx.add_certificate(_unique("replay"))
    standins.key_vault.fail_next(
        10, Response.json({"error": {"code": "Throttled", "message": "x"}}, status=503), operation="import"
    )
    headers = {"Idempotency-Key": f"replay-{uuid.uuid4().hex}"}
    first = call_webhook({"resourceId": item.resource_id}, headers=headers)
    assert first[0] == 202, first
    standins.key_vault.reset_records()
    time_passes(20)
    run_complete_pending(functions)
    assert status_of(functions, first[1]["pendingId"])["state"] == "renewed"
    again = call_webhook({"resourceId": item.resource_id}, headers=headers)
    assert again[1]["status"] == "renewed", again
    assert len(standins.avx.renew_calls()) == 1


@pytest.mark.parametrize(
    "body",
    [b'{"response": {"response": {"objects": [{"n": ' + b"9" * 5000 + b"}]}}}", b"[" * 100_000],
    ids=["5000-digit-integer", "deep-nesting"],
)
def test_an_unreadable_avx_search_answer_is_no_bare_500(
    standins: StandIns, call_webhook: Any, functions: dict[str, Any], monkeypatch: pytest.MonkeyPatch, body: bytes
) -> None:
    """AVX refuses; the search that names the refused certificate in the failure event answers garbage."""
    from tests.standins.avx import page_error

    item = standins.avx.add_certificate(_unique("search"))
    standins.avx.script(page_error("CERT-VWF-0006"))
    monkeypatch.setattr(
        standins.avx, "_search", lambda request: Response(200, body, {"Content-Type": "application/json"})
    )
    status, answer = call_webhook({"resourceId": item.resource_id})
    assert 400 <= status < 500 and answer["error"]["code"] == "CERT-VWF-0006", answer


def test_a_chain_of_thousands_of_certificates_is_refused_quickly() -> None:
    import time

    from shared.core.certificates import CertificateParseError, order_leaf_first

    chain = [certs.issue_certificate("chain.contoso.com").certificate] * 7000
    started = time.monotonic()
    with pytest.raises(CertificateParseError):
        order_leaf_first(chain)
    assert time.monotonic() - started < 0.5


@pytest.mark.parametrize(
    "message",
    [
        {"v": True, "pendingId": "a" * 32, "request": {"resourceId": "x"}},
        {"v": 1.0, "pendingId": "a" * 32, "request": {"resourceId": "x"}},
        {"v": 1, "pendingId": "a" * 32, "request": {"resourceId": "x"}, "oneTimePassword": "yes"},
    ],
    ids=["v-true", "v-float", "one-time-password-text"],
)
def test_queue_message_types_are_strict(message: dict[str, Any]) -> None:
    from shared.appviewx.queue_message import BadQueueMessage, read_queue_message

    with pytest.raises(BadQueueMessage):
        read_queue_message(json.dumps(message))


def test_an_async_renewal_keeps_its_caller_in_its_events(
    standins: StandIns, functions: dict[str, Any], app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.eventlog import recording

    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")
    app_context.reset()
    item = standins.avx.add_certificate(_unique("asynccaller"))
    response, _, queue = post_async(
        functions, {"resourceId": item.resource_id}, headers={"X-MS-CLIENT-PRINCIPAL-NAME": "cmdb-workflow"}
    )
    assert response.status_code == 202 and queue.value
    with recording() as events:
        deliver(functions, queue.value)
    (renewed,) = events.named("CertificateRenewed")
    assert renewed["caller"] == "cmdb-workflow"


def test_all_avx_calls_of_a_sync_request_share_one_deadline(
    standins: StandIns, call_webhook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The renew and the search that names a refused certificate end together within the request's AVX time (in
    production 200 s, under Azure's 230 s cut), not each within AVX_TIMEOUT_SECONDS."""
    import time

    from tests.standins.avx import page_error

    monkeypatch.setenv("AVX_TIMEOUT_SECONDS", "5")
    monkeypatch.setattr("shared.appviewx.avx_deadline.SYNC_AVX_SECONDS", 3.0)
    app_context.reset()
    item = standins.avx.add_certificate(_unique("deadline"))
    refusal = page_error("CERT-VWF-0006")
    standins.avx.script(Response(refusal.status, refusal.body, refusal.headers, delay=1.5))
    original_search = standins.avx._search

    def slow_search(request: RecordedRequest) -> Response:
        time.sleep(4.0)
        return original_search(request)

    monkeypatch.setattr(standins.avx, "_search", slow_search)
    started = time.monotonic()
    status, answer = call_webhook({"resourceId": item.resource_id})
    elapsed = time.monotonic() - started
    assert 400 <= status < 500 and answer["error"]["code"] == "CERT-VWF-0006", answer
    assert elapsed < 4.5, elapsed


@pytest.mark.parametrize(
    ("shape", "key_vault_requests"),
    [("resourceId", 2), ("resourceId+name", 2), ("commonName+serial", 2)],
)
def test_key_vault_requests_of_a_warm_webhook_call(
    standins: StandIns, call_webhook: Any, shape: str, key_vault_requests: int
) -> None:
    """Issue 28 counted 1 AVX + 1 Key Vault request per warm call; the ownership check adds one GET of the current
    version: before AVX when the target name is known then (given, or derived from commonName; the store reuses it),
    else before the import (the name derived from the renewed certificate could be anyone's)."""
    warm = standins.avx.add_certificate(_unique("warm"))
    assert call_webhook({"resourceId": warm.resource_id})[0] == 200  # token, challenge and connections are warm now
    item = standins.avx.add_certificate(_unique("count"))
    body: dict[str, Any] = {
        "resourceId": {"resourceId": item.resource_id},
        "resourceId+name": {"resourceId": item.resource_id, "keyVaultCertificateName": f"n-{uuid.uuid4().hex[:8]}"},
        "commonName+serial": {"commonName": item.common_name, "serialNumber": item.serial_number},
    }[shape]
    standins.key_vault.reset_records()
    standins.avx.reset_records()
    status, answer = call_webhook(body)
    assert status == 200, answer
    assert len(standins.key_vault.received()) == key_vault_requests, standins.key_vault.received()
    assert len(standins.avx.received()) == 1


def test_adoptable_certificates_are_validated_naming_the_setting() -> None:
    from shared.core.errors import SettingsError
    from shared.core.settings import Adoption, Settings

    env = {"KEY_VAULT_URL": "https://kv.vault.azure.net", "AVX_ADOPTABLE_CERTIFICATES": "shop, legacy=ops@contoso.com"}
    assert Settings(env).key_vault.adoptable == (Adoption("shop"), Adoption("legacy", "ops@contoso.com"))
    for bad in ("bad name!", "shop=", "shop=" + "x" * 300):
        with pytest.raises(SettingsError, match="AVX_ADOPTABLE_CERTIFICATES"):
            _ = Settings({**env, "AVX_ADOPTABLE_CERTIFICATES": bad}).key_vault
