"""Telemetry: structured custom events (Application Insights `customEvents`), the invocation they belong to, and
the Application Insights set-up.

Every event is a readable log line; sinks (the Application Insights exporter, a test's recorder) receive the
structured event itself.

`configure_telemetry()` runs once per process when `function_app` is imported. It always installs the redaction
guard on logging; when `APPLICATIONINSIGHTS_CONNECTION_STRING` is set it also configures the Azure Monitor
OpenTelemetry distribution (imported only then):

- logs of every logger go to Application Insights `traces` / `exceptions`;
- outbound calls made with `requests` and through the Azure SDK become `dependencies`;
- each event goes through `_application_insights_sink` as an OpenTelemetry log record carrying
  `microsoft.custom_event.name`, which the exporter turns into a `customEvents` row: text values become
  `customDimensions`, numbers `customMeasurements` (identifiers such as `certificateId` stay dimensions);
- the redaction guard (shared.core.redaction) is the first log-record processor and wraps the span exporter.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from shared.core import redaction
from shared.core.events import Event
from shared.core.timestamps import iso_utc

events_logger = logging.getLogger("certrenew.events")
_invocation_id: ContextVar[str | None] = ContextVar("certrenew_invocation_id", default=None)


@contextmanager
def invocation(invocation_id: str | None, function_context: Any = None) -> Iterator[None]:
    """Tie the events emitted inside to one function invocation.

    With Application Insights configured, the invocation is also a span, so its dependencies and events share one
    operation id; given the Functions `context`, that span continues the host's trace (`context.trace_context`).
    """
    token = _invocation_id.set(invocation_id)
    try:
        with ExitStack() as stack:
            if _configured_monitor:
                stack.enter_context(_invocation_span(invocation_id, function_context))
            yield
    finally:
        _invocation_id.reset(token)


@contextmanager
def _invocation_span(invocation_id: str | None, function_context: Any) -> Iterator[None]:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    parent = None
    trace_context = getattr(function_context, "trace_context", None)
    traceparent = getattr(trace_context, "trace_parent", None) or getattr(trace_context, "Traceparent", None)
    if traceparent:
        tracestate = getattr(trace_context, "trace_state", None) or getattr(trace_context, "Tracestate", None)
        carrier = {"traceparent": str(traceparent), **({"tracestate": str(tracestate)} if tracestate else {})}
        parent = TraceContextTextMapPropagator().extract(carrier=carrier)
    name = getattr(function_context, "function_name", None) or "certrenew.invocation"
    attributes = {"faas.invocation_id": invocation_id} if invocation_id else {}
    token = otel_context.attach(parent) if parent is not None else None
    try:
        with trace.get_tracer("certrenew").start_as_current_span(str(name), attributes=attributes):
            yield
    finally:
        if token is not None:
            otel_context.detach(token)


def current_invocation_id() -> str | None:
    return _invocation_id.get()


EventSink = Callable[[Event, dict[str, Any]], None]
_sinks: list[EventSink] = []


def add_event_sink(sink: EventSink) -> None:
    """Send every event also to `sink` (the Application Insights exporter, or a test's recorder)."""
    _sinks.append(sink)


def remove_event_sink(sink: EventSink) -> None:
    if sink in _sinks:
        _sinks.remove(sink)


def event_attributes(name: Event, properties: dict[str, Any]) -> dict[str, Any]:
    """The event's attributes: None values left out, dates as ISO 8601 UTC, the invocation id added, and `vault` (the
    name of the vault it is about; the default vault's when the event does not name it; left out when the event says
    None: a vault that cannot be told)."""
    attributes: dict[str, Any] = {"invocationId": current_invocation_id()}
    for key, value in properties.items():
        attributes[key] = iso_utc(value) if isinstance(value, datetime) else value
    if "vault" not in attributes:
        attributes["vault"] = default_vault_name()
    return {k: v for k, v in attributes.items() if v is not None}


def default_vault_name() -> str | None:
    """The default vault's name (KEY_VAULT_URLS' first), or None while the Key Vault settings are wrong."""
    from shared.core.errors import CertRenewError
    from shared.core.settings import load_settings

    try:
        return load_settings().key_vault.default.name or None
    except CertRenewError:
        return None


def emit_event(name: Event, properties: dict[str, Any]) -> None:
    """Emit one custom event (its name is always an `Event`): a readable log line, and the structured event to every
    sink."""
    attributes = event_attributes(name, properties)
    summary = " ".join(f"{k}={v}" for k, v in attributes.items())
    events_logger.info("%s %s", name, summary, extra={"custom_event": name})
    for sink in list(_sinks):
        sink(name, attributes)


# -- Application Insights ------------------------------------------------------------------------------------------
CUSTOM_EVENT_NAME = "microsoft.custom_event.name"
CUSTOM_MEASUREMENTS = "microsoft.custom_measurements"
# The distribution's instrumentations the app uses: outbound HTTP through requests, and the Azure SDK's own spans.
INSTRUMENTATIONS = {"requests": True, "azure_sdk": True}
OTHER_INSTRUMENTATIONS = ("django", "fastapi", "flask", "httpx", "httpx2", "psycopg2", "urllib", "urllib3")
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")

_configure_lock = threading.Lock()
_configured = False
_configured_monitor = False
log = logging.getLogger("certrenew.telemetry")


def event_record_attributes(name: str, attributes: dict[str, Any]) -> dict[str, Any]:
    """An event as OpenTelemetry log-record attributes the Application Insights exporter makes a customEvents row
    of: text as properties, numbers as measurements (identifiers stay properties), booleans as "true"/"false".
    Every value leaves as a plain `str` (an `Event`/`Source` member becomes its value)."""
    record: dict[str, Any] = {CUSTOM_EVENT_NAME: str(name)}
    measurements: dict[str, float | int] = {}
    for key, value in attributes.items():
        if isinstance(value, bool):
            record[key] = "true" if value else "false"
        elif isinstance(value, (int, float)) and not key.lower().endswith("id"):
            measurements[key] = value
        elif isinstance(value, (list, tuple, dict)):
            record[key] = redaction.redact(json.dumps(value, default=str))
        else:
            record[key] = redaction.redact_named(key, str(value))
    if measurements:
        record[CUSTOM_MEASUREMENTS] = json.dumps(measurements)
    return record


def _application_insights_sink(name: Event, attributes: dict[str, Any]) -> None:
    from opentelemetry._logs import SeverityNumber, get_logger

    get_logger("certrenew.events").emit(
        severity_number=SeverityNumber.INFO,
        severity_text="INFO",
        body=str(name),
        attributes=event_record_attributes(name, attributes),
    )


def _ingestion_is_local(connection_string: str) -> bool:
    for part in connection_string.split(";"):
        key, _, value = part.partition("=")
        if key.strip().lower() == "ingestionendpoint":
            return urlsplit(value.strip()).hostname in _LOCAL_HOSTS
    return False


def _not_a_duplicate(span: Any) -> bool:
    """False for the `requests` span of an HTTP call the Azure SDK already traced (same call, reported twice: the
    SDK's span does not always suppress the requests instrumentation, e.g. for managed-identity token calls)."""
    scope = getattr(span.instrumentation_scope, "name", "") or ""
    if not scope.startswith("opentelemetry.instrumentation.requests"):
        return True
    attributes = span.attributes or {}
    user_agent = str(attributes.get("user_agent.original") or attributes.get("http.user_agent") or "")
    return not user_agent.startswith("azsdk-python-")


# Loggers whose INFO lines describe the exporter's own HTTP calls: noise in Application Insights, and their export
# would log again (recursion the OpenTelemetry handler has to break).
QUIET_LOGGERS = ("azure.core.pipeline.policies.http_logging_policy", "azure.monitor.opentelemetry.exporter")


def configure_telemetry() -> bool:
    """Once per process: the redaction guard, and Application Insights when its connection string is set.

    Returns whether Application Insights is configured.
    """
    global _configured, _configured_monitor
    with _configure_lock:
        if _configured:
            redaction.install_logging_guard()  # handlers added since (the worker's) get the filter too
            return _configured_monitor
        _configured = True
        redaction.install_logging_guard()
        from shared.core.settings import load_settings

        connection_string = load_settings().telemetry.connection_string
        if not connection_string:
            return False
        if os.environ.get("PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY", "").strip().lower() == "true":
            # The worker configured the distribution itself; only the events are added to its pipeline.
            log.warning(
                "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY is true: the Functions worker exports telemetry, so the "
                "app's redaction processor is not in that pipeline. Unset it to let the app configure telemetry."
            )
            add_event_sink(_application_insights_sink)
            return False
        for name in QUIET_LOGGERS:
            if logging.getLogger(name).level == logging.NOTSET:
                logging.getLogger(name).setLevel(logging.WARNING)
        _configure_azure_monitor(connection_string)
        add_event_sink(_application_insights_sink)
        redaction.install_logging_guard()  # the distribution added its handler to the root logger
        _configured_monitor = True
        return True


def _configure_azure_monitor(connection_string: str) -> None:
    if not os.environ.get("WEBSITE_SITE_NAME"):  # on Azure the App Service detector names the app (cloud role)
        os.environ.setdefault("OTEL_SERVICE_NAME", "certrenew")
    # Only the App Service resource detector: the VM detector would probe the instance metadata service.
    os.environ.setdefault("OTEL_EXPERIMENTAL_RESOURCE_DETECTORS", "azure_app_service")
    if _ingestion_is_local(connection_string):
        # A local ingestion endpoint (tests, the local stack): nothing may leave the machine.
        os.environ.setdefault("APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL", "true")
        os.environ.setdefault("APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED", "true")

    from azure.core.settings import settings as azure_core_settings
    from azure.core.tracing.ext.opentelemetry_span import OpenTelemetrySpan
    from azure.monitor.opentelemetry import configure_azure_monitor
    from azure.monitor.opentelemetry.exporter import ApplicationInsightsSampler, AzureMonitorTraceExporter
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # Tracing is set up here rather than by the distribution so that the span exporter can be wrapped by the
    # redaction guard (spans are immutable once ended; the copy it exports is redacted).
    resource = Resource.create()
    tracer_provider = TracerProvider(resource=resource, sampler=ApplicationInsightsSampler(sampling_ratio=1.0))
    exporter = AzureMonitorTraceExporter(connection_string=connection_string)
    exported = redaction.redacting_span_exporter(exporter, keep=_not_a_duplicate)
    tracer_provider.add_span_processor(BatchSpanProcessor(exported))
    trace.set_tracer_provider(tracer_provider)
    azure_core_settings.tracing_implementation = OpenTelemetrySpan

    options: dict[str, dict[str, bool]] = {name: {"enabled": on} for name, on in INSTRUMENTATIONS.items()}
    options.update({name: {"enabled": False} for name in OTHER_INSTRUMENTATIONS})
    # The distribution's own tracing stays off: its `disable_tracing` argument is overridden by its environment
    # default, so the documented switch OTEL_TRACES_EXPORTER=none is set for the call.
    previous = os.environ.get("OTEL_TRACES_EXPORTER")
    os.environ["OTEL_TRACES_EXPORTER"] = "none"
    try:
        configure_azure_monitor(
            connection_string=connection_string,
            resource=resource,
            enable_live_metrics=False,
            log_record_processors=[redaction.redacting_log_record_processor()],
            instrumentation_options=options,
        )
    finally:
        if previous is None:
            del os.environ["OTEL_TRACES_EXPORTER"]
        else:
            os.environ["OTEL_TRACES_EXPORTER"] = previous
