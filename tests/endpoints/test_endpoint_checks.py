"""Issue 16: renewed is not deployed. `verify_endpoints`, driven through `function_app.app` as the host runs it,
against real TLS servers on 127.0.0.1 (one serving the replaced certificate, one the renewed one, one refusing
connections, one that never answers the handshake) and the Key Vault stand-in over HTTPS through the real
CertificateClient; the settings validation, the events (and their telemetry shape) and the notification."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest

from shared import context as app_context
from shared.azure.keyvault import StoredCertificate
from shared.core.errors import CertRenewError, SettingsError
from shared.core.settings import EndpointCheck, Settings, parse_address
from shared.core.telemetry import CUSTOM_MEASUREMENTS, event_record_attributes
from shared.endpoints.decisions import (
    ExpectedCertificate,
    Outcome,
    Problem,
    ServedCertificate,
    days_left,
    decide,
)
from shared.endpoints.probe import TIMEOUT_SECONDS
from shared.endpoints.run import check_endpoints
from shared.notify.install import install_notifications, uninstall_notifications
from tests.eventlog import Events, recording
from tests.standins.base import Response
from tests.standins.certs import IssuedCertificate, issue_certificate, thumbprint_hex
from tests.standins.endpoints import SilentEndpoint, TlsEndpoint, refused_address
from tests.standins.receiver import ReceiverStandIn
from tests.standins.stack import FakeContext, StandIns

HOST_RENEWED = "www.contoso.com"
HOST_OLD = "shop.contoso.com"
HOST_REFUSED = "down.contoso.com"
HOST_SILENT = "hung.contoso.com"


@pytest.fixture
def events() -> Iterator[Events]:
    with recording() as recorder:
        yield recorder


@dataclass
class Certificates:
    old: IssuedCertificate  # what the endpoints served before the renewal: 19 days left
    renewed: IssuedCertificate  # Key Vault's current version


@pytest.fixture(scope="module")
def certificates() -> Certificates:
    now = datetime.now(UTC)
    old = issue_certificate(HOST_RENEWED, days=90, not_before=now - timedelta(days=70, hours=12))
    return Certificates(old=old, renewed=issue_certificate(HOST_RENEWED, days=90))


@dataclass
class Endpoints:
    renewed: TlsEndpoint
    old: TlsEndpoint
    silent: SilentEndpoint


@pytest.fixture(scope="module")
def endpoints(certificates: Certificates) -> Iterator[Endpoints]:
    running = Endpoints(
        renewed=TlsEndpoint(certificates.renewed.certificate, certificates.renewed.private_key).start(),
        old=TlsEndpoint(certificates.old.certificate, certificates.old.private_key).start(),
        silent=SilentEndpoint().start(),
    )
    yield running
    for endpoint in (running.renewed, running.old, running.silent):
        endpoint.stop()


def seed_renewed(standins: StandIns, certificates: Certificates) -> str:
    """A Key Vault certificate that was renewed: the old version, then the renewed one (current)."""
    name = f"www-contoso-com-{uuid.uuid4().hex[:8]}"
    for issued in (certificates.old, certificates.renewed):
        standins.key_vault.seed(name, issued.certificate, issued.private_key, chain=issued.chain)
    return name


def configure(monkeypatch: pytest.MonkeyPatch, checks: list[dict[str, str]]) -> None:
    monkeypatch.setenv("ENDPOINT_CHECKS", json.dumps(checks))
    monkeypatch.setenv("ENDPOINT_CHECK_SCHEDULE", "0 0 */6 * * *")
    app_context.reset()


def run(functions: dict[str, Any], *, past_due: bool = False) -> FakeContext:
    context = FakeContext("verify_endpoints")
    functions["verify_endpoints"].get_user_function()(func.timer.TimerRequest(past_due=past_due), context)
    return context


def summary_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    (record,) = [r for r in caplog.records if r.getMessage().startswith("Endpoint check: ")]
    return record.getMessage().splitlines()


# -- binding --------------------------------------------------------------------------------------------------------
def test_timer_binding_is_what_the_host_reads(functions: dict[str, Any]) -> None:
    (binding,) = json.loads(functions["verify_endpoints"].get_function_json())["bindings"]
    assert binding["type"] == "timerTrigger"
    assert binding["schedule"] == "%ENDPOINT_CHECK_SCHEDULE%"
    assert binding["useMonitor"] is True and binding["runOnStartup"] is False


# -- the issue's "Done when" ----------------------------------------------------------------------------------------
def test_each_endpoint_is_reported_by_what_it_really_serves(
    standins: StandIns,
    functions: dict[str, Any],
    app_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    endpoints: Endpoints,
    certificates: Certificates,
    events: Events,
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = seed_renewed(standins, certificates)
    configure(
        monkeypatch,
        [
            {"certificate": name, "host": HOST_RENEWED, "address": endpoints.renewed.address},
            {"certificate": name, "host": HOST_OLD, "address": endpoints.old.address},
            {"certificate": name, "host": HOST_REFUSED, "address": refused_address()},
            {"certificate": name, "host": HOST_SILENT, "address": endpoints.silent.address},
        ],
    )
    started = time.monotonic()
    context = run(functions)
    elapsed = time.monotonic() - started

    # The hung endpoint is bounded by the probe's deadline, and the probes ran side by side (not one after another).
    assert TIMEOUT_SECONDS - 0.5 < elapsed < TIMEOUT_SECONDS + 3
    renewed_thumbprint = thumbprint_hex(certificates.renewed.certificate)
    old_thumbprint = thumbprint_hex(certificates.old.certificate)
    current = standins.key_vault.latest(name)
    assert current is not None and current.thumbprint == renewed_thumbprint

    by_host = events.by_host()
    assert set(by_host) == {HOST_RENEWED, HOST_OLD, HOST_REFUSED, HOST_SILENT}
    for _, attributes in by_host.values():
        assert attributes["invocationId"] == context.invocation_id
        assert attributes["certificateName"] == name and attributes["source"] == "endpoint"

    event, deployed = by_host[HOST_RENEWED]
    assert event == "CertificateDeployed"
    assert deployed["thumbprint"] == renewed_thumbprint
    assert deployed["keyVaultVersion"] == current.version
    assert deployed["daysLeft"] in (88, 89)
    assert deployed["address"] == endpoints.renewed.address

    event, stale = by_host[HOST_OLD]
    assert event == "CertificateNotDeployed"
    assert stale["servedThumbprint"] == old_thumbprint
    assert stale["expectedThumbprint"] == renewed_thumbprint
    assert stale["expectedVersion"] == current.version
    assert stale["servedExpiryDate"].endswith("Z")
    assert datetime.fromisoformat(stale["servedExpiryDate"]) == certificates.old.certificate.not_valid_after_utc
    assert stale["daysLeft"] == 19

    event, refused = by_host[HOST_REFUSED]
    assert event == "EndpointCheckFailed" and refused["reason"] == "ENDPOINT_UNREACHABLE"
    assert HOST_REFUSED in refused["message"] and "refused" in refused["message"]
    event, hung = by_host[HOST_SILENT]
    assert event == "EndpointCheckFailed" and hung["reason"] == "ENDPOINT_TIMEOUT"
    assert HOST_SILENT in hung["message"] and "handshake" in hung["message"]

    # SNI is the host name clients use, not the address connected to.
    assert HOST_RENEWED in endpoints.renewed.server_names and HOST_OLD in endpoints.old.server_names
    assert endpoints.silent.connections >= 1

    # One line per endpoint in the run summary, each naming its host.
    head, *lines = summary_lines(caplog)
    assert "4 endpoint(s): 1 serve the current version, 1 do not, 2 could not be checked" in head
    assert len(lines) == 4
    assert lines[0].split()[0] == "deployed" and HOST_RENEWED in lines[0] and renewed_thumbprint in lines[0]
    assert lines[1].split()[:2] == ["NOT", "deployed"] and HOST_OLD in lines[1] and old_thumbprint in lines[1]
    assert lines[2].split()[0] == "unchecked" and HOST_REFUSED in lines[2] and "ENDPOINT_UNREACHABLE" in lines[2]
    assert lines[3].split()[0] == "unchecked" and HOST_SILENT in lines[3] and "ENDPOINT_TIMEOUT" in lines[3]

    # Key Vault was read once for the certificate all four endpoints share, through the real client (with a token).
    gets = [r for r in standins.key_vault.requests if r.method == "GET" and r.path.startswith(f"/certificates/{name}")]
    assert len([r for r in gets if r.header("Authorization")]) == 1


def test_the_events_are_application_insights_rows(
    standins: StandIns,
    functions: dict[str, Any],
    app_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    endpoints: Endpoints,
    certificates: Certificates,
    events: Events,
) -> None:
    """What the exporter receives: texts as customDimensions, daysLeft as a customMeasurement."""
    name = seed_renewed(standins, certificates)
    configure(
        monkeypatch,
        [
            {"certificate": name, "host": HOST_RENEWED, "address": endpoints.renewed.address},
            {"certificate": name, "host": HOST_OLD, "address": endpoints.old.address},
        ],
    )
    run(functions)
    (deployed,) = events.named("CertificateDeployed")
    (stale,) = events.named("CertificateNotDeployed")
    row = event_record_attributes("CertificateNotDeployed", stale)
    assert json.loads(row[CUSTOM_MEASUREMENTS]) == {"daysLeft": 19}
    for key in ("certificateName", "host", "servedThumbprint", "expectedThumbprint", "servedExpiryDate"):
        assert row[key] == stale[key] and isinstance(row[key], str)
    row = event_record_attributes("CertificateDeployed", deployed)
    assert set(json.loads(row[CUSTOM_MEASUREMENTS])) == {"daysLeft"}
    assert row["thumbprint"] == thumbprint_hex(certificates.renewed.certificate)


def test_a_stale_endpoint_is_notified_and_the_others_are_not(
    standins: StandIns,
    functions: dict[str, Any],
    app_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    endpoints: Endpoints,
    certificates: Certificates,
) -> None:
    name = seed_renewed(standins, certificates)
    configure(
        monkeypatch,
        [
            {"certificate": name, "host": HOST_RENEWED, "address": endpoints.renewed.address},
            {"certificate": name, "host": HOST_OLD, "address": endpoints.old.address},
            {"certificate": name, "host": HOST_REFUSED, "address": refused_address()},
        ],
    )
    receiver = ReceiverStandIn().start()
    try:
        monkeypatch.setenv("NOTIFY_WEBHOOK_URL", receiver.webhook_url())
        monkeypatch.setenv("NOTIFY_FORMAT", "json")
        app_context.reset()
        assert install_notifications(app_context.settings()) is not None
        run(functions)
        bodies = [json.loads(body) for body in receiver.bodies()]
    finally:
        uninstall_notifications()
        receiver.stop()
    (message,) = bodies  # only the endpoint that serves the old certificate
    assert message["event"] == "CertificateNotDeployed"
    assert message["certificateName"] == name and message["host"] == HOST_OLD
    assert message["servedThumbprint"] == thumbprint_hex(certificates.old.certificate)
    assert message["expectedThumbprint"] == thumbprint_hex(certificates.renewed.certificate)
    assert message["daysLeft"] == 19 and message["expiryDate"].endswith("Z")


def test_teams_and_slack_messages_name_the_host_and_both_thumbprints() -> None:
    from shared.notify.formats import build_message

    attributes = {
        "source": "endpoint",
        "certificateName": "www-contoso-com",
        "host": HOST_OLD,
        "servedThumbprint": "A" * 40,
        "servedExpiryDate": "2030-01-02T03:04:05Z",
        "expectedThumbprint": "B" * 40,
        "daysLeft": 12,
    }
    for fmt in ("teams", "slack"):
        text = json.dumps(build_message(fmt, "CertificateNotDeployed", attributes))
        assert HOST_OLD in text and "A" * 40 in text and "B" * 40 in text and "12 day(s)" in text
        assert "not deployed" in text.lower()


# -- one endpoint's failure is that endpoint's ----------------------------------------------------------------------
def test_a_plain_http_endpoint_is_a_tls_failure_and_a_missing_certificate_is_named(
    standins: StandIns,
    functions: dict[str, Any],
    app_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    endpoints: Endpoints,
    certificates: Certificates,
    events: Events,
) -> None:
    name = seed_renewed(standins, certificates)
    plain_http = standins.rcl.url.removeprefix("http://")  # an HTTP server that does not speak TLS
    configure(
        monkeypatch,
        [
            {"certificate": name, "host": "plain.contoso.com", "address": plain_http},
            {"certificate": "never-imported", "host": HOST_OLD, "address": endpoints.old.address},
            {"certificate": name, "host": HOST_RENEWED, "address": endpoints.renewed.address},
        ],
    )
    run(functions)
    by_host = events.by_host()
    assert by_host["plain.contoso.com"][0] == "EndpointCheckFailed"
    assert by_host["plain.contoso.com"][1]["reason"] == "ENDPOINT_TLS_FAILED"
    assert by_host[HOST_OLD][0] == "EndpointCheckFailed"
    assert by_host[HOST_OLD][1]["reason"] == "KEY_VAULT_CERTIFICATE_NOT_FOUND"
    assert "never-imported" in by_host[HOST_OLD][1]["message"]
    assert by_host[HOST_RENEWED][0] == "CertificateDeployed"


def test_key_vault_refusing_is_reported_per_endpoint_not_a_crash(
    standins: StandIns,
    functions: dict[str, Any],
    app_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    endpoints: Endpoints,
    certificates: Certificates,
    events: Events,
) -> None:
    name = seed_renewed(standins, certificates)
    configure(monkeypatch, [{"certificate": name, "host": HOST_RENEWED, "address": endpoints.renewed.address}])
    forbidden = {"error": {"code": "Forbidden", "message": "Caller is not authorized to perform action"}}
    standins.key_vault.fail_next(5, Response.json(forbidden, status=403), operation="get")
    run(functions)
    ((event, attributes),) = events.by_host().values()
    assert event == "EndpointCheckFailed" and attributes["reason"] == "KEY_VAULT_UNAVAILABLE"
    assert "403" in attributes["message"]


# -- settings -------------------------------------------------------------------------------------------------------
def test_without_endpoint_checks_nothing_is_contacted(
    standins: StandIns,
    functions: dict[str, Any],
    app_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    events: Events,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv("ENDPOINT_CHECKS", raising=False)
    app_context.reset()
    run(functions)
    assert events.items == [] and standins.key_vault.requests == [] and standins.identity.requests == []
    assert any("ENDPOINT_CHECKS lists no endpoints" in r.getMessage() for r in caplog.records)


def test_invalid_endpoint_checks_fail_the_run_naming_the_entry(
    standins: StandIns,
    functions: dict[str, Any],
    app_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    endpoints: Endpoints,
    events: Events,
) -> None:
    configure(
        monkeypatch,
        [
            {"certificate": "www-contoso-com", "host": HOST_RENEWED, "address": endpoints.renewed.address},
            {"certificate": "shop contoso", "host": HOST_OLD},
        ],
    )
    before = endpoints.renewed.connections
    with pytest.raises(CertRenewError) as raised:
        run(functions)
    assert raised.value.code == "CONFIGURATION_ERROR"
    assert "ENDPOINT_CHECKS[1] (host 'shop.contoso.com'): certificate must be a Key Vault name" in raised.value.message
    assert events.items == [] and standins.key_vault.requests == []
    assert endpoints.renewed.connections == before


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("not json", "ENDPOINT_CHECKS must be a JSON array of objects, but it is not valid JSON"),
        ('{"host": "a.contoso.com"}', "ENDPOINT_CHECKS must be a JSON array of objects, got a JSON dict"),
        ('["a.contoso.com"]', "ENDPOINT_CHECKS[0] must be an object"),
        ('[{"host": "a.contoso.com"}]', "ENDPOINT_CHECKS[0] (host 'a.contoso.com'): certificate (the Key Vault"),
        ('[{"certificate": "a"}]', "ENDPOINT_CHECKS[0]: host (the DNS name the endpoint serves, sent as SNI) is"),
        ('[{"certificate": "a", "host": "10.0.0.1"}]', "ENDPOINT_CHECKS[0] (host '10.0.0.1'): host must be a DNS"),
        ('[{"certificate": "a", "host": "a_b.contoso.com"}]', "host must be a DNS name"),
        ('[{"certificate": "a", "host": "a.contoso.com", "adress": "x:1"}]', "unknown field(s) adress"),
        ('[{"certificate": "a", "host": "a.contoso.com", "address": "x:99999"}]', 'address must be "<host or IP>'),
        ('[{"certificate": "a", "host": "a.contoso.com", "address": "::1:443"}]', "address must be"),
        ('[{"certificate": "a", "host": "a.contoso.com", "address": 443}]', "address must be"),
        (
            '[{"certificate": "a", "host": "a.contoso.com"}, {"certificate": "a", "host": "A.contoso.com."}]',
            "ENDPOINT_CHECKS[1] (host 'A.contoso.com.'): the same endpoint as ENDPOINT_CHECKS[0]",
        ),
    ],
)
def test_endpoint_checks_validation_names_the_setting_and_the_entry(value: str, expected: str) -> None:
    with pytest.raises(SettingsError) as raised:
        _ = Settings({"ENDPOINT_CHECKS": value}).endpoint_checks
    assert expected in raised.value.message


def test_endpoint_checks_are_parsed_with_their_defaults() -> None:
    value = json.dumps(
        [
            {"certificate": "www-contoso-com", "host": "WWW.contoso.com."},
            {"certificate": "api", "host": "api.contoso.com", "address": "10.1.2.3:8443"},
            {"certificate": "api", "host": "api.contoso.com", "address": "[2001:db8::1]:443"},
            {"certificate": "app", "host": "app.contoso.com", "address": "app.azurewebsites.net"},
        ]
    )
    checks = Settings({"ENDPOINT_CHECKS": value}).endpoint_checks.endpoints
    assert checks == (
        EndpointCheck("www-contoso-com", "www.contoso.com", "www.contoso.com", 443),
        EndpointCheck("api", "api.contoso.com", "10.1.2.3", 8443),
        EndpointCheck("api", "api.contoso.com", "2001:db8::1", 443),
        EndpointCheck("app", "app.contoso.com", "app.azurewebsites.net", 443),
    )
    assert checks[2].address == "[2001:db8::1]:443"
    assert Settings({}).endpoint_checks.endpoints == ()
    assert Settings({"ENDPOINT_CHECKS": "[]"}).endpoint_checks.endpoints == ()


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("a.b:1", ("a.b", 1)), ("1.2.3.4", ("1.2.3.4", 443)), ("[::1]:8443", ("::1", 8443)), ("a.b:0", None)],
)
def test_parse_address(text: str, parsed: tuple[str, int] | None) -> None:
    assert parse_address(text) == parsed


# -- the decision, pure -----------------------------------------------------------------------------------------
def test_decide_compares_thumbprints_and_counts_days_of_the_served_certificate() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    check = EndpointCheck("www", "www.contoso.com", "www.contoso.com", 443)
    served = ServedCertificate("AB" * 20, datetime(2030, 1, 11, 12, tzinfo=UTC), "CN=www.contoso.com")
    same = ExpectedCertificate("ab" * 20, "v2", datetime(2030, 4, 1, tzinfo=UTC))
    other = ExpectedCertificate("CD" * 20, "v2", datetime(2030, 4, 1, tzinfo=UTC))
    assert decide(check, served, same, now).outcome is Outcome.DEPLOYED
    result = decide(check, served, other, now)
    assert result.outcome is Outcome.NOT_DEPLOYED and result.days_left == 10
    unreachable = Problem("ENDPOINT_UNREACHABLE", "refused")
    assert decide(check, unreachable, Problem("KEY_VAULT_UNAVAILABLE", "x"), now).problem == unreachable
    assert days_left(datetime(2029, 12, 31, tzinfo=UTC), now) == -1 and days_left(None, now) is None


# -- bounds: the cap on parallel probes and the run's deadline ------------------------------------------------------
class _Vault:
    """What the run needs of Key Vault (`current`), for the pure-logic tests of the run's bounds."""

    def __init__(self, thumbprint: str) -> None:
        self.thumbprint = thumbprint

    def current(self, name: str) -> StoredCertificate | None:
        return StoredCertificate(f"https://kv/certificates/{name}/v1", name, "v1", self.thumbprint, None, None, "")


def test_at_most_max_parallel_probes_run_at_once(events: Events) -> None:
    lock = threading.Lock()
    running, peak = 0, 0

    def probe(check: EndpointCheck) -> ServedCertificate:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return ServedCertificate("AA" * 20, datetime.now(UTC) + timedelta(days=30), "CN=x")

    checks = [EndpointCheck("c", f"h{i}.contoso.com", f"h{i}.contoso.com", 443) for i in range(30)]
    summary = check_endpoints(checks, _Vault("AA" * 20), probe=probe, max_parallel=4)
    assert peak == 4
    assert summary.count(Outcome.DEPLOYED) == 30 and len(events.named("CertificateDeployed")) == 30
    assert [r.check.host for r in summary.results] == [c.host for c in checks]  # in the configured order


def test_a_probe_that_never_returns_is_reported_when_the_run_bound_passes(events: Events) -> None:
    """A hung name lookup is bounded by no socket timeout: the run stops waiting for it and names the host."""
    release = threading.Event()

    def probe(check: EndpointCheck) -> ServedCertificate:
        if check.host == "hung.contoso.com":
            release.wait(10)
        return ServedCertificate("AA" * 20, None, "CN=x")

    checks = [EndpointCheck("c", h, h, 443) for h in ("hung.contoso.com", "ok.contoso.com")]
    started = time.monotonic()
    try:
        summary = check_endpoints(
            checks, _Vault("AA" * 20), probe=probe, max_parallel=2, probe_seconds=0.3, grace_seconds=0.2
        )
    finally:
        release.set()
    assert time.monotonic() - started < 2
    hung, ok = summary.results
    assert hung.outcome is Outcome.UNCHECKED and hung.problem is not None and hung.problem.reason == "ENDPOINT_TIMEOUT"
    assert "hung.contoso.com" in hung.problem.message and ok.outcome is Outcome.DEPLOYED


# -- the operator CLI -----------------------------------------------------------------------------------------------
def test_the_cli_runs_the_check_now(
    standins: StandIns,
    app_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    endpoints: Endpoints,
    certificates: Certificates,
    events: Events,
) -> None:
    from shared.operator.cli import main

    name = seed_renewed(standins, certificates)
    configure(monkeypatch, [{"certificate": name, "host": HOST_OLD, "address": endpoints.old.address}])
    assert main(["verify-endpoints"]) == 0
    (stale,) = events.named("CertificateNotDeployed")
    assert stale["host"] == HOST_OLD
