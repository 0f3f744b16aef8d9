"""Delivery of notifications: the `Notifier` event sink, which posts one message per notified event.

On `CertificateRenewalFailed`, `CertificateNearExpiry`, `CertificateExpired` and `CertificateNotDeployed` — and on no
other event — it posts one message naming the certificate, the source (rcl / appviewx / endpoint / keyvault) and the
reason and message (or the expiry date and days left; or the host, the thumbprint it serves and Key Vault's), shaped
for the receiver (shared.notify.formats).

Delivery goes through `shared.core.outbound.send` (timeouts, retries with backoff and jitter that honour Retry-After on
429/5xx/connection errors, at most 3 tries) inside a total budget of 15 seconds: the sink runs synchronously in the
invocation that emitted the event, because Functions may freeze or recycle a worker once the invocation has
returned, so a background post could be lost. A notification never fails a renewal: the sink catches everything
and logs a warning naming only the receiver's host (the URL's path or query is its credential). A notification whose
delivery failed is kept and retried after the next delivery that succeeds (shared.notify.backlog); for a minute
after a failure each notification is tried once, and failing deliveries together spend at most one budget in that
minute (then notifications are held, counted, and retried later), so a nightly check that finds many certificates
near expiry does not spend 15 seconds on each while the receiver is down — and none is dropped wholesale.

At most one message per event, certificate and reason is sent an hour (`DEDUP_SECONDS`); this memory is per process
(best effort: with N instances up to N an hour). Across certificates, at most NOTIFY_BUDGET messages go out per
10-minute window, all instances together (shared.notify.budget); the rest are held back and one digest per window
says how many, with the KQL that lists them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from shared.core.events import Event
from shared.core.outbound import AnswerTooLarge, Deadline, RetryPolicy, new_session, send
from shared.core.telemetry import emit_event
from shared.notify.backlog import Backlog, Undelivered
from shared.notify.budget import Digest, NotificationBudget, held_back_kql
from shared.notify.facts import UNKNOWN_CERTIFICATE, message_text
from shared.notify.formats import APP_NAME, build_message

if TYPE_CHECKING:  # requests is imported where a call is made, to keep cold start short
    import requests

log = logging.getLogger("certrenew.notify")

# Key Vault's expired event is only reported for a certificate nobody renews; not deployed: an endpoint still serves
# another certificate than Key Vault's current one.
# A consumer pinned to an old version, or still on the old certificate a day after renewal: the same risk, found in
# the Azure resources themselves (Resource Graph).
NOTIFIED_EVENTS = frozenset(
    {
        Event.RENEWAL_FAILED,
        Event.NEAR_EXPIRY,
        Event.EXPIRED,
        Event.NOT_DEPLOYED,
        Event.CONSUMER_PINNED,
        Event.CONSUMER_STALE,
    }
)

# Delivery bounds: per attempt (connect, read), the whole delivery, and the window after a failed delivery in which
# failing deliveries share one budget.
TIMEOUT = (5.0, 10.0)
BUDGET_SECONDS = 15.0
MAX_ANSWER_BYTES = 64 * 1024  # the receiver's answer is not used; a bigger one is not read
COOLDOWN_SECONDS = 60.0
# At most one message per (event, certificate, reason) in this window, so callers cannot flood a channel. In-process
# and best effort: each instance keeps its own memory (bounded), so N instances may send up to N messages an hour;
# the renewal events themselves are never de-duplicated.
DEDUP_SECONDS = 3600.0
DEDUP_MAX_KEYS = 4096
RETRY_POLICY = RetryPolicy(attempts=3, base_delay=0.5, max_delay=4.0, max_retry_after=BUDGET_SECONDS)


def describe_url(url: str) -> str:
    """What may be shown of a webhook URL: scheme and host (and port), never its path or query."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(unreadable URL)"
    return f"{parts.scheme}://{host}{port}"


@dataclass(frozen=True)
class Delivery:
    """What one notification came to (for logs and tests)."""

    delivered: bool
    status: int | None = None
    problem: str | None = None
    skipped: bool = False


@dataclass(eq=False)  # identity equality: the sink list finds this very notifier
class Notifier:
    """The event sink that posts notifications. Never raises."""

    url: str = field(repr=False)
    format: str = "json"
    timeout: tuple[float, float] = TIMEOUT
    budget_seconds: float = BUDGET_SECONDS
    cooldown_seconds: float = COOLDOWN_SECONDS
    policy: RetryPolicy = RETRY_POLICY
    session: requests.Session = field(default_factory=lambda: new_session(pool_size=8), repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    dedup_seconds: float = DEDUP_SECONDS
    _sent: OrderedDict[tuple[str, str, str], float] = field(default_factory=OrderedDict, init=False, repr=False)
    backlog: Backlog = field(init=False, repr=False)
    # The global bound: NOTIFY_BUDGET messages per 10-minute window, per instance and shared in the table.
    budget: NotificationBudget = field(default_factory=NotificationBudget, repr=False)
    wall_clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC), repr=False)

    def __post_init__(self) -> None:
        self.backlog = Backlog(lambda: self.budget_seconds, lambda: self.cooldown_seconds, lambda: self.clock())

    def _reserve(self, key: tuple[str, str, str]) -> bool:
        """Claim the right to send `key` now: False when it was sent (or is being sent) within the window."""
        now = self.clock()
        with self._lock:
            sent_at = self._sent.get(key)
            if sent_at is not None and now - sent_at < self.dedup_seconds:
                return False
            self._sent[key] = now
            self._sent.move_to_end(key)
            while len(self._sent) > DEDUP_MAX_KEYS:
                self._sent.popitem(last=False)
            return True

    def _unreserve(self, key: tuple[str, str, str]) -> None:
        with self._lock:
            self._sent.pop(key, None)

    @property
    def target(self) -> str:
        return describe_url(self.url)

    def __call__(self, name: Event, attributes: dict[str, Any]) -> None:
        if name not in NOTIFIED_EVENTS:
            return
        try:
            self.notify(name, attributes)
        except Exception as exc:  # a notification never fails what emitted the event
            log.warning("Notification of %s to %s failed: %s", name, self.target, type(exc).__name__)

    def notify(self, name: Event, attributes: dict[str, Any]) -> Delivery:
        certificate = message_text(attributes.get("certificateName")) or UNKNOWN_CERTIFICATE
        # Per certificate and reason; an endpoint event is per host and a consumer event per resource, so each stale
        # host and each pinned resource is heard of.
        where = attributes.get("reason") or attributes.get("host") or attributes.get("consumerId")
        key = (name, certificate, message_text(where) or "")
        if not self._reserve(key):
            log.info("Notification of %s for %s skipped: already sent within the hour", name, certificate)
            return Delivery(delivered=False, skipped=True, problem="already notified within the hour")
        self.flush_digest()
        if not self.budget.take(self.wall_clock()):
            log.info(
                "Notification of %s for %s held back: %d messages per 10 minutes were sent already",
                name,
                certificate,
                self.budget.limit,
            )
            return Delivery(delivered=False, skipped=True, problem="held back by the notification budget")
        item = Undelivered(key, name, certificate, build_message(self.format, name, attributes))
        left = self.backlog.budget_left()
        if left <= 0:  # failing deliveries spent this minute's budget: kept, tried after the next success
            self._unreserve(key)
            self._dropped(self.backlog.hold(item))
            log.warning(
                "Notification of %s for %s to %s held: deliveries failed within the last minute and used its %g s "
                "budget; it is retried after the next delivery that succeeds (%s)",
                name,
                certificate,
                self.target,
                self.budget_seconds,
                self._counts(),
            )
            return Delivery(delivered=False, skipped=True, problem="held after failed deliveries")
        return self._send(item, left, once=self.backlog.in_window())

    def _send(self, item: Undelivered, budget: float, *, once: bool) -> Delivery:
        """Post one notification within `budget` (one try when `once`); kept for a retry when it fails."""
        started = self.clock()
        delivery = self.deliver(item.payload, budget=budget, once=once)
        if not delivery.delivered:
            self._unreserve(item.key)  # a failed delivery may be tried again
            self._dropped(self.backlog.failed(item, self.clock() - started))
            log.warning(
                "Notification of %s for %s to %s failed: %s; kept to be retried (%s); the renewal itself is unaffected",
                item.name,
                item.certificate,
                self.target,
                delivery.problem,
                self._counts(),
            )
            return delivery
        log.info("Notification of %s for %s sent to %s (%s)", item.name, item.certificate, self.target, delivery.status)
        self._retry_kept(self.backlog.succeeded())
        return delivery

    def flush_digest(self) -> list[Delivery]:
        """Send the digest of each window that is over and held messages back (once across instances)."""
        return [self._send_digest(digest) for digest in self.budget.due_digests(self.wall_clock())]

    def _send_digest(self, digest: Digest) -> Delivery:
        attributes = digest_attributes(digest, self.budget.limit)
        emit_event(Event.NOTIFICATIONS_HELD, attributes)
        delivery = self.deliver(build_message(self.format, Event.NOTIFICATIONS_HELD, attributes))
        if delivery.delivered:
            log.info("Notification digest (%d held back) sent to %s", digest.held, self.target)
        else:
            log.warning(
                "Notification digest (%d held back) to %s failed: %s", digest.held, self.target, delivery.problem
            )
        return delivery

    def _retry_kept(self, kept: list[Undelivered]) -> None:
        """After a success: the kept notifications, each tried once, together within one budget."""
        deadline = Deadline.after(self.budget_seconds, self.clock)
        for index, item in enumerate(kept):
            if deadline.left() <= 0 or self.backlog.in_window():  # no time left, or the receiver failed again
                self.backlog.give_back(kept[index:])
                return
            if not self._reserve(item.key):
                continue  # sent meanwhile
            self.backlog.counts["retried"] += 1
            self._send_retry(item, deadline)

    def _send_retry(self, item: Undelivered, deadline: Deadline) -> None:
        started = self.clock()
        delivery = self.deliver(item.payload, budget=deadline.left(), once=True)
        if delivery.delivered:
            self.backlog.counts["delivered"] += 1
            log.info("Notification of %s for %s delivered on retry (%s)", item.name, item.certificate, self._counts())
            return
        self._unreserve(item.key)
        self._dropped(self.backlog.failed(item, self.clock() - started))

    def _dropped(self, item: Undelivered | None) -> None:
        if item is not None:
            log.error(
                "Notification of %s for %s to %s given up after %d tries (%s)",
                item.name,
                item.certificate,
                self.target,
                item.tries,
                self._counts(),
            )

    def _counts(self) -> str:
        counts = self.backlog.counts
        return ", ".join(f"{k} {counts[k]}" for k in ("delivered", "failed", "retried", "held", "dropped"))

    def deliver(self, payload: dict[str, Any], *, budget: float | None = None, once: bool = False) -> Delivery:
        """POST `payload` within the budget (the whole one unless given; one try when `once`); the outcome, never an
        exception."""
        import requests

        # The budget bounds the whole delivery: every attempt, every wait and every read of the answer (a receiver
        # trickling its answer cannot hold the invocation beyond it).
        deadline = Deadline.after(self.budget_seconds if budget is None else budget, self.clock)
        policy = replace(self.policy, attempts=1) if once else self.policy
        try:
            response = send(
                self.session,
                "POST",
                self.url,
                idempotent=True,  # a duplicate chat message is better than a lost one
                policy=policy,
                timeout=self.timeout,
                sleep=self.sleep,
                deadline=deadline,
                max_bytes=MAX_ANSWER_BYTES,
                json=payload,
                headers={"User-Agent": f"{APP_NAME}-notify"},
                allow_redirects=False,
            )
        except requests.Timeout:
            return Delivery(delivered=False, problem=f"no answer within the {self.budget_seconds:g} s budget")
        except (requests.RequestException, AnswerTooLarge) as exc:
            # Only the type: requests' exception text quotes the URL, whose path or query is the credential.
            return Delivery(delivered=False, problem=type(exc).__name__)
        if 200 <= response.status_code < 300:
            return Delivery(delivered=True, status=response.status_code)
        return Delivery(delivered=False, status=response.status_code, problem=f"HTTP {response.status_code}")

    def close(self) -> None:
        self.session.close()


def digest_attributes(digest: Digest, limit: int) -> dict[str, Any]:
    """What the digest says: how many were held back in which window, and the KQL that lists them."""
    window = f"{digest.start:%Y-%m-%d %H:%M}-{digest.end:%H:%M} UTC"
    return {
        "reason": "NOTIFY_BUDGET",
        "heldBack": digest.held,
        "windowStart": digest.start,
        "message": (
            f"{digest.held} notification(s) held back in {window}: the budget is {limit} messages per 10 minutes. "
            f"Every one is in Application Insights: {held_back_kql(digest.start, digest.end, NOTIFIED_EVENTS)}"
        ),
    }
