"""Reading AppViewX's JSON answers safely: unreadable bodies (not UTF-8 or JSON, nested too deep, numbers longer than
any AVX sends) read as None instead of escaping as a bare error, and ids or names longer than any real one are a bad
answer. Pure, no I/O."""

from __future__ import annotations

import json
from typing import Any

from shared.core.errors import AvxError
from shared.core.upstream import optional_text

# AVX's ids and names are short (a 24-character id, a host name): anything longer is not an id, and a record or tag
# holding it could not be saved (a table property holds 64 KiB, a tag 256 characters).
MAX_AVX_ID_LENGTH = 256
MAX_AVX_NUMBER_LENGTH = 64  # an epoch in milliseconds has 13 digits; int() of thousands of digits raises


def _bounded_number(text: str) -> float | int:
    if len(text) > MAX_AVX_NUMBER_LENGTH:
        raise ValueError("number too long")
    return float(text) if any(c in text for c in ".eE") else int(text)


def read_json(body: bytes) -> Any:
    """AVX's JSON answer, or None when it is unreadable: not UTF-8 or JSON, nested too deep, or holding a number
    longer than any AVX sends (each would otherwise escape as a bare error)."""
    try:
        return json.loads(body.decode("utf-8"), parse_int=_bounded_number, parse_float=_bounded_number)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None


def bounded_id(value: Any, field_name: str) -> str | None:
    """An id or name of AVX's answer, refused (AVX_BAD_RESPONSE) when longer than any real one."""
    text = optional_text(value)
    if text is not None and len(text) > MAX_AVX_ID_LENGTH:
        raise AvxError(
            f"AppViewX answered with a {field_name} of {len(text)} characters (at most {MAX_AVX_ID_LENGTH} are "
            "accepted)",
            code="AVX_BAD_RESPONSE",
        )
    return text


def ids_fit(listed: dict[str, Any]) -> bool:
    """A listed certificate whose ids are longer than any real one is not one AVX could mean: left out."""
    return all(
        len(optional_text(listed.get(name)) or "") <= MAX_AVX_ID_LENGTH
        for name in ("resourceId", "_id", "commonName", "serialNumber")
    )
