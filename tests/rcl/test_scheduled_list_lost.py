"""Issue 30: when RCL scheduled renewals but their list could not be written, the follow-up check will not look at
them; that is a failure someone must hear of (a notified CertificateRenewalFailed), not only a failed run event."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from shared import context as app_context
from shared.core.errors import StateStoreError
from tests.eventlog import Events
from tests.rcl import test_rcl_timer
from tests.rcl.test_rcl_timer import run
from tests.standins.base import Response
from tests.standins.stack import StandIns
from tests.standins.tableproxy import CountingProxy

events = test_rcl_timer.events
rcl_env = test_rcl_timer.rcl_env


@pytest.fixture
def proxied(rcl_env: dict[str, str], azurite: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[CountingProxy]:
    proxy = CountingProxy(azurite.port).start()
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string.replace(f":{azurite.port}/", f":{proxy.port}/"))
    app_context.reset()
    yield proxy
    proxy.stop()


def test_a_scheduled_list_that_cannot_be_written_is_a_notified_failure(
    standins: StandIns, functions: dict[str, Any], proxied: CountingProxy, events: Events
) -> None:
    standins.rcl.add_certificate("lost-list.contoso.com", 5)
    standins.rcl.add_certificate("lost-too.contoso.com", 6)
    error = {"odata.error": {"code": "InternalError", "message": {"lang": "en-US", "value": "injected"}}}
    proxied.fail_next(20, Response.json(error, status=500), kind="batch")  # the list is written in one batch

    with pytest.raises(StateStoreError):
        run(functions, "renew_timer")

    (failed,) = events.named("CertificateRenewalFailed")
    assert failed["source"] == "rcl" and failed["reason"] == "SCHEDULED_NOT_RECORDED"
    assert "lost-list.contoso.com" in failed["certificateName"] and "lost-too.contoso.com" in failed["message"]
    assert events.named("RclRenewalRunCompleted")[0]["outcome"] == "failed"
