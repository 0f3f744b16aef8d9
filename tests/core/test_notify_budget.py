"""The global notification budget: at most NOTIFY_BUDGET messages per 10-minute window, per instance
and shared by every instance through the table; the rest are held back and one digest says how many, with the KQL to
see them. The renewal events themselves are never held back (they are telemetry)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest

from shared import context as app_context
from shared.core import telemetry
from shared.core.events import Event, Source
from shared.core.telemetry import emit_event
from shared.notify.delivery import Notifier
from shared.notify.install import install_notifications, notifier_for, uninstall_notifications
from tests.standins.receiver import ReceiverStandIn
from tests.standins.stack import SENTINELS, FakeContext

BUDGET = 20


class WallClock:
    """The notifier's wall clock, moved by the test (the window is 10 minutes of it)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 5, 9, 0, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="module")
def receiver() -> Iterator[ReceiverStandIn]:
    server = ReceiverStandIn().start()
    yield server
    server.stop()


@pytest.fixture
def budget_env(
    app_env: dict[str, str], receiver: ReceiverStandIn, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ReceiverStandIn]:
    receiver.reset()
    monkeypatch.setenv("NOTIFY_WEBHOOK_URL", receiver.webhook_url())
    monkeypatch.setenv("NOTIFY_FORMAT", "json")
    monkeypatch.setenv("NOTIFY_BUDGET", str(BUDGET))
    app_context.reset()
    uninstall_notifications()
    yield receiver
    uninstall_notifications()
    assert not any(isinstance(s, Notifier) for s in telemetry._sinks)
    for body in receiver.bodies():
        for sentinel in SENTINELS:
            assert sentinel.encode() not in body
    receiver.reset()


def failing_renewals(count: int, clock: WallClock, prefix: str = "c", instances: list[Notifier] | None = None) -> None:
    """`count` renewals of different certificates failing within the window (as a caller with a function key could
    cause), spread over its 10 minutes; with `instances`, each event is seen by one instance in turn."""
    step = timedelta(seconds=590 / count)
    for number in range(count):
        attributes = {
            "source": Source.APPVIEWX,
            "certificateName": f"{prefix}{number}.contoso.com",
            "reason": "AVX_CERTIFICATE_NOT_FOUND",
            "message": "AppViewX lists no such certificate",
        }
        if instances:
            instances[number % len(instances)](Event.RENEWAL_FAILED, attributes)
        else:
            emit_event(Event.RENEWAL_FAILED, attributes)
        clock.now += step


def run_complete_pending(functions: dict[str, Any]) -> None:
    timer = func.timer.TimerRequest(past_due=False)
    functions["complete_pending"].get_user_function()(timer, FakeContext("complete_pending"))


def digest_of(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if m.get("event") == Event.NOTIFICATIONS_HELD]


def test_a_thousand_failing_renewals_in_ten_minutes_send_the_budget_and_one_digest(
    budget_env: ReceiverStandIn, functions: dict[str, Any]
) -> None:
    notifier = install_notifications(app_context.settings())
    assert notifier is not None
    clock = WallClock()
    notifier.wall_clock = clock

    failing_renewals(1000, clock)
    assert len(budget_env.messages()) == BUDGET  # the rest held back while the window lasts

    clock.now += timedelta(minutes=10)  # the window is over: the next timer run sends the digest
    run_complete_pending(functions)
    run_complete_pending(functions)  # a second run sends no second digest
    messages = budget_env.messages()
    assert len(messages) <= BUDGET + 1
    (digest,) = digest_of(messages)
    assert "980" in digest["message"]
    assert "customEvents" in digest["message"] and "CertificateRenewalFailed" in digest["message"]


def test_the_budget_is_shared_by_every_instance_through_the_table(budget_env: ReceiverStandIn) -> None:
    settings = app_context.settings()
    clock = WallClock()
    instances = [notifier for notifier in (notifier_for(settings), notifier_for(settings)) if notifier]
    try:
        for instance in instances:
            instance.wall_clock = clock
        failing_renewals(300, clock, instances=instances)
        assert len(budget_env.messages()) == BUDGET  # not BUDGET per instance
        clock.now += timedelta(minutes=10)
        for instance in instances:
            instance.flush_digest()
        messages = budget_env.messages()
        (digest,) = digest_of(messages)
        assert len(messages) == BUDGET + 1
        assert "280" in digest["message"]
    finally:
        for instance in instances:
            instance.close()


def test_the_budget_holds_per_instance_when_the_table_is_down(
    budget_env: ReceiverStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.standins.stack import unreachable_storage

    monkeypatch.setenv("AzureWebJobsStorage", unreachable_storage())
    app_context.reset()
    notifier = install_notifications(app_context.settings())
    assert notifier is not None
    clock = WallClock()
    notifier.wall_clock = clock
    failing_renewals(60, clock, prefix="down")
    assert len(budget_env.messages()) == BUDGET
    clock.now += timedelta(minutes=10)
    notifier.flush_digest()
    (digest,) = digest_of(budget_env.messages())
    assert "40" in digest["message"]


def test_the_digest_kql_is_one_query_over_the_window() -> None:
    from shared.notify.budget import held_back_kql
    from shared.notify.delivery import NOTIFIED_EVENTS

    start, end = datetime(2026, 12, 5, 9, 0, tzinfo=UTC), datetime(2026, 12, 5, 9, 10, tzinfo=UTC)
    query = held_back_kql(start, end, NOTIFIED_EVENTS)
    assert query.startswith("customEvents") and "datetime(2026-12-05T09:00:00Z)" in query
    assert '"CertificateRenewalFailed"' in query and json.dumps(query)
