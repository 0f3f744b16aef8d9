"""The asynchronous webhook's decisions: whether a caller asked for it (RFC 7240 `Prefer: respond-async`), what its
queue message holds, and how a delivered message becomes a renewal command again. Pure, no I/O.

A queue message carries the pendingId and the request's fields, never a password: anyone who can read the storage
account can read the queue. A PFX (or encrypted PEM key) password only protects the file on its way from AVX to this
app — Key Vault keeps no password and the PEM key is re-wrapped before import — so the queue function generates a
fresh one-time password for every delivery, whether the caller gave one or not; the caller's password is never
queued.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any

from shared.appviewx.validation import RenewCommand, parse_renew_request
from shared.core.certificates import generate_password
from shared.core.errors import Rejected

MESSAGE_VERSION = 1
# What a caller is told to wait before asking the status route: a renewal with a prompt AVX takes a few seconds.
RETRY_AFTER_ACCEPTED_SECONDS = 10
# A pending record is retried by the timer (every 15 min by default): asking every minute is plenty.
RETRY_AFTER_PENDING_SECONDS = 60
PENDING_ID = re.compile(r"^[0-9a-f]{32}$")


def prefers_async(values: str | None) -> bool:
    """True when a Prefer header (RFC 7240: comma-separated preferences, case-insensitive tokens, optional
    parameters after ';') holds `respond-async`."""
    if not values:
        return False
    for preference in values.split(","):
        name = preference.split(";", 1)[0].split("=", 1)[0].strip().lower()
        if name == "respond-async":
            return True
    return False


def status_location(pending_id: str) -> str:
    """The status route of a renewal, relative to the host (the caller's own host and scheme apply)."""
    return f"/api/certificates/renew/{pending_id}"


@dataclass(frozen=True)
class QueuedRenewal:
    pending_id: str
    command: RenewCommand


class BadQueueMessage(Exception):
    """A message this app could not have written (or an older format): nothing can be renewed from it."""


def queue_message(pending_id: str, command: RenewCommand) -> str:
    """The queue message of an accepted renewal: the request's fields, never its password."""
    request = command.avx
    body: dict[str, Any] = {
        "resourceId": request.resource_id,
        "commonName": request.common_name,
        "serialNumber": request.serial_number,
        "workflowType": request.workflow_type,
        "keyVaultCertificateName": command.key_vault_name,
        "keyVault": command.key_vault,
        "certificateFormat": {"format": request.format},
    }
    message: dict[str, Any] = {
        "v": MESSAGE_VERSION,
        "pendingId": pending_id,
        "request": {k: v for k, v in body.items() if v is not None},
        "oneTimePassword": bool(request.password),
    }
    if command.auto_approval is not None:
        message["autoApproval"] = command.auto_approval
    return json.dumps(message, separators=(",", ":"))


MAX_INTEGER_DIGITS = 16  # the message's only integer is its version


def _short_int(text: str) -> int:
    # int() of a 5,000-digit literal raises ValueError (past Python's 4,300-digit limit) after quadratic work
    if len(text) > MAX_INTEGER_DIGITS:
        raise ValueError("integer too long")
    return int(text)


def read_queue_message(body: bytes | str) -> QueuedRenewal:
    """The renewal a delivered message asks for, validated exactly as the webhook validates a request, with a fresh
    one-time password where the request had one (or its format needs one)."""
    try:
        message = json.loads(body, parse_int=_short_int)
    except (UnicodeDecodeError, ValueError, RecursionError):  # ValueError: not JSON, or a number too long
        raise BadQueueMessage("the message is not JSON this app writes") from None
    # `type(...) is int`: True == 1 in Python, and a message of another writer is refused whole.
    if not isinstance(message, dict) or type(message.get("v")) is not int or message["v"] != MESSAGE_VERSION:
        raise BadQueueMessage("the message is not a renewal message of this app")
    if not isinstance(message.get("oneTimePassword", False), bool):
        raise BadQueueMessage("the message's oneTimePassword is not true or false")
    pending_id, request = message.get("pendingId"), message.get("request")
    if not isinstance(pending_id, str) or not PENDING_ID.match(pending_id) or not isinstance(request, dict):
        raise BadQueueMessage("the message names no pendingId or request")
    query = {}
    if isinstance(message.get("autoApproval"), bool):
        query["autoApproval"] = "true" if message["autoApproval"] else "false"
    try:
        parsed = parse_renew_request(json.dumps(request).encode(), query)
    except Rejected as rejected:
        raise BadQueueMessage(f"the queued request is invalid: {rejected.answer.code}") from None
    if message.get("oneTimePassword") and not parsed.avx.password:
        parsed = replace(parsed, avx=replace(parsed.avx, password=generate_password()))
    return QueuedRenewal(pending_id, parsed)
