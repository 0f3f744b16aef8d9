"""Upstreams are bounded (issue 11, point 4; issue 18, finding 8): every outbound call has a total deadline, not a
per-read timeout, and answers are read streamed up to a maximum size. Driven through `function_app.app` against the
AVX stand-in and the notification receiver, which can trickle an answer or send a huge one without holding it."""

from __future__ import annotations

import math
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from shared import context as app_context
from shared.core.outbound import RETRY_AFTER_CAP_SECONDS, retry_after_seconds, upstream_text
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


# -- Retry-After and upstream text --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("1.5", 1.5),
        ("0", 0.0),
        ("inf", None),
        ("nan", None),
        ("-5", None),
        ("1e400", None),
        ("9" * 400, None),
        ("99999999999", RETRY_AFTER_CAP_SECONDS),
        ("Fri, 31 Dec 9999 23:59:59 GMT", RETRY_AFTER_CAP_SECONDS),
        ("Mon, 01 Jan 0001 00:00:00 GMT", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_is_clamped(value: str | None, expected: float | None) -> None:
    seconds = retry_after_seconds(value, now=datetime(2026, 11, 27, tzinfo=UTC))
    assert seconds == expected
    assert seconds is None or (math.isfinite(seconds) and 0 <= seconds <= RETRY_AFTER_CAP_SECONDS)


def test_upstream_text_is_one_short_clean_line() -> None:
    text = upstream_text("a\x00b\nc\u2028d\x1b[0m" + "z" * 1000, limit=50)
    assert text.startswith("a b c d [0m") and len(text) == 50 and text.endswith("...")
