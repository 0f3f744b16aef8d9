"""Signed callers: optional HMAC-SHA256 over "<timestamp>.<body>" with a shared secret (WEBHOOK_HMAC_SECRET)."""

from __future__ import annotations

import hashlib
import hmac
import re

from shared.core.errors import ApiError, Rejected

MAX_SKEW_SECONDS = 300
PREFIX = "sha256="
# ASCII digits only: str.isdigit() also accepts "²³" or Arabic-Indic digits, which int() then refuses.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")

_REMEDIATION = (
    'Send X-Signature-Timestamp (Unix seconds) and X-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" '
    "with the shared secret>, from a clock within 5 minutes of UTC."
)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Signature value a caller sends (also used by the CLI and tests)."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return PREFIX + digest


def verify(secret: str, timestamp: str | None, signature: str | None, body: bytes, now: float) -> None:
    """Returns when the request is signed correctly; otherwise raises `Rejected` with the 401 to answer (which never
    says which part failed beyond what the caller can fix)."""
    if not timestamp or not signature:
        raise Rejected(
            ApiError(401, "SIGNATURE_MISSING", "X-Signature-Timestamp and X-Signature are required", _REMEDIATION)
        )
    if not _TIMESTAMP.fullmatch(timestamp):
        raise Rejected(ApiError(401, "SIGNATURE_INVALID", "X-Signature-Timestamp must be Unix seconds", _REMEDIATION))
    if abs(now - int(timestamp)) > MAX_SKEW_SECONDS:
        raise Rejected(
            ApiError(401, "SIGNATURE_EXPIRED", "The signature timestamp is more than 300 s from now", _REMEDIATION)
        )
    if not hmac.compare_digest(sign(secret, timestamp, body).encode(), signature.strip().lower().encode()):
        raise Rejected(ApiError(401, "SIGNATURE_INVALID", "The request signature does not match", _REMEDIATION))


def replayed() -> ApiError:
    return ApiError(
        401,
        "SIGNATURE_REPLAYED",
        "This signed request was already accepted once",
        "Sign each request anew (a fresh X-Signature-Timestamp); to repeat a request safely, send the same "
        "Idempotency-Key with it.",
    )


def unsigned_query(query_names: list[str]) -> None:
    """With signing on, the query is not signed: only the function key (`code`) may be there; autoApproval goes in
    the (signed) body. Raises `Rejected` otherwise."""
    extra = sorted(name for name in query_names if name != "code")
    if not extra:
        return
    raise Rejected(
        ApiError(
            400,
            "INVALID_REQUEST",
            f"Signed requests accept no query parameter but the function key (code); got {', '.join(extra)[:200]}",
            'Put autoApproval in the JSON body ("autoApproval": false): the query is not covered by the signature.',
        )
    )
