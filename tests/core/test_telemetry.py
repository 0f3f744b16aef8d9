"""Application Insights end to end: the app runs in a child process (the exporter sends at exit) with the real Azure
Monitor exporter pointed at a local ingestion stand-in; the stand-ins and Azurite run here.

One night and one morning: the webhook fails (AVX: open work order) and succeeds, the nightly RCL run schedules three
certificates, RCL renews one and drops one, and the check finds one renewed, one pending, one gone, plus the
certificates near expiry. Then the captured envelopes must tell what renewed, what failed and why, show every
outbound call as a dependency, and hold no secret; neither may the child's output or the HTTP answers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.standins.avx import page_error
from tests.standins.ingestion import IngestionStandIn
from tests.standins.stack import REPO_ROOT, SENTINELS, WEBHOOK_HMAC_SECRET, Azurite, StandIns, base_environment

CALLER_PFX_PASSWORD = "Caller-Pfx-Pass-9!x"
PROBE = "PROBE-7f3a"
CHILD_TIMEOUT = 60

EVENT_TABLE: dict[str, tuple[str, ...]] = {
    "CertificateRenewalScheduled": ("certificateId", "target", "expiryDate"),
    "RclRenewalRunCompleted": ("scheduledCount", "outcome", "durationMs"),
    "CertificateRenewed": ("expiryDate",),
    "CertificateRenewalPending": ("scheduledAt",),
    "CertificateRenewalFailed": ("reason", "message"),
    "CertificateNearExpiry": ("expiryDate", "daysLeft"),
}


@dataclass
class ChildRun:
    outcomes: list[dict[str, Any]]
    stdout: str
    stderr: str


@dataclass
class Night:
    standins: StandIns
    ingestion: IngestionStandIn
    evening: ChildRun
    morning: ChildRun
    one_time_password: str

    @property
    def logs(self) -> str:
        return self.evening.stderr + self.morning.stderr

    @property
    def outcomes(self) -> list[dict[str, Any]]:
        return self.evening.outcomes + self.morning.outcomes

    def outcome(self, function: str) -> list[dict[str, Any]]:
        return [o for o in self.outcomes if o.get("function") == function]


def child_environment(standins: StandIns, ingestion: IngestionStandIn, storage: str, tmp: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "SYSTEMROOT")}
    return {
        **keep,
        **base_environment(standins),
        "PYTHONPATH": str(REPO_ROOT),
        "TMPDIR": str(tmp),  # the exporter's retry storage stays inside the test
        "AzureWebJobsStorage": storage,
        "RENEWAL_STATE_TABLE": f"telemetry{uuid.uuid4().hex[:8]}",
        "RCL_RENEWAL_SCHEDULE": "0 0 2 * * *",
        "RCL_VERIFY_SCHEDULE": "0 30 6 * * *",
        "WEBHOOK_HMAC_SECRET": WEBHOOK_HMAC_SECRET,
        "APPLICATIONINSIGHTS_CONNECTION_STRING": ingestion.connection_string,
        # Nothing may leave 127.0.0.1: no statsbeat, no control-plane (OneSettings) calls, no IMDS probe.
        "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
        "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true",
        "APPLICATIONINSIGHTS_SDKSTATS_DISABLED": "true",
        "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "azure_app_service",
        "NO_PROXY": "127.0.0.1,localhost",
    }


def run_child(env: dict[str, str], plan: list[dict[str, Any]]) -> ChildRun:
    done = subprocess.run(
        [sys.executable, "-m", "tests.telemetry_child", json.dumps(plan)],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    outcomes = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(outcomes) == len(plan), done.stdout + done.stderr[-4000:]
    return ChildRun(outcomes, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def night(standins: StandIns, azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Any:
    ingestion = IngestionStandIn().start()
    try:
        standins.reset()
        rcl = standins.rcl
        rcl.add_certificate("renewed.contoso.com", 10)
        rcl.add_certificate("pending.contoso.com", 5, target="Azure Key Vault")
        rcl.add_certificate("gone.contoso.com", 20)
        rcl.add_certificate("later.contoso.com", 60)  # not due: RCL does not schedule it
        item = standins.avx.add_certificate("www.contoso.com")
        standins.avx.script(page_error("OPEN_WORK_ORDERS_FOUND"))  # the first renew call (the failing webhook)
        env = child_environment(standins, ingestion, azurite.connection_string, tmp_path_factory.mktemp("telemetry"))

        evening = run_child(
            env,
            [
                {
                    "webhook": {
                        "resourceId": item.resource_id,
                        "certificateFormat": {"format": "PFX", "password": CALLER_PFX_PASSWORD},
                    }
                },
                {"webhook": {"resourceId": item.resource_id}},
                {"function": "renew_timer"},
                {"probe": PROBE},
            ],
        )
        renew_calls = standins.avx.renew_calls()
        one_time_password = renew_calls[-1].json()["certificateFormat"]["password"]
        # Overnight RCL renews one certificate and the subscription loses another; the third is still in progress.
        rcl.complete_renewal("renewed.contoso.com", installed=True)
        rcl.remove("gone.contoso.com")
        morning = run_child(env, [{"function": "verify_renewals"}])
        yield Night(standins, ingestion, evening, morning, one_time_password)
    finally:
        ingestion.stop()


def events(night: Night, name: str, source: str | None = None) -> list[dict[str, Any]]:
    found = night.ingestion.events(name)
    return [e for e in found if source is None or e["properties"].get("source") == source]


def value(event: dict[str, Any], key: str) -> Any:
    if key in event.get("measurements", {}):
        return event["measurements"][key]
    return event["properties"].get(key)


def test_the_app_answered(night: Night) -> None:
    failed, renewed = night.outcome("renew_http")
    assert json.loads(failed["body"])["error"]["code"] == "OPEN_WORK_ORDERS_FOUND"
    assert renewed["status"] == 200, renewed["body"]
    assert all("error" not in o for o in night.outcomes), night.outcomes
    # The app's tracer provider is the only one (the distribution's own tracing stays off).
    assert "Overriding of current TracerProvider" not in night.evening.stderr


def test_every_event_of_the_table_arrives_with_its_properties(night: Night) -> None:
    invocation_ids = {o["invocationId"] for o in night.outcomes if o.get("invocationId")}
    for name, keys in EVENT_TABLE.items():
        found = events(night, name)
        assert found, f"no {name} event reached Application Insights; the app logged:\n{night.logs[-3000:]}"
        for event in found:
            properties = event["properties"]
            assert properties["source"] in ("rcl", "appviewx"), event
            assert properties["invocationId"] in invocation_ids, event
            if name != "RclRenewalRunCompleted":
                assert properties.get("certificateName"), event
            for key in keys:
                assert value(event, key) not in (None, ""), f"{name} lacks {key}: {event}"


def test_events_answer_what_renewed_what_failed_and_why(night: Night) -> None:
    scheduled = {e["properties"]["certificateName"]: e for e in events(night, "CertificateRenewalScheduled")}
    assert set(scheduled) == {"renewed.contoso.com", "pending.contoso.com", "gone.contoso.com"}
    pending_scheduled = scheduled["pending.contoso.com"]["properties"]
    assert pending_scheduled["target"] == "Azure Key Vault"
    assert pending_scheduled["expiryDate"].endswith("Z")
    assert pending_scheduled["certificateId"].isdigit()  # an identifier: a dimension, not a measurement

    (run,) = events(night, "RclRenewalRunCompleted")
    assert run["properties"]["outcome"] == "succeeded"
    assert run["measurements"]["scheduledCount"] == 3  # numbers are measurements
    assert isinstance(run["measurements"]["durationMs"], (int, float))

    (rcl_renewed,) = events(night, "CertificateRenewed", "rcl")
    assert rcl_renewed["properties"]["certificateName"] == "renewed.contoso.com"
    assert rcl_renewed["properties"]["installed"] == "true"
    assert rcl_renewed["properties"]["expiryDate"].endswith("Z")
    (avx_renewed,) = events(night, "CertificateRenewed", "appviewx")
    renewed_answer = json.loads(night.outcome("renew_http")[1]["body"])
    assert avx_renewed["properties"]["keyVaultCertificateId"] == renewed_answer["keyVault"]["id"]
    assert avx_renewed["properties"]["invocationId"] == night.outcome("renew_http")[1]["invocationId"]

    (pending,) = events(night, "CertificateRenewalPending")
    assert pending["properties"]["certificateName"] == "pending.contoso.com"
    assert pending["properties"]["scheduledAt"].endswith("Z")

    failures = {e["properties"]["reason"]: e for e in events(night, "CertificateRenewalFailed")}
    assert set(failures) == {"OPEN_WORK_ORDERS_FOUND", "RCL_CERTIFICATE_GONE"}
    assert failures["OPEN_WORK_ORDERS_FOUND"]["properties"]["source"] == "appviewx"
    assert failures["OPEN_WORK_ORDERS_FOUND"]["properties"]["message"]
    assert failures["RCL_CERTIFICATE_GONE"]["properties"]["certificateName"] == "gone.contoso.com"
    assert "gone.contoso.com" in failures["RCL_CERTIFICATE_GONE"]["properties"]["message"]

    near = {e["properties"]["certificateName"]: e for e in events(night, "CertificateNearExpiry")}
    assert set(near) == {"pending.contoso.com"}  # the renewed one moved out of the window
    assert near["pending.contoso.com"]["measurements"]["daysLeft"] in (4, 5)


def test_every_outbound_call_is_a_dependency(night: Night) -> None:
    dependencies = night.ingestion.dependencies()
    targets = {d.get("target") for d in dependencies if d.get("type") == "HTTP"}
    standins = night.standins
    for name, url in (
        ("AVX", standins.avx.url),
        ("Key Vault", standins.key_vault.url),
        ("identity endpoint", standins.identity.endpoint),
        ("RCL", standins.rcl.url),
    ):
        netloc = urlsplit(url).netloc
        assert netloc in targets, f"no dependency for the {name} calls ({netloc}); saw {sorted(map(str, targets))}"
    names = {d["name"] for d in dependencies}
    assert "PUT /avxapi/certificate/renew" in names
    assert any(n.endswith("/CertificateRenewal") for n in names) and any(n.endswith("/CertificateList") for n in names)
    # One dependency per identity call: the requests instrumentation's twin of the Azure SDK's span is dropped.
    identity_rows = [d for d in dependencies if d.get("target") == urlsplit(standins.identity.url).netloc]
    assert len(identity_rows) == len(standins.identity.requests)


def test_an_invocation_is_one_operation(night: Night) -> None:
    envelopes = night.ingestion.envelopes
    renewed = next(
        e
        for e in envelopes
        if e["data"]["baseType"] == "EventData"
        and e["data"]["baseData"]["name"] == "CertificateRenewed"
        and e["data"]["baseData"]["properties"]["source"] == "appviewx"
    )
    operation = renewed["tags"]["ai.operation.id"]
    in_operation = {
        e["data"]["baseData"]["name"]
        for e in envelopes
        if e["data"]["baseType"] == "RemoteDependencyData" and e["tags"].get("ai.operation.id") == operation
    }
    assert "PUT /avxapi/certificate/renew" in in_operation
    assert any("/import" in n for n in in_operation)


def test_no_secret_leaves_the_process(night: Night) -> None:
    secrets = (*SENTINELS, night.one_time_password, CALLER_PFX_PASSWORD)
    places = {
        "envelopes": json.dumps(night.ingestion.envelopes),
        "request bodies": b"".join(night.ingestion.raw_bodies).decode("utf-8", "replace"),
        "child stdout (HTTP answers)": night.evening.stdout + night.morning.stdout,
        "child stderr (logs)": night.evening.stderr + night.morning.stderr,
    }
    for place, text in places.items():
        for secret in secrets:
            assert secret not in text, f"{secret[:12]}... reached the {place}"


def test_the_guard_redacts_deliberate_leaks_on_every_path(night: Night) -> None:
    messages = [m["message"] for m in night.ingestion.messages() if PROBE in m.get("message", "")]
    assert messages and all("[REDACTED]" in m for m in messages), messages
    # The webhook registered the app's one-time PFX password, never the caller's (which stays out of every record by
    # construction: the no-secret test checks); the probe leaked the registered one too.
    leaked_list = messages[0].split(" leaking ", 1)[1].split(" with Authorization", 1)[0]
    assert leaked_list.count("[REDACTED]") == 3 + 1, messages  # three secret settings, the one-time PFX password
    assert "eyJ" not in messages[0]
    exceptions = [x for x in night.ingestion.exceptions() if PROBE in json.dumps(x)]
    assert exceptions, "the logged library exception did not arrive as an exception"
    details = exceptions[0]["exceptions"][0]
    assert details["typeName"] == "ConnectionError"
    assert "Traceback" in details["stack"] and f"ConnectionError: {PROBE} https://[REDACTED]@" in details["stack"]
    assert "[REDACTED]" in exceptions[0]["properties"]["detail"]
    probe_span = next(
        d
        for d in night.ingestion.dependencies()
        if d["name"] == "certrenew.invocation" and d["properties"].get("faas.invocation_id") == f"probe-{PROBE}"
    )
    assert "[REDACTED]" in probe_span["properties"]["probe.note"]
    assert PROBE in night.evening.stderr and "[REDACTED]" in night.evening.stderr


def test_events_are_also_readable_log_lines(night: Night) -> None:
    assert "certrenew.events: CertificateRenewalScheduled" in night.evening.stderr
    assert "certrenew.events: CertificateRenewalPending" in night.morning.stderr


def test_without_a_connection_string_the_exporter_is_not_imported(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APPLICATIONINSIGHTS_", "OTEL_"))}
    env["PYTHONPATH"] = str(REPO_ROOT)
    code = (
        "import sys, logging, function_app\n"
        "print(any(m.startswith(('azure.monitor', 'opentelemetry.sdk')) for m in sys.modules))\n"
        "print(logging.getLogRecordFactory().__module__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=CHILD_TIMEOUT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "shared.core.redaction"]
