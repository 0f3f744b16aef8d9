"""The redaction guard: one place that removes secrets from everything the app emits.

What is removed, wherever it appears (log message, its arguments and `extra` fields, exception text and
tracebacks, OpenTelemetry log records, span names, attributes, events and status):

- the values of the secret settings (`Settings.secret_values()`: AVX_PASSWORD, RCL_CLIENT_SECRET, ...), also in
  their URL-encoded and JSON-escaped forms;
- secrets the app generates and registers while it runs (`register_secret`), e.g. a one-time PFX password of
  `complete_pending` (never a caller-supplied value);
- bearer/basic credentials (`Bearer <token>`), JWT-shaped strings, `user:password@` in URLs;
- values of sensitive keys in `key=value` / `"key": "value"` text (password, pwd, secret, token, sessionId, sig, ...);
- PEM blocks (certificates, private keys) and long base64 runs (PFX, DER, key material).

The secrets known by value (the first two) are this module's; what secret-shaped text looks like (the rest) is
`shared.core.secret_shapes`.

Where it is attached (`install_logging_guard`, and by `shared.core.telemetry.configure_telemetry`):

- a log-record factory, so every record is clean from the moment it is made, whatever handler gets it;
- a `logging.Filter` on every root-logger handler (records made by `logging.makeLogRecord` or forwarded);
- `RedactingLogRecordProcessor`, first in the OpenTelemetry log pipeline (customEvents, traces, exceptions);
- `RedactingSpanExporter`, wrapping the Application Insights span exporter (requests and dependencies).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import traceback
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, quote_plus

from shared.core.secret_shapes import REDACTED, names_a_secret, redact_shapes

MIN_SECRET_LENGTH = 4
REGISTERED_SECRET_TTL_SECONDS = 30 * 60
# Only the app's own one-time secrets are registered (never a caller's value), a handful at a time: the cap keeps the
# alternation the guard compiles small, whatever happens, so redaction cost stays flat.
MAX_REGISTERED_SECRETS = 64


# -- secrets known at run time -------------------------------------------------------------------------------------
_lock = threading.Lock()
_registered: dict[str, float] = {}  # secret -> expiry (monotonic seconds)
_variants_cache: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())


def register_secret(value: str | None, ttl_seconds: float = REGISTERED_SECRET_TTL_SECONDS) -> None:
    """Redact `value` from everything emitted for the next `ttl_seconds` (an app-generated one-time password, a
    session id). Never register a value a caller chose: it could fill the list or blank ordinary words everywhere.

    Process-wide rather than context-scoped on purpose: the OpenTelemetry exporters format and send on their own
    threads, after the request's context is gone. Redacting one request's secret from another's output is harmless.
    """
    if not value or len(value) < MIN_SECRET_LENGTH:
        return
    now = time.monotonic()
    with _lock:
        _registered[value] = now + ttl_seconds
        while len(_registered) > MAX_REGISTERED_SECRETS:  # drop the one closest to expiry
            del _registered[min(_registered, key=_registered.__getitem__)]


_SETTINGS_REREAD_SECONDS = 1.0
_setting_cache: tuple[float, list[str]] = (-1e9, [])


def _setting_secrets() -> list[str]:
    # Read from the environment (at most once a second) rather than through `load_settings()`, whose process-wide
    # cache a log record must not fill: it would pin the settings to whatever the environment held at that moment.
    global _setting_cache
    read_at, values = _setting_cache
    now = time.monotonic()
    if now - read_at < _SETTINGS_REREAD_SECONDS:
        return values
    try:
        from shared.core.settings import Settings

        values = Settings(os.environ).secret_values()
    except Exception:  # a broken environment must not stop logging
        values = []
    _setting_cache = (now, values)
    return values


def _live_registered() -> list[str]:
    now = time.monotonic()
    with _lock:
        expired = [key for key, expiry in _registered.items() if expiry < now]
        for key in expired:
            del _registered[key]
        return list(_registered)


def _variants(secret: str) -> Iterable[str]:
    yield secret
    yield quote(secret, safe="")
    yield quote_plus(secret, safe="")
    yield json.dumps(secret)[1:-1]


def _secret_variants() -> tuple[str, ...]:
    """Every form of every known secret, longest first (so a secret inside a longer one is replaced after it)."""
    global _variants_cache
    raw = tuple(s for s in [*_setting_secrets(), *_live_registered()] if len(s) >= MIN_SECRET_LENGTH)
    cached_raw, cached = _variants_cache
    if raw == cached_raw:
        return cached
    variants = sorted({v for s in raw for v in _variants(s)}, key=lambda s: (-len(s), s))
    _variants_cache = (raw, tuple(variants))
    return _variants_cache[1]


# -- redaction of values ---------------------------------------------------------------------------------------------
def redact(text: str) -> str:
    """`text` with every secret the guard knows of replaced by a marker."""
    if not text:
        return text
    # A substring test per variant (a fast scan in C) instead of one compiled alternation: nothing to recompile
    # when a secret is added or expires, and a line without secrets costs a few microseconds per secret.
    for variant in _secret_variants():
        if variant in text:
            text = text.replace(variant, REDACTED)
    return redact_shapes(text)


def withhold(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with these secrets (in every form the guard knows) replaced by a marker: for a value that is never
    registered (a caller's PFX password) where an upstream's answer to the request that carried it is kept."""
    for secret in secrets:
        if secret and len(secret) >= MIN_SECRET_LENGTH:
            for variant in sorted(set(_variants(secret)), key=len, reverse=True):
                text = text.replace(variant, REDACTED)
    return text


def redact_value(value: Any) -> Any:
    """Strings redacted; lists, tuples and mappings redacted inside; numbers, booleans and None kept."""
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, bytes):
        return redact(value.decode("utf-8", "replace"))
    if isinstance(value, Mapping):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(v) for v in value)
    return redact(str(value))


def redact_named(name: str, value: Any) -> Any:
    """A named value (attribute, `extra` field): withheld whole when the name says it is secret."""
    if value is not None and names_a_secret(name):
        return REDACTED
    return redact_value(value)


def redact_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    return {key: redact_named(key, value) for key, value in (attributes or {}).items()}


# -- exceptions -----------------------------------------------------------------------------------------------------
class RedactedException(Exception):
    """Stands in for an exception whose text held a secret: same type name and traceback, redacted message."""


_proxy_classes: dict[type[BaseException], type[RedactedException]] = {}


def _proxy_class(original: type[BaseException]) -> type[RedactedException]:
    with _lock:
        proxy = _proxy_classes.get(original)
        if proxy is None:
            proxy = type(
                original.__name__,
                (RedactedException,),
                {"__module__": original.__module__, "__qualname__": original.__qualname__},
            )
            _proxy_classes[original] = proxy
        return proxy


def _exception_text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__name__}: unprintable>"


def redact_exception(exc: BaseException, _seen: set[int] | None = None) -> BaseException:
    """`exc` itself when its text (and its causes') is clean, otherwise a stand-in with the redacted text."""
    seen = _seen if _seen is not None else set()
    if id(exc) in seen:
        return exc
    seen.add(id(exc))
    cause = redact_exception(exc.__cause__, seen) if exc.__cause__ is not None else None
    context = redact_exception(exc.__context__, seen) if exc.__context__ is not None else None
    text = _exception_text(exc)
    clean = redact(text)
    if clean == text and cause is exc.__cause__ and context is exc.__context__:
        return exc
    proxy = _proxy_class(type(exc))(clean)
    proxy.__traceback__ = exc.__traceback__
    proxy.__cause__ = cause
    proxy.__context__ = context
    proxy.__suppress_context__ = exc.__suppress_context__
    return proxy


def format_exception(exc: BaseException) -> str:
    return redact("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))


# -- logging ---------------------------------------------------------------------------------------------------------
_STANDARD_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_PLAIN = (int, float, bool, type(None))


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Redact a log record in place: message and arguments, exception and stack text, `extra` fields.

    A clean record keeps its `msg` and `args`; one that held a secret gets the redacted message and no args."""
    try:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what can be shown
            message = f"{record.msg} {record.args!r}"
            record.args = None
        clean = redact(message)
        if clean != message or not isinstance(record.msg, str) or not record.args:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            _exc_type, exc, tb = record.exc_info
            replaced = redact_exception(exc)
            if replaced is not exc:
                record.exc_info = (type(replaced), replaced, tb)
            record.exc_text = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in list(vars(record).items()):
            if key not in _STANDARD_RECORD_FIELDS:
                setattr(record, key, redact_named(key, value))
    except Exception:  # never lose a log line to the guard; drop its content instead
        record.msg, record.args, record.exc_info, record.exc_text = (
            "[log record withheld: redaction failed]",
            None,
            None,
            None,
        )
    return record


class RedactingFilter(logging.Filter):
    """A handler filter that redacts each record in place (and never drops one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


_guard_lock = threading.Lock()
_filter = RedactingFilter("certrenew.redaction")
_previous_factory: Any = None


def _factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    return redact_record(_previous_factory(*args, **kwargs))


def install_logging_guard() -> None:
    """Redact every log record the process makes, and filter every root handler (idempotent; call again after
    handlers were added)."""
    global _previous_factory
    with _guard_lock:
        if _previous_factory is None:
            _previous_factory = logging.getLogRecordFactory()
            logging.setLogRecordFactory(_factory)
        for handler in logging.getLogger().handlers:
            if _filter not in handler.filters:
                handler.addFilter(_filter)


def uninstall_logging_guard() -> None:
    """Undo `install_logging_guard` (tests)."""
    global _previous_factory
    with _guard_lock:
        if _previous_factory is not None and logging.getLogRecordFactory() is _factory:
            logging.setLogRecordFactory(_previous_factory)
        _previous_factory = None
        for handler in logging.getLogger().handlers:
            handler.removeFilter(_filter)


# -- OpenTelemetry ---------------------------------------------------------------------------------------------------
# Imported lazily: these classes exist only when the OpenTelemetry SDK is in use (see shared.core.telemetry).
def redacting_log_record_processor() -> Any:
    """A LogRecordProcessor that redacts body and attributes; put it first in the logger provider's chain."""
    from opentelemetry.sdk._logs import LogRecordProcessor

    class RedactingLogRecordProcessor(LogRecordProcessor):
        def on_emit(self, log_record: Any) -> None:
            try:
                record = log_record.log_record
                if record.body is not None:
                    record.body = redact_value(record.body)
                attributes = record.attributes
                if attributes:
                    for key, value in list(attributes.items()):
                        clean = redact_named(key, value)
                        if clean is not value:
                            attributes[key] = clean
            except Exception:  # the SDK must not raise; withhold instead
                log_record.log_record.body = "[log record withheld: redaction failed]"
                log_record.log_record.attributes = {}

        def shutdown(self) -> None:
            return None

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True

    return RedactingLogRecordProcessor()


def redacting_span_exporter(inner: Any, keep: Any = None) -> Any:
    """A SpanExporter that hands `inner` redacted copies of the spans (names, attributes, events, status);
    `keep(span)`, when given, decides which spans are exported at all."""
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Status

    def copy(span: ReadableSpan) -> ReadableSpan:
        status = span.status
        if status.description:
            status = Status(status.status_code, redact(status.description))
        return ReadableSpan(
            name=redact(span.name),
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            attributes=redact_attributes(span.attributes),
            events=[Event(e.name, redact_attributes(e.attributes), e.timestamp) for e in span.events],
            links=span.links,
            kind=span.kind,
            status=status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )

    class RedactingSpanExporter(SpanExporter):
        def __init__(self, exporter: Any) -> None:
            self.inner = exporter

        def export(self, spans: Sequence[ReadableSpan]) -> Any:
            return self.inner.export([copy(span) for span in spans if keep is None or keep(span)])

        def shutdown(self) -> None:
            self.inner.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return bool(self.inner.force_flush(timeout_millis))

    return RedactingSpanExporter(inner)
