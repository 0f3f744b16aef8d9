"""Words, times and rounding the status tables and the local report share."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from shared.core.timestamps import iso_utc, utc

# Record states as the operator reads them; a state not listed prints as stored (new states need no change here).
STATE_WORDS = {"scheduled": "pending"}  # an RCL record not seen renewed yet: the follow-up check's "pending"
INSTALLED_WORDS = {True: "installed on its target", False: "not installed on its target yet"}


def state_word(state: Any) -> str:
    return STATE_WORDS.get(str(state or ""), str(state or ""))


def parse_time(value: Any) -> datetime | None:
    """A datetime from a table value or an ISO string (telemetry properties); None when there is none."""
    if isinstance(value, datetime):
        return utc(value)
    if isinstance(value, str) and value.strip():
        try:
            return utc(datetime.fromisoformat(value.strip()))
        except ValueError:
            return None
    return None


def when(value: Any) -> str:
    """ISO 8601 UTC to the second (`2026-12-08T22:36:02Z`): microseconds are noise in a table."""
    moment = parse_time(value)
    if moment is None:
        return "" if value in (None, "") else str(value)
    return iso_utc(moment.replace(microsecond=0)) or ""


def days_until(moment: datetime, now: datetime) -> int:
    """Whole days to `moment`, to the nearest day (10.9 days is "in 11 days")."""
    return math.floor((utc(moment) - utc(now)) / timedelta(days=1) + 0.5)


def in_days(value: Any, now: datetime) -> str:
    moment = parse_time(value)
    if moment is None:
        return ""
    days = days_until(moment, now)
    if days == 0:
        return "today"
    count = f"{abs(days)} day{'' if abs(days) == 1 else 's'}"
    return f"in {count}" if days > 0 else f"{count} ago"


def expiry_words(value: Any, now: datetime) -> str:
    """`2026-12-08T22:36:02Z (in 11 days)`."""
    relative = in_days(value, now)
    return f"{when(value)} ({relative})" if relative else when(value)


def clip(text: Any, width: int = 80) -> str:
    """`text` on one line, at most about `width` characters, cut between words (never inside one)."""
    words = " ".join(str(text or "").split())
    if len(words) <= width:
        return words
    cut = words.rfind(" ", 0, width)
    return (words[:cut] if cut > 0 else words.split(" ", 1)[0]).rstrip(" ,;:") + " …"
