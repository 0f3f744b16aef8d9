"""Telemetry: structured custom events (Application Insights `customEvents`) and the invocation they belong to.

Every event is a readable log line; sinks (the Application Insights exporter, a test's recorder) receive the
structured event itself.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from contextvars import ContextVar
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

events_logger = logging.getLogger("certrenew.events")
_invocation_id: ContextVar[str | None] = ContextVar("certrenew_invocation_id", default=None)


@contextmanager
def invocation(invocation_id: str | None) -> Iterator[None]:
    """Tie the events emitted inside to one function invocation."""
    token = _invocation_id.set(invocation_id)
    try:
        yield
    finally:
        _invocation_id.reset(token)


def current_invocation_id() -> str | None:
    return _invocation_id.get()


def iso_utc(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


EventSink = Callable[[str, dict[str, Any]], None]
_sinks: list[EventSink] = []


def add_event_sink(sink: EventSink) -> None:
    """Send every event also to `sink` (the Application Insights exporter, or a test's recorder)."""
    _sinks.append(sink)


def remove_event_sink(sink: EventSink) -> None:
    if sink in _sinks:
        _sinks.remove(sink)


def event_attributes(name: str, properties: dict[str, Any]) -> dict[str, Any]:
    """The event's attributes: None values left out, dates as ISO 8601 UTC, the invocation id added."""
    attributes: dict[str, Any] = {"invocationId": current_invocation_id()}
    for key, value in properties.items():
        attributes[key] = iso_utc(value) if isinstance(value, datetime) else value
    return {k: v for k, v in attributes.items() if v is not None}


def emit_event(name: str, properties: dict[str, Any]) -> None:
    """Emit one custom event: a readable log line, and the structured event to every sink."""
    attributes = event_attributes(name, properties)
    summary = " ".join(f"{k}={v}" for k, v in attributes.items())
    events_logger.info("%s %s", name, summary, extra={"custom_event": name})
    for sink in list(_sinks):
        sink(name, attributes)
