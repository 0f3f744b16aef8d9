"""UTC time as the app shows it everywhere (answers, events, tables, messages): one rule, one place."""

from __future__ import annotations

from datetime import UTC, datetime


def utc(moment: datetime) -> datetime:
    """`moment` in UTC; a naive datetime (RCL writes dates without a zone) is taken as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def iso_utc(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with a `Z` (`2026-12-02T11:41:46Z`); None stays None."""
    return utc(moment).isoformat().replace("+00:00", "Z") if moment else None
