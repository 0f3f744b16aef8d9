"""One deadline shared by every AppViewX call of a synchronous webhook request (`total_deadline`), read by the AVX
client when it sets each call's own deadline (`AVX_TIMEOUT_SECONDS`)."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

from shared.core.errors import AvxError
from shared.core.outbound import Deadline

# Azure's front end ends an HTTP request after 230 s. A synchronous webhook call gives all its AVX calls together
# (search, login, renew) at most this long, leaving the rest for Key Vault and the answer.
SYNC_AVX_SECONDS = 200.0
MIN_CALL_SECONDS = 1.0  # a call with less time left is not started
_TOTAL_DEADLINE: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("avx_total_deadline", default=None)


@contextmanager
def total_deadline(seconds: float | None = None) -> Iterator[None]:
    """Every AVX call made within (on this thread or task) ends by one shared deadline, `seconds` (default
    SYNC_AVX_SECONDS) from now."""
    token = _TOTAL_DEADLINE.set(Deadline.after(SYNC_AVX_SECONDS if seconds is None else seconds))
    try:
        yield
    finally:
        _TOTAL_DEADLINE.reset(token)


def call_deadline(own_seconds: float) -> Deadline:
    """The deadline of one AVX call: its own (`own_seconds` from now) or the shared one, whichever comes first.
    Raises AvxError (AVX_TIMEOUT, not sent: AVX cannot have acted) when the shared one leaves too little time."""
    own = Deadline.after(own_seconds)
    shared = _TOTAL_DEADLINE.get()
    if shared is None or shared.expires_at >= own.expires_at:
        return own
    if shared.left() < MIN_CALL_SECONDS:
        raise AvxError(
            "The time for AppViewX calls of this request ran out before the next call; it was not sent",
            code="AVX_TIMEOUT",
            remediation="Retry later, or send the renewal with Prefer: respond-async.",
            sent=False,
        )
    return shared
