"""Caller or upstream text made safe to echo (answers, events, notifications). Pure, no I/O."""

from __future__ import annotations

import re

MAX_SHOWN_TEXT = 500
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]+")


def clean_text(text: str | None, limit: int = MAX_SHOWN_TEXT) -> str | None:
    """Upstream or caller text made safe to echo: control and bidi characters become one space, at most `limit`
    characters."""
    if text is None:
        return None
    cleaned = _CONTROL.sub(" ", str(text)).strip()
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"
