"""Upstreams are bounded (issue 11, point 4; issue 18, finding 8): every outbound call has a total deadline, not a
per-read timeout, and answers are read streamed up to a maximum size. Driven through `function_app.app` against the
AVX stand-in and the notification receiver, which can trickle an answer or send a huge one without holding it. The
rules themselves (Retry-After, backoff, what is retried) are unit-tested in test_outbound_rules.py."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from shared import context as app_context
from tests.core import test_notify
from tests.core.test_notify import Install, fail_a_renewal
from tests.standins.base import Response
from tests.standins.receiver import ReceiverStandIn
from tests.standins.stack import StandIns

# The notification tests' fixtures.
receiver = test_notify.receiver
clean_receiver = test_notify.clean_receiver
no_notifier = test_notify.no_notifier
notifications = test_notify.notifications

MIB = 1024 * 1024


def peak_memory_of(call: Callable[[], Any]) -> tuple[Any, float]:
    """What `call` returned and the most memory it held at once beyond what existed before, in MiB."""
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        result = call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, (peak - before) / MIB


# -- AVX ----------------------------------------------------------------------------------------------------------------


def test_a_trickling_avx_answer_ends_within_the_timeout_overall(
    standins: StandIns, call_webhook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AVX_TIMEOUT_SECONDS", "2")
    app_context.reset()
    # A well-formed answer, one byte a second: each read is quick, the whole would take minutes.
    standins.avx.script(Response(200, b'{"message": "ok"}' + b" " * 12, trickle=1))
    started = time.monotonic()
    status, answer = call_webhook({"resourceId": "r1"})
    elapsed = time.monotonic() - started
    assert elapsed < 2 + 2.0, f"the AVX call took {elapsed:.1f} s with AVX_TIMEOUT_SECONDS=2"
    assert status == 202 and answer["reason"] == "AVX_TIMEOUT"  # sent, so kept pending and never sent again
    assert len(standins.avx.renew_calls()) == 1


@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "chunked"])
def test_a_40_mb_avx_answer_is_refused_without_loading_it(
    standins: StandIns, call_webhook: Any, declare_length: bool
) -> None:
    standins.avx.script(Response.huge_json_array(40 * MIB, declare_length=declare_length))
    (status, answer), peak = peak_memory_of(lambda: call_webhook({"resourceId": "r1"}))
    assert peak < 30, f"the webhook call held {peak:.1f} MiB for a 40 MB AVX answer"
    # AVX may have renewed before its answer grew too large: the renewal is kept pending, never lost (issue 10).
    assert (status, answer["status"], answer["reason"]) == (202, "pending", "AVX_BAD_RESPONSE"), answer
    assert "too large" in answer["message"]
    assert len(standins.avx.renew_calls()) == 1


def test_avx_error_text_is_truncated_and_stripped_of_control_characters(standins: StandIns, call_webhook: Any) -> None:
    hostile = "Renewal refused\x1b[31m\r\nFAKE LOG LINE\u202e" + "y" * 5000
    standins.avx.script(Response.json({"message": hostile, "appStatusCode": "FAILED"}, status=500))
    status, answer = call_webhook({"resourceId": "r1"})
    message = answer["error"]["message"]
    assert status == 502
    assert "\x1b" not in message and "\n" not in message and "\r" not in message and "\u202e" not in message
    assert len(message) < 600


# -- notifications ------------------------------------------------------------------------------------------------------


def test_a_trickling_receiver_is_cut_off_by_the_notification_budget(
    standins: StandIns, call_webhook: Any, notifications: Install, clean_receiver: ReceiverStandIn
) -> None:
    notifier = notifications()
    notifier.budget_seconds = 1.5  # the default is 15 s; the rule is the same
    clean_receiver.always(Response(200, b"accepted" + b" " * 12, trickle=1))
    elapsed, _ = fail_a_renewal(standins, call_webhook)
    assert elapsed < 1.5 + 2.0, f"a trickling receiver kept the webhook {elapsed:.1f} s"
