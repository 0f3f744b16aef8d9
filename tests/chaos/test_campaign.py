"""The fault campaign (issue 24, tests/chaos/campaign.py): CI runs a short seed set; `bash dev.sh chaos N` runs N
seeds of a longer campaign (CHAOS_SEEDS / CHAOS_STEPS / CHAOS_FIRST_SEED). Each seed prints its report: the seed,
the operations, the faults injected per kind and each invariant."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from shared.core.telemetry import add_event_sink, remove_event_sink
from shared.notify.install import install_notifications, uninstall_notifications
from tests.chaos.campaign import FAULT_KINDS, Campaign
from tests.standins.receiver import ReceiverStandIn
from tests.standins.stack import StandIns
from tests.standins.tableproxy import CountingProxy

# Chosen so that together they inject every kind not deferred (one worker kill among them).
CI_SEEDS = (140, 198, 353)
CI_STEPS = 12
SEEDS = (
    tuple(
        range(
            int(os.environ.get("CHAOS_FIRST_SEED", "1000")),
            int(os.environ.get("CHAOS_FIRST_SEED", "1000")) + int(os.environ["CHAOS_SEEDS"]),
        )
    )
    if os.environ.get("CHAOS_SEEDS")
    else CI_SEEDS
)
STEPS = int(os.environ.get("CHAOS_STEPS", str(CI_STEPS)))


@pytest.fixture(scope="module")
def receiver() -> Iterator[ReceiverStandIn]:
    server = ReceiverStandIn().start()
    yield server
    server.stop()


@pytest.fixture
def chaos_env(
    table_proxy: CountingProxy, receiver: ReceiverStandIn, monkeypatch: pytest.MonkeyPatch
) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    from shared import context as app_context

    monkeypatch.setenv("AVX_TIMEOUT_SECONDS", "2")  # an AVX timeout costs 2 s, not 20
    monkeypatch.setenv("NOTIFY_WEBHOOK_URL", receiver.webhook_url())
    monkeypatch.setenv("NOTIFY_FORMAT", "json")
    app_context.reset()
    receiver.reset()
    install_notifications(app_context.settings())
    events: list[tuple[str, dict[str, Any]]] = []

    def sink(name: str, attributes: dict[str, Any]) -> None:
        events.append((str(name), attributes))

    add_event_sink(sink)
    yield events
    remove_event_sink(sink)
    uninstall_notifications()


@pytest.mark.parametrize("seed", SEEDS)
def test_fault_campaign(
    seed: int,
    standins: StandIns,
    functions: dict[str, Any],
    table_proxy: CountingProxy,
    receiver: ReceiverStandIn,
    chaos_env: list[tuple[str, dict[str, Any]]],
) -> None:
    campaign = Campaign(seed, STEPS, standins, functions, table_proxy, receiver, events=chaos_env)
    if os.environ.get("CHAOS_ALL_KINDS"):  # the deferred kinds too (to see what they still break)
        campaign.kinds = FAULT_KINDS
    report = campaign.run()
    print("\n" + report.text())
    assert report.held, report.text()
