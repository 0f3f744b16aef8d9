"""Notifications (shared.notify): the format chosen from the URL, each format's shape, and delivery end to end —
a renewal made to fail through `function_app.app`, the message caught by a local receiver on 127.0.0.1 — with
retries, a receiver that is down, slow or failing (the webhook's answer unchanged and on time), and no secret."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import azure.functions as func
import pytest
import requests

from shared import context as app_context
from shared.core import telemetry
from shared.core.errors import SettingsError
from shared.core.events import Event, Source
from shared.core.settings import Settings
from shared.core.telemetry import emit_event, invocation
from shared.notify import delivery as notify
from shared.notify.delivery import Notifier
from shared.notify.formats import build_message, message_format
from shared.notify.install import install_notifications, uninstall_notifications
from tests.standins.avx import page_error
from tests.standins.receiver import ReceiverStandIn, busy, dropped, server_error, slow
from tests.standins.stack import AVX_PASSWORD, REPO_ROOT, SENTINELS, FakeContext, StandIns, free_port

SIG = "Receiver-Sig-Q9"  # the receiver URL's `sig`: a webhook URL's secret, never to be logged
FAILED_ATTRIBUTES: dict[str, Any] = {
    "invocationId": "inv-1",
    "source": "appviewx",
    "certificateName": "www.contoso.com",
    "reason": "OPEN_WORK_ORDERS_FOUND",
    "message": "Since requested certificate's work order is in progress, cannot initiate another action",
    "httpStatus": 417,
}
NEAR_ATTRIBUTES: dict[str, Any] = {
    "invocationId": "inv-2",
    "source": "rcl",
    "certificateName": "soon.contoso.com",
    "certificateId": "42",
    "expiryDate": "2030-01-02T03:04:05Z",
    "daysLeft": 4,
}


# -- fixtures ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def receiver() -> Iterator[ReceiverStandIn]:
    server = ReceiverStandIn().start()
    yield server
    server.stop()


@pytest.fixture
def clean_receiver(receiver: ReceiverStandIn) -> Iterator[ReceiverStandIn]:
    receiver.reset()
    yield receiver
    for body in receiver.bodies():
        for sentinel in SENTINELS:
            assert sentinel.encode() not in body, "a secret reached a notification"
    receiver.reset()


@pytest.fixture
def no_notifier() -> Iterator[None]:
    """The sink list is process-wide: whatever a test installs is gone after it."""
    uninstall_notifications()
    before = list(telemetry._sinks)
    yield
    uninstall_notifications()
    assert not any(isinstance(s, Notifier) for s in telemetry._sinks), "a notifier outlived its test"
    assert telemetry._sinks == before


Install = Callable[..., Notifier]


@pytest.fixture
def notifications(
    app_env: dict[str, str], clean_receiver: ReceiverStandIn, monkeypatch: pytest.MonkeyPatch, no_notifier: None
) -> Install:
    """Point NOTIFY_WEBHOOK_URL at the receiver (optionally forcing a format) and install the notifier."""

    def install(fmt: str | None = None, url: str | None = None) -> Notifier:
        monkeypatch.setenv("NOTIFY_WEBHOOK_URL", url or clean_receiver.webhook_url())
        if fmt:
            monkeypatch.setenv("NOTIFY_FORMAT", fmt)
        else:
            monkeypatch.delenv("NOTIFY_FORMAT", raising=False)
        app_context.reset()
        installed = install_notifications(app_context.settings())
        assert installed is not None
        return installed

    return install


def fail_a_renewal(standins: StandIns, call_webhook: Any) -> tuple[float, str]:
    """One webhook renewal that AVX refuses (open work order): 417, and its invocation id."""
    standins.avx.script(page_error("OPEN_WORK_ORDERS_FOUND"))
    started = time.monotonic()
    status, answer = call_webhook({"resourceId": "r1"})
    elapsed = time.monotonic() - started
    assert status == 417, answer
    assert answer["error"]["code"] == "OPEN_WORK_ORDERS_FOUND"  # the webhook's answer is the same with notifications
    return elapsed, call_webhook.last_context.invocation_id


def log_text(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records)


def assert_url_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    text = log_text(caplog)
    assert SIG not in text and "sig=" not in text.replace("sig=[REDACTED]", "")
    assert ReceiverStandIn.path not in "\n".join(r.getMessage() for r in caplog.records if r.name == "certrenew.notify")


# -- the format, a pure function of the URL ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://prod-12.westeurope.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke"
            "?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=x",
            "teams",
        ),
        (
            "https://default0123456789abcdef.01.environment.api.powerplatform.com:443/powerautomate/automations/"
            "direct/workflows/abc/triggers/manual/paths/invoke?api-version=1&sig=x",
            "teams",
        ),
        ("https://contoso.webhook.office.com/webhookb2/a@b/IncomingWebhook/c/d", "teams"),
        ("https://hooks.slack.com/services/T000/B000/XXXX", "slack"),
        ("https://HOOKS.SLACK.COM/services/T000/B000/XXXX", "slack"),
        ("https://letsencryptapi.azure-api.net/notify", "json"),  # API Management: not a Teams workflow
        ("https://alerts.contoso.com/certificates", "json"),
        ("https://notlogic.azure.com/workflows/x", "json"),
        ("https://prod-1.logic.azure.com.evil.example/workflows/x", "json"),
        ("https://hooks.slack.com.evil.example/services/x", "json"),
        ("http://127.0.0.1:8080/hooks", "json"),
        ("not a url", "json"),
    ],
)
def test_format_is_chosen_by_host(url: str, expected: str) -> None:
    assert message_format(url) == expected


def test_format_override_wins_and_is_checked() -> None:
    assert message_format("http://127.0.0.1:1/x", "teams") == "teams"
    assert message_format("https://hooks.slack.com/services/x", "JSON") == "json"
    assert message_format("https://prod-1.westus.logic.azure.com/x", "slack") == "slack"
    with pytest.raises(ValueError):
        message_format("https://x.example", "email")


def test_only_scheme_and_host_of_a_url_are_shown() -> None:
    url = "https://prod-1.westus.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke?sig=SECRETSIG"
    assert notify.describe_url(url) == "https://prod-1.westus.logic.azure.com:443"
    assert notify.describe_url("https://hooks.slack.com/services/T0/B0/SECRETPATH") == "https://hooks.slack.com"


# -- the shapes --------------------------------------------------------------------------------------------------------
def card_of(message: dict[str, Any]) -> dict[str, Any]:
    assert message["type"] == "message"
    (attachment,) = message["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard"
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert tuple(int(p) for p in card["version"].split(".")) >= (1, 4)
    for element in card["body"]:
        assert element["type"] in ("TextBlock", "FactSet")
    return card


def card_facts(message: dict[str, Any]) -> dict[str, str]:
    card = card_of(message)
    (fact_set,) = [e for e in card["body"] if e["type"] == "FactSet"]
    return {f["title"]: f["value"] for f in fact_set["facts"]}


def card_text(message: dict[str, Any]) -> str:
    return " ".join(e["text"] for e in card_of(message)["body"] if e["type"] == "TextBlock")


def test_teams_card_for_a_failure() -> None:
    message = build_message("teams", "CertificateRenewalFailed", FAILED_ATTRIBUTES)
    facts = card_facts(message)
    assert facts == {
        "Certificate": "www.contoso.com",
        "Source": "AppViewX",
        "Reason": "OPEN_WORK_ORDERS_FOUND",
        "Message": FAILED_ATTRIBUTES["message"],
        "Invocation": "inv-1",
    }
    text = card_text(message)
    assert "renewal failed" in text and "www.contoso.com" in text and "OPEN_WORK_ORDERS_FOUND" in text
    assert "417" not in json.dumps(message)  # only the listed attributes are shown


def test_teams_card_for_near_expiry() -> None:
    message = build_message("teams", "CertificateNearExpiry", NEAR_ATTRIBUTES)
    facts = card_facts(message)
    assert facts["Certificate"] == "soon.contoso.com"
    assert facts["Source"].startswith("RCL")
    assert facts["Expires"] == "2030-01-02T03:04:05Z" and facts["Days left"] == "4"
    assert "Reason" not in facts
    assert "near expiry" in card_text(message) and "4 day(s)" in card_text(message)


def test_slack_blocks() -> None:
    attributes = {**FAILED_ATTRIBUTES, "certificateName": "a<b>&c.contoso.com"}
    message = build_message("slack", "CertificateRenewalFailed", attributes)
    assert set(message) == {"text", "blocks"}
    assert "a&lt;b&gt;&amp;c.contoso.com" in message["text"] and "OPEN_WORK_ORDERS_FOUND" in message["text"]
    types = [b["type"] for b in message["blocks"]]
    assert types == ["header", "section", "section", "context"]
    header = message["blocks"][0]["text"]
    assert header["type"] == "plain_text" and len(header["text"]) <= 150
    fields = {f["text"].split("\n", 1)[0]: f["text"].split("\n", 1)[1] for f in message["blocks"][2]["fields"]}
    assert fields["*Certificate*"] == "a&lt;b&gt;&amp;c.contoso.com"
    assert fields["*Source*"] == "AppViewX" and fields["*Reason*"] == "OPEN_WORK_ORDERS_FOUND"
    assert all(f["type"] == "mrkdwn" and len(f["text"]) <= 2000 for f in message["blocks"][2]["fields"])

    near = build_message("slack", "CertificateNearExpiry", NEAR_ATTRIBUTES)
    assert "soon.contoso.com" in near["text"] and "4 day(s)" in near["text"]


def test_plain_json() -> None:
    assert build_message("json", "CertificateRenewalFailed", FAILED_ATTRIBUTES) == {
        "event": "CertificateRenewalFailed",
        "source": "appviewx",
        "certificateName": "www.contoso.com",
        "reason": "OPEN_WORK_ORDERS_FOUND",
        "message": FAILED_ATTRIBUTES["message"],
        "expiryDate": None,
        "daysLeft": None,
        "invocationId": "inv-1",
        "host": None,
        "servedThumbprint": None,
        "expectedThumbprint": None,
        "consumerId": None,
        "consumerType": None,
        "pinnedVersion": None,
        "currentVersion": None,
        "app": "certrenew",
    }
    near = build_message("json", "CertificateNearExpiry", NEAR_ATTRIBUTES)
    assert (near["expiryDate"], near["daysLeft"], near["reason"], near["source"]) == (
        "2030-01-02T03:04:05Z",
        4,
        None,
        "rcl",
    )


def test_a_run_failure_without_a_certificate_still_reads() -> None:
    message = build_message("teams", "CertificateRenewalFailed", {"source": "rcl", "reason": "RCL_UNAVAILABLE"})
    assert card_facts(message)["Certificate"] == "(not identified)"


@pytest.mark.parametrize("fmt", ["teams", "slack", "json"])
def test_no_secret_and_nothing_beyond_the_listed_attributes(fmt: str) -> None:
    attributes = {
        **FAILED_ATTRIBUTES,
        "message": f"AVX said: password={AVX_PASSWORD} Authorization: Bearer eyJhbGciOi.eyJzdWIiOi.sig",
        "avxPassword": AVX_PASSWORD,
        "exception": f"Traceback ... {AVX_PASSWORD}",
    }
    text = json.dumps(build_message(fmt, "CertificateRenewalFailed", attributes))
    assert AVX_PASSWORD not in text and "eyJhbGciOi" not in text and "Traceback" not in text


# -- settings ----------------------------------------------------------------------------------------------------------
def test_settings_group() -> None:
    settings = Settings({"NOTIFY_WEBHOOK_URL": f"https://prod-1.westus.logic.azure.com/wf?sig={SIG}"})
    assert settings.notify.webhook_url == f"https://prod-1.westus.logic.azure.com/wf?sig={SIG}"
    assert settings.notify.format is None
    assert SIG not in repr(settings.notify)
    assert f"https://prod-1.westus.logic.azure.com/wf?sig={SIG}" in settings.secret_values()
    assert Settings({}).notify.webhook_url is None
    assert (
        Settings({"NOTIFY_WEBHOOK_URL": "http://localhost:7071/x", "NOTIFY_FORMAT": "Slack"}).notify.format == "slack"
    )
    assert Settings({"NOTIFY_WEBHOOK_URL": "http://127.0.0.1:7071/x"}).notify.webhook_url


@pytest.mark.parametrize(
    "env",
    [
        {"NOTIFY_WEBHOOK_URL": f"http://alerts.contoso.com/x?sig={SIG}"},  # plain http off this machine
        {"NOTIFY_WEBHOOK_URL": f"ftp://alerts.contoso.com/x?sig={SIG}"},
        {"NOTIFY_WEBHOOK_URL": f"alerts.contoso.com/x?sig={SIG}"},
        {"NOTIFY_WEBHOOK_URL": f"https://[::1/x?sig={SIG}"},
        {"NOTIFY_WEBHOOK_URL": f"https://hooks.slack.com/{SIG}", "NOTIFY_FORMAT": "email"},
    ],
)
def test_invalid_settings_are_named_without_the_url(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError) as raised:
        _ = Settings(env).notify
    assert "NOTIFY_" in raised.value.message
    assert SIG not in raised.value.message


def test_install_once_replace_and_remove(
    no_notifier: None, clean_receiver: ReceiverStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    url = clean_receiver.webhook_url()
    first = install_notifications(Settings({"NOTIFY_WEBHOOK_URL": url}))
    again = install_notifications(Settings({"NOTIFY_WEBHOOK_URL": url}))
    assert first is not None and again is first and first.format == "json"
    assert [s for s in telemetry._sinks if isinstance(s, Notifier)] == [first]

    teams = install_notifications(Settings({"NOTIFY_WEBHOOK_URL": url, "NOTIFY_FORMAT": "teams"}))
    assert teams is not first and teams is not None and teams.format == "teams"
    assert [s for s in telemetry._sinks if isinstance(s, Notifier)] == [teams]

    assert install_notifications(Settings({})) is None
    assert not any(isinstance(s, Notifier) for s in telemetry._sinks)

    # Invalid notification settings leave notifications off and say why; they never stop the app.
    assert install_notifications(Settings({"NOTIFY_WEBHOOK_URL": f"http://alerts.contoso.com/?sig={SIG}"})) is None
    assert any("Notifications are off" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    assert SIG not in log_text(caplog)


# -- end to end: a renewal fails through function_app.app -------------------------------------------------------------
def test_teams_card_reaches_the_receiver_once(
    standins: StandIns, call_webhook: Any, notifications: Install, clean_receiver: ReceiverStandIn
) -> None:
    notifications("teams")
    _, invocation_id = fail_a_renewal(standins, call_webhook)

    (message,) = clean_receiver.messages()
    facts = card_facts(message)
    assert facts["Certificate"] == "r1"
    assert facts["Source"] == "AppViewX"
    assert facts["Reason"] == "OPEN_WORK_ORDERS_FOUND"
    assert "work order is in progress" in facts["Message"]
    assert facts["Invocation"] == invocation_id
    (request,) = clean_receiver.received("POST")
    assert request.header("Content-Type") == "application/json"
    assert request.query_one("sig") == SIG  # the URL is used whole, query included


def test_slack_message_reaches_the_receiver_once(
    standins: StandIns, call_webhook: Any, notifications: Install, clean_receiver: ReceiverStandIn
) -> None:
    notifications("slack")
    fail_a_renewal(standins, call_webhook)

    (message,) = clean_receiver.messages()
    assert "r1" in message["text"] and "OPEN_WORK_ORDERS_FOUND" in message["text"]
    fields = " ".join(f["text"] for f in message["blocks"][2]["fields"])
    assert "*Source*\nAppViewX" in fields and "*Reason*\nOPEN_WORK_ORDERS_FOUND" in fields


def test_plain_json_reaches_the_receiver_once(
    standins: StandIns,
    call_webhook: Any,
    notifications: Install,
    clean_receiver: ReceiverStandIn,
    caplog: pytest.LogCaptureFixture,
) -> None:
    notifier = notifications()  # 127.0.0.1 is none of the known hosts: plain JSON
    assert notifier.format == "json"
    _, invocation_id = fail_a_renewal(standins, call_webhook)

    (message,) = clean_receiver.messages()
    assert message["event"] == "CertificateRenewalFailed"
    assert (message["source"], message["certificateName"], message["reason"]) == (
        "appviewx",
        "r1",
        "OPEN_WORK_ORDERS_FOUND",
    )
    assert message["invocationId"] == invocation_id and message["app"] == "certrenew"
    assert any("Notification of CertificateRenewalFailed for r1 sent" in r.getMessage() for r in caplog.records)
    assert_url_not_logged(caplog)


def test_a_renewal_that_succeeds_sends_nothing(
    standins: StandIns, call_webhook: Any, notifications: Install, clean_receiver: ReceiverStandIn
) -> None:
    notifications("teams")
    item = standins.avx.add_certificate("fine.contoso.com")
    status, answer = call_webhook({"resourceId": item.resource_id})
    assert status == 200, answer
    with invocation("inv-other"):
        pending = {"source": Source.APPVIEWX, "certificateName": "x", "reason": "AVX_TIMEOUT"}
        emit_event(Event.RENEWAL_PENDING, pending)
        emit_event(Event.RCL_RENEWAL_RUN_COMPLETED, {"source": Source.RCL, "outcome": "failed", "reason": "X"})
    assert clean_receiver.received() == []


def test_near_expiry_from_the_nightly_check(
    standins: StandIns,
    functions: dict[str, Any],
    notifications: Install,
    clean_receiver: ReceiverStandIn,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RCL_RETRY_DELAY_SECONDS", "0.05")
    notifications()
    standins.rcl.add_certificate("soon.contoso.com", 5)
    standins.rcl.add_certificate("later.contoso.com", 60)

    context = FakeContext("verify_renewals")
    functions["verify_renewals"].get_user_function()(func.timer.TimerRequest(past_due=False), context)

    (message,) = clean_receiver.messages()
    assert message["event"] == "CertificateNearExpiry"
    assert (message["source"], message["certificateName"]) == ("rcl", "soon.contoso.com")
    assert message["daysLeft"] == 4 and message["expiryDate"].endswith("Z")
    assert message["invocationId"] == context.invocation_id


# -- delivery: retries and bounds --------------------------------------------------------------------------------------
def test_throttled_then_failing_then_delivered(
    standins: StandIns,
    call_webhook: Any,
    notifications: Install,
    clean_receiver: ReceiverStandIn,
    caplog: pytest.LogCaptureFixture,
) -> None:
    notifications("teams")
    clean_receiver.script(busy("1"), server_error())
    elapsed, _ = fail_a_renewal(standins, call_webhook)

    bodies = clean_receiver.messages()
    assert len(bodies) == 3 and bodies[0] == bodies[1] == bodies[2]  # the same message, tried three times
    assert card_facts(bodies[0])["Reason"] == "OPEN_WORK_ORDERS_FOUND"
    assert elapsed >= 1.0  # Retry-After: 1 was honoured
    assert elapsed < 10
    assert not any(r.levelno >= logging.WARNING and r.name == "certrenew.notify" for r in caplog.records)


def test_a_dropped_connection_is_retried(
    standins: StandIns, call_webhook: Any, notifications: Install, clean_receiver: ReceiverStandIn
) -> None:
    notifications()
    clean_receiver.script(dropped())
    fail_a_renewal(standins, call_webhook)
    assert len(clean_receiver.messages()) == 2


def test_a_receiver_that_keeps_failing_changes_nothing(
    standins: StandIns,
    call_webhook: Any,
    notifications: Install,
    clean_receiver: ReceiverStandIn,
    caplog: pytest.LogCaptureFixture,
) -> None:
    notifications("slack")
    clean_receiver.always(server_error())
    elapsed, _ = fail_a_renewal(standins, call_webhook)

    assert len(clean_receiver.messages()) == 3  # at most three tries
    assert elapsed < notify.BUDGET_SECONDS
    warnings = [r.getMessage() for r in caplog.records if r.name == "certrenew.notify" and r.levelno == logging.WARNING]
    assert any("HTTP 500" in w and "r1" in w and "127.0.0.1" in w for w in warnings), warnings
    assert_url_not_logged(caplog)


def test_a_receiver_that_is_down_changes_nothing(
    standins: StandIns,
    call_webhook: Any,
    notifications: Install,
    caplog: pytest.LogCaptureFixture,
) -> None:
    notifications(url=f"http://127.0.0.1:{free_port()}/hooks/notify?sig={SIG}")
    elapsed, _ = fail_a_renewal(standins, call_webhook)

    assert elapsed < notify.BUDGET_SECONDS
    warnings = [r.getMessage() for r in caplog.records if r.name == "certrenew.notify" and r.levelno == logging.WARNING]
    assert any("ConnectionError" in w for w in warnings), warnings
    assert_url_not_logged(caplog)


def test_a_receiver_that_hangs_is_cut_off_by_the_budget(
    standins: StandIns,
    call_webhook: Any,
    notifications: Install,
    clean_receiver: ReceiverStandIn,
    caplog: pytest.LogCaptureFixture,
) -> None:
    notifier = notifications()
    notifier.budget_seconds = 1.5  # the default is 15 s; the rule is the same
    clean_receiver.always(slow(30))
    baseline, _ = fail_a_renewal(standins, call_webhook)  # the first call waits out the whole budget

    assert 1.4 < baseline < 1.5 + 3.0
    warnings = [r.getMessage() for r in caplog.records if r.name == "certrenew.notify" and r.levelno == logging.WARNING]
    assert any("failed" in w for w in warnings), warnings

    # The next failure within the minute is not posted now (failing deliveries spent the minute's budget): a dead
    # receiver costs one budget, not one each. It is held, counted, and retried after the next success (issue 30).
    clean_receiver.reset_records()
    elapsed, _ = fail_a_renewal(standins, call_webhook)
    assert clean_receiver.received() == []
    assert elapsed < 1.0
    assert any("held" in r.getMessage() for r in caplog.records if r.name == "certrenew.notify")
    assert len(notifier.backlog) == 1


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class HangingSession:
    """Each attempt takes its whole timeout (connect + read) on the fake clock, then times out."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.timeouts: list[tuple[float, float]] = []

    def request(self, method: str, url: str, *, timeout: tuple[float, float], **kwargs: Any) -> requests.Response:
        self.timeouts.append(timeout)
        self.clock.now += timeout[0] + timeout[1]
        raise requests.ReadTimeout("read timed out")

    def close(self) -> None:
        return None


def test_default_bounds_keep_one_delivery_within_fifteen_seconds() -> None:
    clock = FakeClock()
    session = HangingSession(clock)
    notifier = Notifier(url="https://x.example/hook", session=session, clock=clock, sleep=clock.sleep)  # type: ignore[arg-type]
    assert notifier.timeout == (5.0, 10.0) and notifier.policy.attempts == 3

    delivery = notifier.notify("CertificateRenewalFailed", FAILED_ATTRIBUTES)

    assert not delivery.delivered
    assert clock.now - 1000.0 <= notify.BUDGET_SECONDS
    assert session.timeouts[0] == (5.0, 10.0)
    assert len(session.timeouts) <= 3


def test_failed_notifications_are_tried_once_in_the_minute_then_retried_after_a_success(
    clean_receiver: ReceiverStandIn,
) -> None:
    """Issue 30: a failure no longer drops every notification for a minute. Within the minute each is tried once;
    the failed ones are kept and delivered after the next success, and counted."""
    clock = FakeClock()
    notifier = Notifier(url=clean_receiver.webhook_url(), clock=clock, sleep=lambda s: None)
    try:
        clean_receiver.always(server_error())
        assert not notifier.notify("CertificateRenewalFailed", FAILED_ATTRIBUTES).delivered
        assert len(clean_receiver.messages()) == 3  # the first delivery: three tries
        assert not notifier.notify("CertificateNearExpiry", NEAR_ATTRIBUTES).delivered
        assert len(clean_receiver.messages()) == 4  # within the minute: one try
        assert len(notifier.backlog) == 2

        clean_receiver.always(None)
        other = {**NEAR_ATTRIBUTES, "certificateName": "other.contoso.com"}
        assert notifier.notify("CertificateNearExpiry", other).delivered
        events = [m["event"] for m in clean_receiver.messages()[4:]]
        assert events == ["CertificateNearExpiry", "CertificateRenewalFailed", "CertificateNearExpiry"]
        assert len(notifier.backlog) == 0
        counts = notifier.backlog.counts
        assert (counts["failed"], counts["retried"], counts["delivered"], counts["dropped"]) == (2, 2, 3, 0)
        # Delivered on retry: within the hour they are not sent again.
        assert notifier.notify("CertificateRenewalFailed", FAILED_ATTRIBUTES).skipped
    finally:
        notifier.close()


def test_a_notification_failing_every_try_is_given_up_and_counted(clean_receiver: ReceiverStandIn) -> None:
    clock = FakeClock()
    notifier = Notifier(url=clean_receiver.webhook_url(), clock=clock, sleep=lambda s: None)
    try:
        clean_receiver.always(server_error())
        for _ in range(5):  # the same notification failing again and again (its dedup key is freed each time)
            notifier.notify("CertificateRenewalFailed", FAILED_ATTRIBUTES)
            clock.now += notify.COOLDOWN_SECONDS + 1
        assert notifier.backlog.counts["dropped"] >= 1 and len(notifier.backlog) <= 1
    finally:
        notifier.close()


def test_the_sink_never_raises(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier(url=f"https://x.example/hook?sig={SIG}")

    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"boom https://x.example/hook?sig={SIG}")

    monkeypatch.setattr(notifier, "deliver", explode)
    try:
        notifier("CertificateRenewalFailed", FAILED_ATTRIBUTES)  # no exception
        notifier("CertificateRenewed", FAILED_ATTRIBUTES)  # not notified at all
    finally:
        notifier.close()
    assert any("RuntimeError" in r.getMessage() for r in caplog.records if r.name == "certrenew.notify")
    assert SIG not in log_text(caplog)


# What the app's start-up tells the operator about notifications (the log lines of install_notifications).
WIRING_PROBE = """
import json
import logging
class Lines(logging.Handler):
    lines = []
    def emit(self, record):
        self.lines.append([record.levelname, record.getMessage()])
logging.getLogger("certrenew.notify").addHandler(Lines())
logging.getLogger("certrenew.notify").setLevel(logging.INFO)
import function_app
names = sorted(f.get_function_name() for f in function_app.app.get_functions())
print(json.dumps({"log": Lines.lines, "functions": names}))
"""


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://prod-1.westus.logic.azure.com/workflows/x/triggers/manual/paths/invoke?sig=" + SIG,
            [["INFO", "Notifications on: teams messages to https://prod-1.westus.logic.azure.com"]],
        ),
        # invalid: notifications off (said once, as an error), the app still starts
        ("http://alerts.contoso.com/hook?sig=" + SIG, [["ERROR", "Notifications are off: "]]),
        ("", []),
    ],
)
def test_function_app_installs_the_notifier_at_start_up(url: str, expected: list[list[str]]) -> None:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "SYSTEMROOT")}
    env.update({"PYTHONPATH": str(REPO_ROOT), "NOTIFY_WEBHOOK_URL": url})
    done = subprocess.run(
        [sys.executable, "-c", WIRING_PROBE], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert [level for level, _ in result["log"]] == [level for level, _ in expected], result["log"]
    assert all(line.startswith(start) for (_, line), (_, start) in zip(result["log"], expected, strict=True))
    assert "renew_http" in result["functions"]
    assert SIG not in done.stdout + done.stderr


# -- issue 11: escaped and de-duplicated ---------------------------------------------------------------------------------
def test_caller_markdown_is_escaped_in_the_card(
    standins: StandIns, call_webhook: Any, notifications: Install, clean_receiver: ReceiverStandIn
) -> None:
    notifications("teams")
    standins.avx.script(page_error("OPEN_WORK_ORDERS_FOUND"))
    resource = "[re-authenticate here](https://evil.example/login)\r\n**urgent**\x1b[0m"
    assert call_webhook({"resourceId": resource})[0] == 417
    (message,) = clean_receiver.messages()
    text = json.dumps(message)
    assert "](https://" not in text and "https://evil" not in text
    certificate = card_facts(message)["Certificate"]
    assert certificate.startswith("\\[re-authenticate here\\]\\(https\u200b://evil.example/login\\)")
    assert "\\*\\*urgent\\*\\*" in certificate
    assert not any(ord(c) < 32 for c in certificate)


def test_slack_values_cannot_link_or_format(
    standins: StandIns, call_webhook: Any, notifications: Install, clean_receiver: ReceiverStandIn
) -> None:
    notifications("slack")
    standins.avx.script(page_error("OPEN_WORK_ORDERS_FOUND"))
    assert call_webhook({"resourceId": "<https://evil.example|click> *now*"})[0] == 417
    (message,) = clean_receiver.messages()
    text = json.dumps(message, ensure_ascii=False)
    assert "<https://" not in text and "https://evil" not in text and " *now* " not in text


def test_one_notification_per_certificate_and_reason_an_hour(
    standins: StandIns, call_webhook: Any, notifications: Install, clean_receiver: ReceiverStandIn
) -> None:
    notifier = notifications("json")
    now = [1000.0]
    notifier.clock = lambda: now[0]
    for _ in range(5):
        fail_a_renewal(standins, call_webhook)
    assert len(clean_receiver.messages()) == 1
    standins.avx.script(page_error("CERT-VWF-0006"))
    assert call_webhook({"resourceId": "r1"})[0] in (400, 404, 406, 417)
    assert len(clean_receiver.messages()) == 2  # another reason is another message
    now[0] += notify.DEDUP_SECONDS + 1
    fail_a_renewal(standins, call_webhook)
    assert len(clean_receiver.messages()) == 3  # an hour later the same one again
