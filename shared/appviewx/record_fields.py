"""What a renewal record's fields may hold as stored (its states, and the type of each field), so a row no version
of the app wrote is refused as UnreadableRecord (a StateStoreError) when it is read, never a TypeError later. Pure."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from shared.core.errors import StateStoreError


class RenewalState(StrEnum):
    """A renewal record's `state`, stored as its value."""

    ACCEPTED = "accepted"  # written before AVX was called; AVX may be acting
    PENDING = "pending"  # AVX renewed or may have; not in Key Vault yet
    RENEWED = "renewed"  # stored in Key Vault
    FAILED = "failed"  # for good, with its reason

    @classmethod
    def stored(cls, value: object) -> RenewalState:
        """The state a row holds; rows of older versions say `completed` for renewed."""
        text = str(value or "")
        try:
            return cls(LEGACY_STATES.get(text, text))
        except ValueError:
            raise StateStoreError(f"A renewal record has an unknown state {text[:40]!r}") from None


OPEN_STATES = frozenset({RenewalState.ACCEPTED, RenewalState.PENDING})


def shown_as_outcome(state: RenewalState, lease_until: datetime | None) -> bool:
    """A record that is its certificate's last outcome (live and backfilled alike): settled, or left pending for the
    next run; never a write-ahead (in flight) or a record a run holds."""
    return state not in OPEN_STATES or (state is RenewalState.PENDING and lease_until is None)


LEGACY_STATES = {"completed": RenewalState.RENEWED.value}


class UnreadableRecord(StateStoreError):
    """A row of the renewal table that no version of the app wrote (a field of the wrong type, an unknown state)."""


_TIMES = ("created_at", "next_attempt_at", "completed_at", "lease_until", "queue_expires_at")
_REQUIRED_TIMES = ("created_at", "next_attempt_at")
_FLAGS = ("sent_to_avx",)


def _checked_time(key: str, value: object) -> datetime | None:
    if value is None and key not in _REQUIRED_TIMES:
        return None
    if not isinstance(value, datetime):
        raise UnreadableRecord(f"A renewal record's {key} is not a date")
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def checked_field(key: str, value: object) -> object:
    """A stored field as the record holds it, or UnreadableRecord naming the field (never a TypeError later)."""
    if key in _TIMES:
        return _checked_time(key, value)
    if key == "state":
        return RenewalState.stored(value)
    if key == "attempts":
        if isinstance(value, bool) or not isinstance(value, (int, type(None))):
            raise UnreadableRecord("A renewal record's attempts is not a number")
        return int(value or 0)
    if key in _FLAGS:
        if value is not None and not isinstance(value, bool):
            raise UnreadableRecord(f"A renewal record's {key} is not true or false")
        return value
    if value is not None and not isinstance(value, str):
        raise UnreadableRecord(f"A renewal record's {key} is not text")
    return value
