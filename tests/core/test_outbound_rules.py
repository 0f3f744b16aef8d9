"""The outbound HTTP rules (shared.core.outbound) on their own: which failures prove a request never left, the
backoff, Retry-After, the deadline, and the retry decision of `send` driven by a scripted session (answers and
exceptions handed back in order, waits recorded instead of slept). No I/O; the same rules over real HTTP are in
test_outbound_bounds.py and the client tests."""

from __future__ import annotations

import math
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
import requests
from urllib3.exceptions import MaxRetryError, NameResolutionError, NewConnectionError

from shared.core.outbound import (
    RETRY_AFTER_CAP_SECONDS,
    RETRY_STATUSES,
    Deadline,
    RetryPolicy,
    backoff_delay,
    never_sent,
    retry_after_seconds,
    send,
    upstream_text,
)

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


# -- never sent ---------------------------------------------------------------------------------------------------------


def wrapped(reason: BaseException) -> requests.ConnectionError:
    """The way requests reports a failed connection: ConnectionError(MaxRetryError(reason=...))."""
    return requests.ConnectionError(MaxRetryError(None, "/renew", reason))  # type: ignore[arg-type]


def refused_by_cause() -> requests.ConnectionError:
    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except ConnectionRefusedError as exc:
            raise requests.ConnectionError("connection failed") from exc
    except requests.ConnectionError as exc:
        return exc


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (requests.ConnectTimeout("connect timed out"), True),
        (wrapped(NewConnectionError(None, "Connection refused")), True),  # type: ignore[arg-type]
        (wrapped(NameResolutionError("avx.example", None, socket.gaierror("no such host"))), True),  # type: ignore[arg-type]
        (refused_by_cause(), True),
        (requests.ReadTimeout("read timed out"), False),  # the server may have acted on it
        (requests.ConnectionError("Connection reset by peer"), False),
        (requests.ConnectionError(ConnectionResetError(104, "reset")), False),
        (ValueError("not a network error"), False),
    ],
    ids=["connect-timeout", "refused", "dns", "refused-cause", "read-timeout", "reset", "reset-errno", "other"],
)
def test_only_a_request_that_provably_never_left_is_never_sent(exc: BaseException, expected: bool) -> None:
    assert never_sent(exc) is expected


def test_never_sent_ends_on_exceptions_that_link_to_each_other() -> None:
    first, second = requests.ConnectionError("a"), requests.ConnectionError("b")
    first.__context__, second.__context__ = second, first
    assert never_sent(first) is False


# -- backoff ------------------------------------------------------------------------------------------------------------


def test_backoff_doubles_with_full_jitter_up_to_the_cap() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=3.0)
    assert [backoff_delay(n, policy, rand=lambda: 1.0) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert [backoff_delay(n, policy, rand=lambda: 0.0) for n in range(1, 4)] == [0.25, 0.5, 1.0]
    for n in range(1, 10):
        assert 0 < backoff_delay(n, policy) <= policy.max_delay


# -- Retry-After --------------------------------------------------------------------------------------------------------


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


def test_retry_after_as_an_http_date() -> None:
    assert retry_after_seconds(format_datetime(NOW + timedelta(seconds=90), usegmt=True), now=NOW) == 90.0
    assert retry_after_seconds(format_datetime(NOW - timedelta(hours=1), usegmt=True), now=NOW) == 0.0  # past: now
    # "-0000" is an HTTP date without a zone: read as UTC, not as the machine's local time.
    naive = format_datetime((NOW + timedelta(seconds=30)).replace(tzinfo=None))
    assert naive.endswith("-0000") and retry_after_seconds(naive, now=NOW) == 30.0


@pytest.mark.parametrize("value", [" 7 ", "7\r\n"])
def test_retry_after_tolerates_surrounding_whitespace(value: str) -> None:
    assert retry_after_seconds(value) == 7.0


@pytest.mark.parametrize("value", ["1" * 65, 30, b"30", "0x10", "1,5", "7 seconds"])
def test_retry_after_that_is_unreadable_is_none(value: Any) -> None:
    assert retry_after_seconds(value, now=NOW) is None


# -- upstream text ------------------------------------------------------------------------------------------------------


def test_upstream_text_is_one_short_clean_line() -> None:
    text = upstream_text("a\x00b\nc\u2028d\x1b[0m" + "z" * 1000, limit=50)
    assert text.startswith("a b c d [0m") and len(text) == 50 and text.endswith("...")


def test_upstream_text_keeps_short_text_and_reads_anything() -> None:
    assert upstream_text("  Renewal   refused  ") == "Renewal refused"
    assert upstream_text({"code": 7}) == "{'code': 7}"
    assert upstream_text("x\u202eevil\u200b") == "x evil"


# -- deadline -----------------------------------------------------------------------------------------------------------


@dataclass
class Clock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_deadline_counts_down_on_its_clock() -> None:
    clock = Clock()
    deadline = Deadline.after(5.0, clock)
    assert deadline.left() == 5.0
    clock.now += 7.0
    assert deadline.left() == -2.0


# -- the retry decision of send -----------------------------------------------------------------------------------------


@dataclass
class Answer:
    """What `send` reads of a response when nothing bounds the read: its status and headers."""

    status_code: int
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class ScriptedSession:
    """Hands back the scripted answers (or raises the scripted exceptions) in order; records each attempt."""

    script: list[Answer | Exception]
    clock: Clock | None = None
    seconds_per_attempt: float = 0.0
    attempts: list[dict[str, Any]] = field(default_factory=list)

    def request(self, method: str, url: str, **kwargs: Any) -> Answer:
        self.attempts.append({"method": method, "url": url, **kwargs})
        if self.clock is not None:
            self.clock.now += self.seconds_per_attempt
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


@dataclass
class Waits:
    slept: list[float] = field(default_factory=list)
    clock: Clock | None = None

    def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)
        if self.clock is not None:
            self.clock.now += seconds


POLICY = RetryPolicy(attempts=3, base_delay=0.5, max_delay=20.0, max_retry_after=30.0)


def run_send(
    script: list[Answer | Exception], *, idempotent: bool, deadline: Deadline | None = None, **session_kw: Any
) -> tuple[Answer, ScriptedSession, Waits]:
    session = ScriptedSession(script, **session_kw)
    waits = Waits(clock=session_kw.get("clock"))
    answer = send(
        session,  # type: ignore[arg-type]
        "POST" if not idempotent else "GET",
        "https://upstream.example/x",
        idempotent=idempotent,
        policy=POLICY,
        timeout=(10.0, 30.0),
        sleep=waits,
        deadline=deadline,
    )
    return answer, session, waits


@pytest.mark.parametrize("status", sorted(RETRY_STATUSES))
def test_an_idempotent_call_retries_a_passing_failure(status: int) -> None:
    answer, session, waits = run_send([Answer(status), Answer(200)], idempotent=True)
    assert answer.status_code == 200 and len(session.attempts) == 2
    assert len(waits.slept) == 1 and 0.25 <= waits.slept[0] <= 0.5


@pytest.mark.parametrize("status", [200, 400, 401, 404, 409, 501])
def test_an_answer_that_will_not_change_is_final(status: int) -> None:
    answer, session, waits = run_send([Answer(status), Answer(200)], idempotent=True)
    assert answer.status_code == status and len(session.attempts) == 1 and waits.slept == []


def test_retries_stop_after_the_policys_attempts_with_the_last_answer() -> None:
    answer, session, waits = run_send([Answer(503), Answer(502), Answer(500), Answer(200)], idempotent=True)
    assert answer.status_code == 500 and len(session.attempts) == POLICY.attempts and len(waits.slept) == 2


def test_retry_after_is_honoured_up_to_the_policys_limit() -> None:
    answer, _, waits = run_send([Answer(429, {"Retry-After": "4"}), Answer(200)], idempotent=True)
    assert answer.status_code == 200 and waits.slept == [4.0]
    too_long = Answer(503, {"Retry-After": "3600"})
    answer, session, waits = run_send([too_long, Answer(200)], idempotent=True)
    assert answer is too_long and len(session.attempts) == 1 and waits.slept == []  # the caller reports it


def test_an_idempotent_call_retries_connection_errors_and_timeouts_then_raises_the_last() -> None:
    failures: list[Answer | Exception] = [
        requests.ConnectionError("reset"),
        requests.ReadTimeout("slow"),
        requests.ConnectionError("reset again"),
    ]
    with pytest.raises(requests.ConnectionError, match="reset again"):
        run_send(failures, idempotent=True)


def test_a_non_idempotent_call_is_not_retried_on_an_error_answer() -> None:
    answer, session, waits = run_send([Answer(503), Answer(200)], idempotent=False)
    assert answer.status_code == 503 and len(session.attempts) == 1 and waits.slept == []


@pytest.mark.parametrize(
    "exc",
    [requests.ReadTimeout("slow"), requests.ConnectionError("Connection reset by peer")],
    ids=["read-timeout", "reset"],
)
def test_a_non_idempotent_call_that_may_have_arrived_is_never_sent_again(exc: Exception) -> None:
    session = ScriptedSession([exc, Answer(200)])
    with pytest.raises(type(exc)):
        send(
            session, "POST", "https://avx.example/renew", idempotent=False, policy=POLICY, timeout=(1, 1), sleep=Waits()
        )  # type: ignore[arg-type]
    assert len(session.attempts) == 1


@pytest.mark.parametrize(
    "exc",
    [requests.ConnectTimeout("connect timed out"), wrapped(NewConnectionError(None, "Connection refused"))],  # type: ignore[arg-type]
    ids=["connect-timeout", "refused"],
)
def test_a_non_idempotent_call_that_never_left_is_sent_again(exc: Exception) -> None:
    answer, session, _ = run_send([exc, Answer(200)], idempotent=False)
    assert answer.status_code == 200 and len(session.attempts) == 2


def test_each_attempt_gets_at_most_the_time_left_and_no_wait_outlives_the_deadline() -> None:
    clock = Clock()
    deadline = Deadline.after(4.0, clock)
    # Each attempt takes 1.5 s; the second answer asks for a 3 s wait that would pass the deadline.
    script: list[Answer | Exception] = [Answer(503, {"Retry-After": "1"}), Answer(503, {"Retry-After": "3"})]
    answer, session, waits = run_send(script, idempotent=True, deadline=deadline, clock=clock, seconds_per_attempt=1.5)
    assert answer.status_code == 503 and len(session.attempts) == 2 and waits.slept == [1.0]
    assert session.attempts[0]["timeout"] == (4.0, 4.0)  # the connect and read timeouts cut to what is left
    assert session.attempts[1]["timeout"] == (1.5, 1.5)
    assert all(attempt["stream"] is True for attempt in session.attempts)  # a bounded call reads streamed


def test_a_failure_with_no_time_left_for_another_attempt_is_raised_at_once() -> None:
    clock = Clock()
    deadline = Deadline.after(0.3, clock)  # less than the first backoff (0.25 s to 0.5 s) plus its margin
    with pytest.raises(requests.ConnectTimeout):
        run_send([requests.ConnectTimeout("slow"), Answer(200)], idempotent=True, deadline=deadline, clock=clock)
