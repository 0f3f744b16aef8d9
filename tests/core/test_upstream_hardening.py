"""Upstream hardening (review of issues 11, 16 and 18 with an attacker's and a crash-tester's eyes), through
`function_app.app` against the stand-ins: RCL names that collide once made RowKeys, unreadable Content-Length and
huge JSON numbers, unreadable renewal answers recorded for the morning check, and status lines and headers trickled
past the total deadline (RCL, AVX, notifications). The inventory's
maxResults and AVX validTo dates that only look numeric are refused or ignored, never an uncaught exception."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import azure.functions as func
import pytest

from shared import context as app_context
from shared.core.errors import RclError
from shared.core.outbound import Deadline, RetryPolicy, new_session, send
from shared.core.telemetry import add_event_sink, remove_event_sink
from shared.rcl.client import parse_certificates
from tests.core import test_notify
from tests.core.test_notify import Install, fail_a_renewal
from tests.endpoints import test_endpoint_checks
from tests.rcl import test_rcl_timer
from tests.rcl.test_rcl_timer import Events, records, run, table
from tests.standins.base import Response
from tests.standins.endpoints import _Listener
from tests.standins.receiver import ReceiverStandIn
from tests.standins.stack import FakeContext, StandIns

# The nightly path's and the endpoint check's fixtures.
events = test_rcl_timer.events
rcl_env = test_rcl_timer.rcl_env
certificates = test_endpoint_checks.certificates
endpoints = test_endpoint_checks.endpoints
# The notification tests' fixtures.
receiver = test_notify.receiver
clean_receiver = test_notify.clean_receiver
no_notifier = test_notify.no_notifier
notifications = test_notify.notifications


@pytest.fixture
def endpoint_events() -> Iterator[test_endpoint_checks.Events]:
    """The endpoint check's events by host (the RCL `events` fixture above keeps its own shape)."""
    recorder = test_endpoint_checks.Events()
    add_event_sink(recorder)
    yield recorder
    remove_event_sink(recorder)


SUPERSCRIPT_TWO = "\u00b2"  # str.isdigit() says yes, int() says no; encodable in an HTTP header (latin-1 0xB2)


def inventory(functions: dict[str, Any], params: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = func.HttpRequest(
        method="GET", url="http://localhost/api/certificates", headers={}, params=params, body=b""
    )
    response = functions["certificate_inventory"].get_user_function()(request, FakeContext("certificate_inventory"))
    return response.status_code, json.loads(response.get_body())


def unknown_requests(env: dict[str, str]) -> list[dict[str, Any]]:
    with table(env) as client:
        return [dict(e) for e in client.query_entities("PartitionKey eq 'rcl' and state eq 'unknown'")]


# -- hostile caller input ---------------------------------------------------------------------------------------------


def test_inventory_max_results_that_only_looks_numeric_is_a_400(
    functions: dict[str, Any], app_env: dict[str, str]
) -> None:
    status, body = inventory(functions, {"maxResults": SUPERSCRIPT_TWO})
    assert status == 400 and body["error"]["code"] == "INVALID_REQUEST"


# -- hostile or broken RCL answers --------------------------------------------------------------------------------------


def test_rcl_names_that_differ_only_in_key_forbidden_characters_are_both_recorded(
    standins: StandIns, functions: dict[str, Any], rcl_env: dict[str, str], events: Events
) -> None:
    # Without ids the record key is the name; both names sanitise to "<night>-name-a_b.contoso.com". The batch then
    # holds one RowKey twice and Azure Tables refuses all of it (finding 5 of issue 18, by another road).
    answer = [
        {"name": "a/b.contoso.com", "expiryDate": "2030-01-01T00:00:00"},
        {"name": "a#b.contoso.com", "expiryDate": "2030-01-01T00:00:00"},
        {"name": "other.contoso.com", "expiryDate": "2030-01-01T00:00:00"},
    ]
    standins.rcl.script(Response.json(answer))
    run(functions, "renew_timer")
    assert set(records(rcl_env)) == {"a/b.contoso.com", "a#b.contoso.com", "other.contoso.com"}
    (completed,) = events.named("RclRenewalRunCompleted")
    assert completed["outcome"] == "succeeded" and completed["scheduledCount"] == 3, completed


def test_a_content_length_that_only_looks_numeric_is_a_bad_rcl_answer_not_an_internal_error(
    standins: StandIns, functions: dict[str, Any], rcl_env: dict[str, str], events: Events
) -> None:
    standins.rcl.script(Response(200, b"[]", {"Content-Type": "application/json", "Content-Length": SUPERSCRIPT_TWO}))
    with pytest.raises(Exception):  # noqa: B017 - the run fails either way; what it reports is the point
        run(functions, "renew_timer")
    (completed,) = events.named("RclRenewalRunCompleted")
    assert completed["reason"] == "RCL_BAD_RESPONSE" and "Content-Length" in completed["message"], completed
    # RCL answered 200: it got the request and may have scheduled, so the morning check is told to look.
    assert len(unknown_requests(rcl_env)) == 1


def test_a_huge_integer_in_rcls_answer_is_a_bad_response(
    standins: StandIns, functions: dict[str, Any], rcl_env: dict[str, str], events: Events
) -> None:
    body = b'[{"id": ' + b"9" * 5000 + b', "name": "x.contoso.com", "expiryDate": "2030-01-01T00:00:00"}]'
    standins.rcl.script(Response(200, body, {"Content-Type": "application/json"}))
    with pytest.raises(Exception):  # noqa: B017
        run(functions, "renew_timer")
    (completed,) = events.named("RclRenewalRunCompleted")
    assert completed["reason"] == "RCL_BAD_RESPONSE", completed


def test_ids_that_only_look_numeric_or_are_too_long_are_no_ids() -> None:
    items = [
        {"id": SUPERSCRIPT_TWO, "name": "a.contoso.com"},
        {"id": "9" * 5000, "name": "b.contoso.com"},
        {"id": " 158 ", "name": "c.contoso.com"},
    ]
    parsed = parse_certificates(json.dumps(items).encode())
    assert [c.id for c in parsed] == [None, None, 158]
    with pytest.raises(RclError) as raised:
        parse_certificates(b'[{"id": ' + b"9" * 5000 + b', "name": "x.contoso.com"}]')
    assert raised.value.code == "RCL_BAD_RESPONSE"


UNREADABLE_ANSWERS = {
    "html": Response.text("<html>ok</html>", 200, "text/html"),
    "object": Response.json({"certificates": []}),
    "not-a-certificate": Response.json([42]),
    "oversized": Response(200, b"[]", {"Content-Type": "application/json", "Content-Length": str(10**12)}),
    "huge-number": Response(200, b"[" + b"9" * 5000 + b"]", {"Content-Type": "application/json"}),
}


@pytest.mark.parametrize("answer", UNREADABLE_ANSWERS.values(), ids=UNREADABLE_ANSWERS.keys())
def test_an_unreadable_renewal_answer_is_recorded_for_the_morning_check(
    standins: StandIns, functions: dict[str, Any], rcl_env: dict[str, str], events: Events, answer: Response
) -> None:
    # RCL answered 200: it received the request and scheduled what was due; only its answer is unreadable (an HTML
    # maintenance page, a truncated or oversized body). Like a timeout (issue 18, finding 9), what it scheduled is
    # unknown, and the morning check should be told to look.
    standins.rcl.script(answer)
    with pytest.raises(Exception):  # noqa: B017
        run(functions, "renew_timer")
    assert len(standins.rcl.renewal_calls()) == 1
    (completed,) = events.named("RclRenewalRunCompleted")
    assert completed["reason"] == "RCL_BAD_RESPONSE", completed
    assert len(unknown_requests(rcl_env)) == 1


# -- total deadlines that only bound each read ---------------------------------------------------------------------------


class HeaderTrickler:
    """An HTTP server that answers quickly-ish, but sends its status line and headers one byte every
    `seconds_per_byte` (each read is fast; the whole is not). The body follows at once."""

    def __init__(self, seconds_per_byte: float, body: bytes = b"[]") -> None:
        self.seconds_per_byte = seconds_per_byte
        self.body = body
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(8)
        self.port = int(self.server.getsockname()[1])
        self.stopping = threading.Event()
        self.answered = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                conn.recv(65536)
                self.answered += 1
                head = (
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Padding: "
                    + b"p" * 20
                    + b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(self.body)
                )
                for index in range(len(head)):
                    if self.stopping.wait(self.seconds_per_byte):
                        return
                    conn.sendall(head[index : index + 1])
                conn.sendall(self.body)
            except OSError:
                return

    def stop(self) -> None:
        self.stopping.set()
        self.server.close()


def test_rcl_headers_trickled_byte_by_byte_end_within_the_timeout_overall(
    functions: dict[str, Any], rcl_env: dict[str, str], events: Events, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ~110 header bytes at 0.1 s: 11 s in all, each read 0.1 s. The same holds for AVX and the notifier (one send()).
    server = HeaderTrickler(0.1)
    try:
        monkeypatch.setenv("RCL_API_URL", f"http://127.0.0.1:{server.port}/api/v2")
        monkeypatch.setenv("RCL_TIMEOUT_SECONDS", "2")
        app_context.reset()
        started = time.monotonic()
        with pytest.raises(Exception):  # noqa: B017 - a timeout (sent: recorded unknown) is the right end
            run(functions, "renew_timer")
        elapsed = time.monotonic() - started
    finally:
        server.stop()
    assert server.answered == 1
    assert elapsed < 2 + 1.5, f"RCL_TIMEOUT_SECONDS=2, but the run took {elapsed:.1f} s"
    # What the operator sees is the timeout it was (before the fix: the same, after about 12 s).
    (completed,) = events.named("RclRenewalRunCompleted")
    assert completed["reason"] == "RCL_TIMEOUT" and "within 2 s" in completed["message"], completed
    assert len(unknown_requests(rcl_env)) == 1  # sent: the morning check looks at what renewed since


def test_avx_headers_trickled_byte_by_byte_end_within_the_timeout_overall(
    standins: StandIns, call_webhook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AVX_TIMEOUT_SECONDS", "2")
    app_context.reset()
    # About 150 header bytes at 0.1 s: 15 s in all, each read quick.
    standins.avx.script(Response(200, b'{"message": "ok"}', trickle=0.1, trickle_headers=True))
    started = time.monotonic()
    status, answer = call_webhook({"resourceId": "r1"})
    elapsed = time.monotonic() - started
    assert elapsed < 2 + 1.5, f"the AVX call took {elapsed:.1f} s with AVX_TIMEOUT_SECONDS=2"
    assert status == 202 and answer["reason"] == "AVX_TIMEOUT", answer  # sent: kept pending, never sent again
    assert len(standins.avx.renew_calls()) == 1


def test_a_receiver_trickling_its_headers_is_cut_off_by_the_notification_budget(
    standins: StandIns, call_webhook: Any, notifications: Install, clean_receiver: ReceiverStandIn
) -> None:
    notifier = notifications()
    notifier.budget_seconds = 1.5
    clean_receiver.always(Response(200, b"accepted", trickle=0.1, trickle_headers=True))
    elapsed, _ = fail_a_renewal(standins, call_webhook)
    assert elapsed < 1.5 + 1.5, f"a receiver trickling its headers kept the webhook {elapsed:.1f} s"


def test_kept_alive_connections_are_reused_with_the_header_deadline(standins: StandIns) -> None:
    # The deadline-aware (here TLS) connections stay ordinary kept-alive ones: five calls, one connection, and no
    # watchdog left running.
    session = new_session(pool_size=2)
    url = f"{standins.avx.url}/avxapi/ping"
    before = standins.avx.connections
    try:
        for _ in range(5):
            answer = send(
                session,
                "GET",
                url,
                idempotent=True,
                policy=RetryPolicy(attempts=1),
                timeout=(2, 2),
                deadline=Deadline.after(2),
                max_bytes=1024,
                verify=str(standins.ca.bundle_path),
            )
            assert answer.status_code == 401 and answer.content  # no login: refused, a whole answer all the same
    finally:
        session.close()
    assert standins.avx.connections - before == 1
    time.sleep(0.05)
    assert not [t for t in threading.enumerate() if isinstance(t, threading.Timer) and t.is_alive()]


class TlsRecordTrickler(_Listener):
    """A TLS peer that answers the ClientHello with a handshake record header announcing 16 KiB, then sends that
    record's body one byte every 0.2 s: every read returns well within the socket timeout, the handshake never
    ends (about an hour)."""

    def handle(self, conn: socket.socket) -> None:
        with self.lock:
            self.held.append(conn)
        try:
            conn.settimeout(5)
            conn.recv(65536)  # the ClientHello
            conn.sendall(b"\x16\x03\x03\x40\x00")
            while not self.stopped.wait(0.2):
                conn.sendall(b"\x00")
        except OSError:
            pass


def test_trickling_tls_peers_neither_outlast_the_probe_deadline_nor_starve_other_endpoints(  # held up: a guard
    standins: StandIns,
    functions: dict[str, Any],
    app_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    endpoints: test_endpoint_checks.Endpoints,
    certificates: test_endpoint_checks.Certificates,
    endpoint_events: test_endpoint_checks.Events,
) -> None:
    name = test_endpoint_checks.seed_renewed(standins, certificates)
    trickler = TlsRecordTrickler().start()
    try:
        # Eight hostile peers (MAX_PARALLEL) listed before one healthy endpoint.
        checks = [{"certificate": name, "host": f"slow{n}.contoso.com", "address": trickler.address} for n in range(8)]
        checks.append({"certificate": name, "host": "www.contoso.com", "address": endpoints.renewed.address})
        test_endpoint_checks.configure(monkeypatch, checks)
        started = time.monotonic()
        test_endpoint_checks.run(functions)
        elapsed = time.monotonic() - started
    finally:
        trickler.stop()
    by_host = endpoint_events.by_host()
    assert by_host["www.contoso.com"][0] == "CertificateDeployed", by_host["www.contoso.com"]
    assert by_host["slow0.contoso.com"][1]["reason"] == "ENDPOINT_TIMEOUT"
    # Each probe is bounded by its own deadline (5 s), so nine probes on eight workers need about two rounds.
    assert elapsed < 2 * 5 + 3, f"the run took {elapsed:.1f} s"
    # (It holds because CPython's ssl do_handshake applies the socket timeout as one deadline for the whole
    # handshake; the silent peer of test_endpoint_checks never sends a byte, so it did not show this.)


# -- hostile AppViewX answers -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("valid_to", [SUPERSCRIPT_TWO, "9" * 20, "9" * 5000], ids=["superscript", "far", "huge"])
def test_an_unreadable_avx_validity_date_is_not_an_uncaught_exception(
    standins: StandIns, call_webhook: Any, monkeypatch: pytest.MonkeyPatch, valid_to: str
) -> None:
    # The search before the renew sorts AVX's certificates by validTo; an upstream that answers a date that only looks
    # like epoch milliseconds makes the webhook raise (ValueError / OSError), which the host turns into a bare 500.
    def hostile_search(request: Any) -> Response:
        objects = [
            {"resourceId": "r1", "commonName": "a.contoso.com", "serialNumber": serial, "status": "Active",
             "validFrom": "2026-01-01T00:00:00+00:00", "validTo": valid_to}
            for serial in ("0A", "0B")
        ]  # fmt: skip
        return Response.json({"response": {"response": {"objects": objects, "totalRecords": 2}}, "message": "Success"})

    standins.avx.add_certificate("a.contoso.com", resource_id="r1")
    monkeypatch.setattr(standins.avx, "_search", hostile_search)
    status, answer = call_webhook({"resourceId": "r1"})
    assert status in (200, 202, 502), answer
