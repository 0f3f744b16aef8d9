"""Webhook admission without HTTP (`shared.appviewx.admission`): the checks that answer before anything is opened.

Pure-logic checks (no stand-ins): every service is a factory that fails the test when called, which proves these
rejections open no store and call nothing. The HTTP path, with its stand-ins, is covered by test_webhook.py."""

from __future__ import annotations

import json
from typing import Any, NoReturn

from shared.appviewx.admission import AdmissionServices, Admitted, Reply, WebhookRequest, admit
from shared.appviewx.validation import MAX_BODY_BYTES
from shared.core.settings import WebhookSettings


def _never(*_: Any) -> NoReturn:
    raise AssertionError("admission opened a service it did not need")


def services(webhook: WebhookSettings | None = None) -> AdmissionServices:
    settings = webhook or WebhookSettings()
    return AdmissionServices(webhook=lambda: settings, claims=_never, records=_never, replays=_never, pipeline=_never)


BODY = json.dumps({"commonName": "api.contoso.com", "serialNumber": "0A1B"}).encode()


def test_an_oversized_body_is_refused_before_the_settings_are_read() -> None:
    request = WebhookRequest(b"x" * (MAX_BODY_BYTES + 1), {}, {}, "inv-1")
    answer = admit(request, AdmissionServices(_never, _never, _never, _never, _never))
    assert isinstance(answer, Reply) and answer.status == 413
    assert answer.body["error"]["code"] == "PAYLOAD_TOO_LARGE" and answer.body["invocationId"] == "inv-1"


def test_a_malformed_idempotency_key_is_refused_without_claiming_it() -> None:
    answer = admit(WebhookRequest(BODY, {"Idempotency-Key": "has space"}, {}, "inv-2"), services())
    assert isinstance(answer, Reply) and answer.status == 400
    assert answer.body["error"]["code"] == "INVALID_REQUEST"


def test_an_unsigned_request_is_refused_when_a_secret_is_set() -> None:
    answer = admit(WebhookRequest(BODY, {}, {}, None), services(WebhookSettings(hmac_secret="s" * 32)))
    assert isinstance(answer, Reply) and answer.status == 401


def test_a_valid_request_is_admitted_sync_unless_it_prefers_async_and_a_queue_is_there() -> None:
    admitted = admit(WebhookRequest(BODY, {"Prefer": "respond-async"}, {}, "inv-3"), services())
    assert isinstance(admitted, Admitted) and not admitted.respond_async and admitted.key is None
    assert admitted.command.avx.common_name == "api.contoso.com"
    queued = admit(WebhookRequest(BODY, {"Prefer": "respond-async"}, {}, "inv-4", can_queue=True), services())
    assert isinstance(queued, Admitted) and queued.respond_async
