"""The redaction guard on its own: what it removes, what it keeps, and each place it is attached (log records and
their handlers, exception text and tracebacks, the OpenTelemetry log and span pipelines), plus the custom-event
record the Application Insights sink builds."""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from shared.core import redaction, telemetry
from shared.core.settings import reset_settings
from tests.standins import certs
from tests.standins.stack import AVX_PASSWORD, IDENTITY_HEADER, RCL_CLIENT_SECRET, WEBHOOK_HMAC_SECRET

JWT = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJhdWQiOiJodHRwczovL3ZhdWx0LmF6dXJlLm5ldCJ9.c2lnbmF0dXJlLXBhcnQtb25l"
SECRETS = (AVX_PASSWORD, IDENTITY_HEADER, RCL_CLIENT_SECRET, WEBHOOK_HMAC_SECRET)


@pytest.fixture(autouse=True)
def secret_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AVX_PASSWORD", AVX_PASSWORD)
    monkeypatch.setenv("IDENTITY_HEADER", IDENTITY_HEADER)
    monkeypatch.setenv("RCL_CLIENT_SECRET", RCL_CLIENT_SECRET)
    monkeypatch.setenv("WEBHOOK_HMAC_SECRET", WEBHOOK_HMAC_SECRET)
    reset_settings()
    monkeypatch.setattr(redaction, "_setting_cache", (-1e9, []))  # the guard rereads the environment at most 1/s
    yield
    reset_settings()


@pytest.fixture
def guard() -> Iterator[None]:
    installed_before = logging.getLogRecordFactory() is redaction._factory
    redaction.install_logging_guard()
    yield
    if not installed_before:
        redaction.uninstall_logging_guard()


@pytest.fixture
def captured(guard: None) -> Iterator[io.StringIO]:
    """A root handler added after the guard was installed (as a host adds its own), with a full formatter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s %(detail)s", defaults={"detail": ""}))
    root = logging.getLogger()
    root.addHandler(handler)
    previous = root.level
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(previous)


def assert_clean(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


# -- what is removed, what is kept -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "gone"),
    [
        (f"AVX said no to {AVX_PASSWORD}", AVX_PASSWORD),
        (f"url-encoded: pwd%3D{AVX_PASSWORD.replace('!', '%21')}", "7Qm%21x"),
        (f'{{"X-IDENTITY-HEADER": "{IDENTITY_HEADER}"}}', IDENTITY_HEADER),
        ("Authorization: Bearer abc.def-ghi_jkl", "abc.def-ghi_jkl"),
        ("Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        (f"token {JWT} expired", JWT[:20]),
        ('{"password": "hunter2-xyz", "resourceId": "r1"}', "hunter2-xyz"),
        ("password=hunter2-xyz&format=PFX", "hunter2-xyz"),
        ('{"keyVaultAccessToken": "kv-tok-123456"}', "kv-tok-123456"),
        ("{'sessionId': 'abcdef0123'}", "abcdef0123"),
        ("https://acct.blob.core.windows.net/c/b?sv=2024&sig=AbCd%2Bef", "AbCd%2Bef"),
        ("https://svc:p4ssw0rd@avx.example.com:31443/avxapi", "p4ssw0rd"),
    ],
)
def test_secrets_are_removed(text: str, gone: str) -> None:
    clean = redaction.redact(text)
    assert gone not in clean
    assert "REDACTED" in clean


def test_pem_blocks_and_base64_runs_are_removed() -> None:
    issued = certs.issue_certificate("pem.contoso.com")
    pem = issued.certificate.public_bytes(Encoding.PEM).decode()
    der_b64 = base64.b64encode(issued.certificate.public_bytes(Encoding.DER)).decode()
    key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"
    truncated = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHDBOBgkqhkiG9w0BBQ0wQTApBgkq"
    for text in (pem, key, truncated):
        clean = redaction.redact(f"before {text} after")
        assert "BEGIN" not in clean and clean.startswith("before [REDACTED PEM]")
    clean = redaction.redact(f"certificateContent={der_b64[:40]}x {der_b64}")
    assert der_b64[40:120] not in clean and "[REDACTED BASE64]" in clean


@pytest.mark.parametrize(
    "text",
    [
        "https://kv-certrenew.vault.azure.net/certificates/www-contoso-com/0a364b9c02954182b62244218328c6e2",
        "thumbprint B24278E45226BA8723E6962F8075D901A4B7C987 sha256 "
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "invocation 638c010c-d067-4da6-8070-b12ae1155f8d",
        "Could not get a token for Key Vault (scope https://vault.azure.net/.default): connection refused",
        "RCL scheduled renewed.contoso.com for renewal at 2026-11-27T11:41:47Z but it was not renewed within 24 h",
        "/devstoreaccount1/certrenewals(PartitionKey='rclbudget',RowKey='20261127')",
        "GET /avxapi/certificate/renew?gwsource=external&isSync=true&ttl=300",
    ],
)
def test_ordinary_text_is_kept(text: str) -> None:
    assert redaction.redact(text) == text


def test_registered_secret_is_removed_until_it_expires() -> None:
    password = "One-Time-Pfx-Pass-42!"
    redaction.register_secret(password)
    assert redaction.redact(f"pfx {password} and {json.dumps(password)}") == 'pfx [REDACTED] and "[REDACTED]"'
    redaction.register_secret(password, ttl_seconds=-1)  # registered again, its time up: kept no longer
    assert password in redaction.redact(password)
    redaction.register_secret("abc")  # too short to redact safely: ignored
    assert redaction.redact("abc cabbage") == "abc cabbage"


def test_named_values_are_withheld_whole() -> None:
    attributes = {"http.request.header.authorization": "opaque-value", "password": 1234, "certificateName": "x"}
    assert redaction.redact_attributes(attributes) == {
        "http.request.header.authorization": "[REDACTED]",
        "password": "[REDACTED]",
        "certificateName": "x",
    }


# -- logging -----------------------------------------------------------------------------------------------------------
def test_log_record_with_args_is_redacted(captured: io.StringIO, caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("certrenew.test.args")
    log.info("clean %s %d", "www-contoso-com", 3)
    clean = caplog.records[-1]
    assert (clean.msg, clean.args) == ("clean %s %d", ("www-contoso-com", 3))  # a clean record is left as it was
    log.warning("login as %s with %s failed %d times", "svc", AVX_PASSWORD, 3)
    log.info("mapping %(who)s %(pwd)s", {"who": "svc", "pwd": RCL_CLIENT_SECRET})
    log.info("header %s", {"X-IDENTITY-HEADER": IDENTITY_HEADER})
    log.info("object %s", ValueError(WEBHOOK_HMAC_SECRET))
    output = captured.getvalue()
    assert_clean(output)
    assert "login as svc with [REDACTED] failed 3 times" in output
    assert "mapping svc [REDACTED]" in output


def test_secret_split_across_format_and_args_is_redacted(captured: io.StringIO) -> None:
    head, tail = AVX_PASSWORD[:10], AVX_PASSWORD[10:]
    logging.getLogger("certrenew.test.split").warning(head + "%s", tail)
    assert AVX_PASSWORD not in captured.getvalue()


def test_extra_fields_and_bad_format_strings(captured: io.StringIO) -> None:
    log = logging.getLogger("certrenew.test.extra")
    log.info("with extra", extra={"detail": f"pwd={AVX_PASSWORD}", "client_secret": "raw-value-1"})
    log.info("bad format %d", "not a number")  # the guard must not raise on a broken call
    output = captured.getvalue()
    assert_clean(output)
    assert "with extra pwd=[REDACTED]" in output and "bad format" in output


def test_library_exception_with_a_secret_in_its_message(captured: io.StringIO) -> None:
    log = logging.getLogger("certrenew.test.exception")
    try:
        try:
            int(AVX_PASSWORD)  # the library's message quotes the value it was given
        except ValueError as inner:
            raise RuntimeError(f"could not parse the setting (token={IDENTITY_HEADER})") from inner
    except RuntimeError:
        log.exception("settings failed")
    output = captured.getvalue()
    assert_clean(output)
    assert "Traceback (most recent call last):" in output
    assert "ValueError: invalid literal for int() with base 10: '[REDACTED]'" in output
    assert "RuntimeError: could not parse the setting (token=[REDACTED])" in output
    assert "The above exception was the direct cause" in output


def test_exception_stand_in_keeps_type_name_and_traceback() -> None:
    try:
        raise KeyError(f"missing {AVX_PASSWORD}")
    except KeyError as exc:
        original = exc
        replaced = redaction.redact_exception(exc)
    clean = ValueError("nothing secret")
    assert redaction.redact_exception(clean) is clean
    assert type(replaced).__name__ == "KeyError" and isinstance(replaced, redaction.RedactedException)
    assert replaced.__traceback__ is original.__traceback__
    text = redaction.format_exception(replaced)
    assert "KeyError: " in text and "[REDACTED]" in text and AVX_PASSWORD not in text


def test_root_handlers_get_the_filter(guard: None) -> None:
    handler = logging.StreamHandler(io.StringIO())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        redaction.install_logging_guard()
        assert redaction._filter in handler.filters
        record = logging.makeLogRecord({"msg": f"made by hand {AVX_PASSWORD}", "levelno": logging.INFO})
        handler.handle(record)
        assert AVX_PASSWORD not in handler.stream.getvalue()  # type: ignore[attr-defined]
    finally:
        root.removeHandler(handler)


# -- OpenTelemetry pipelines --------------------------------------------------------------------------------------------
def test_otel_log_records_are_redacted() -> None:
    from opentelemetry._logs import SeverityNumber
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(redaction.redacting_log_record_processor())
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    provider.get_logger("certrenew.test").emit(
        severity_number=SeverityNumber.ERROR,
        body=f"failed with {AVX_PASSWORD}",
        attributes={
            "exception.message": f"Bearer {JWT}",
            "exception.stacktrace": f"Traceback ...\nValueError: {IDENTITY_HEADER}",
            "count": 3,
            "names": ["a", RCL_CLIENT_SECRET],
        },
    )
    provider.shutdown()
    (exported,) = exporter.get_finished_logs()
    record = exported.log_record
    text = json.dumps({"body": record.body, **{k: v for k, v in record.attributes.items()}}, default=list)
    assert_clean(text)
    assert JWT not in text
    assert record.attributes["count"] == 3
    assert record.body == "failed with [REDACTED]"


def test_spans_are_exported_redacted() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import Status, StatusCode

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(redaction.redacting_span_exporter(memory)))
    with provider.get_tracer("test").start_as_current_span(f"GET {AVX_PASSWORD}") as span:
        span.set_attribute("http.url", f"https://127.0.0.1/x?api-version=1&sig={WEBHOOK_HMAC_SECRET}")
        span.set_attribute("http.status_code", 500)
        span.record_exception(ValueError(f"boom {IDENTITY_HEADER}"))
        span.set_status(Status(StatusCode.ERROR, f"failed: {RCL_CLIENT_SECRET}"))
    provider.shutdown()
    (exported,) = memory.get_finished_spans()
    text = json.dumps(
        {
            "name": exported.name,
            "attributes": dict(exported.attributes or {}),
            "events": [dict(e.attributes or {}) for e in exported.events],
            "status": exported.status.description,
        }
    )
    assert_clean(text)
    assert exported.attributes["http.url"] == "https://127.0.0.1/x?api-version=1&sig=[REDACTED]"
    assert exported.attributes["http.status_code"] == 500
    assert exported.events[0].attributes["exception.type"] == "ValueError"


def test_span_filter_drops_requests_twins_of_azure_sdk_calls() -> None:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    def span(scope: str, user_agent: str) -> ReadableSpan:
        return ReadableSpan(
            name="GET /msi/token",
            attributes={"user_agent.original": user_agent},
            instrumentation_scope=InstrumentationScope(scope),
        )

    assert not telemetry._not_a_duplicate(span("opentelemetry.instrumentation.requests", "azsdk-python-identity/1.27"))
    assert telemetry._not_a_duplicate(span("opentelemetry.instrumentation.requests", "python-requests/2.34"))
    assert telemetry._not_a_duplicate(span("azure.keyvault.certificates", "azsdk-python-keyvault/4.12"))


# -- the custom-event record -----------------------------------------------------------------------------------------
def test_event_record_attributes() -> None:
    attributes: dict[str, Any] = telemetry.event_attributes(
        "CertificateNearExpiry",
        {"source": "rcl", "certificateName": "a.contoso.com", "certificateId": 101, "daysLeft": 4, "installed": False},
    )
    record = telemetry.event_record_attributes("CertificateNearExpiry", attributes)
    assert record[telemetry.CUSTOM_EVENT_NAME] == "CertificateNearExpiry"
    assert json.loads(record[telemetry.CUSTOM_MEASUREMENTS]) == {"daysLeft": 4}
    assert record["certificateId"] == "101" and record["installed"] == "false"
    assert "daysLeft" not in record


def test_a_secret_key_inside_another_value_is_redacted() -> None:
    from shared.core.redaction import redact

    text = redact("AVX said: password=Hunter2-xyz! and detail=token:abc123def ok")
    assert "Hunter2-xyz!" not in text and "abc123def" not in text
    assert text.startswith("AVX said: password=[REDACTED]") and text.endswith(" ok")
