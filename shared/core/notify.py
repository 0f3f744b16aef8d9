"""Notifications: a chat or webhook message when a certificate renewal fails, a certificate nears expiry, an
endpoint still serves another certificate than Key Vault's current version, or an Azure resource is pinned to an old
version (or still uses the old certificate a day after a renewal).

With the optional setting `NOTIFY_WEBHOOK_URL`, `install_notifications` registers a `Notifier` as a telemetry event
sink (shared.core.telemetry). On `CertificateRenewalFailed`, `CertificateNearExpiry`, `CertificateExpired`,
`CertificateNotDeployed`, `CertificateConsumerPinned` and `CertificateConsumerStale` — and on no other event — it posts
one message naming the certificate, the source (rcl / appviewx / endpoint / keyvault / discovery) and the reason and
message (or the expiry date and days left; or the host, the thumbprint it serves and Key Vault's; or the resource and
the version it is pinned to), shaped for the receiver (`message_format`, a pure function of the URL; `NOTIFY_FORMAT`
overrides it):

- `teams`: a Teams message whose one attachment is an Adaptive Card (1.4: TextBlocks and a FactSet) — what the
  Teams Workflows trigger "When a Teams webhook request is received" (Power Automate, `*.environment.api.
  powerplatform.com`; Logic Apps, `*.logic.azure.com`) and the legacy Teams incoming webhooks
  (`*.webhook.office.com`) accept;
- `slack`: Slack's incoming-webhook shape, `text` (the notification fallback) plus Block Kit `blocks`;
- `json`: one flat object, for anything else (an Azure Function, an API Management endpoint, a Logic App with its
  own schema, ...).

Delivery goes through `shared.core.outbound.send` (timeouts, retries with backoff and jitter that honour Retry-After on
429/5xx/connection errors, at most 3 tries) inside a total budget of 15 seconds: the sink runs synchronously in the
invocation that emitted the event, because Functions may freeze or recycle a worker once the invocation has
returned, so a background post could be lost. A notification never fails a renewal: the sink catches everything
and logs a warning naming only the receiver's host (the URL's path or query is its credential). After a failed
delivery, further notifications are skipped for a minute (each skip logged), so a nightly check that finds many
certificates near expiry does not spend 15 seconds on each while the receiver is down.

Every value that comes from a caller or an upstream is stripped of control and bidi characters and escaped for the
receiver (Teams: Markdown backslash-escaped; Slack: `&<>` escaped and formatting characters broken; both: bare URLs
defanged), so a resourceId cannot become a clickable link. At most one message per event, certificate and reason is
sent an hour (`DEDUP_SECONDS`); this memory is per process (best effort: with N instances up to N an hour), which
bounds what callers can cause without a table write per notification.

Messages carry only the event attributes listed in `MessageFacts`, redacted by the redaction guard as well; events
never carry secrets, and a failure's raw exception text never reaches them (only the event's `message`).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from shared.core import redaction
from shared.core.errors import SettingsError
from shared.core.events import Event, Source
from shared.core.outbound import AnswerTooLarge, Deadline, RetryPolicy, new_session, send
from shared.core.settings import NOTIFY_FORMATS, Settings
from shared.core.telemetry import add_event_sink, remove_event_sink
from shared.security.callers import clean_text

if TYPE_CHECKING:  # requests is imported where a call is made, to keep cold start short
    import requests

log = logging.getLogger("certrenew.notify")

APP_NAME = "certrenew"
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
ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"
ADAPTIVE_CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
ADAPTIVE_CARD_VERSION = "1.4"

# Hosts of Teams Workflows (Power Automate / Logic Apps "When a Teams webhook request is received") and of the legacy
# Teams incoming webhooks (Microsoft 365 connectors): all take a `message` with an Adaptive Card attachment.
TEAMS_HOST_SUFFIXES = (
    ".logic.azure.com",  # Logic Apps and older Workflows URLs: prod-NN.<region>.logic.azure.com
    ".powerplatform.com",  # Power Automate Workflows: <env>.environment.api.powerplatform.com
    ".powerautomate.com",
    ".webhook.office.com",  # legacy Teams incoming webhooks: <tenant>.webhook.office.com/webhookb2/...
)
SLACK_HOSTS = frozenset({"hooks.slack.com", "hooks.slack-gov.com"})

SOURCE_LABELS = {
    Source.RCL: "RCL (Azure certificate renewal service)",
    Source.APPVIEWX: "AppViewX",
    Source.ENDPOINT: "endpoint check",
    Source.KEYVAULT: "Key Vault event (not renewed by this app)",
    Source.DISCOVERY: "consumer discovery (Azure Resource Graph)",
}
MAX_TEXT = 1500  # a message's longest text value; Slack allows 2,000 per field, Teams cards stay readable
UNKNOWN_CERTIFICATE = "(not identified)"

# Delivery bounds: per attempt (connect, read), the whole delivery, and the pause after a failed delivery.
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


# -- the format, from the URL -----------------------------------------------------------------------------------------
def message_format(url: str, override: str | None = None) -> str:
    """`teams`, `slack` or `json`: `override` when given, otherwise by the URL's host."""
    if override:
        chosen = override.strip().lower()
        if chosen not in NOTIFY_FORMATS:
            raise ValueError(f"unknown notification format {override!r}; use one of {', '.join(NOTIFY_FORMATS)}")
        return chosen
    try:
        host = (urlsplit(url.strip()).hostname or "").rstrip(".").lower()
    except ValueError:
        return "json"
    if host in SLACK_HOSTS:
        return "slack"
    if host.endswith(TEAMS_HOST_SUFFIXES):
        return "teams"
    return "json"


def describe_url(url: str) -> str:
    """What may be shown of a webhook URL: scheme and host (and port), never its path or query."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(unreadable URL)"
    return f"{parts.scheme}://{host}{port}"


# -- the message ------------------------------------------------------------------------------------------------------
def _text(value: Any) -> str | None:
    """A caller- or upstream-supplied value as a message may carry it: redacted, without control or bidi
    characters (no fake line breaks), bounded."""
    if value is None:
        return None
    return clean_text(redaction.redact(str(value)), MAX_TEXT) or None


_URL_SCHEME = re.compile(r"(?i)\b([a-z][a-z0-9+.-]{1,15}):(?=//)")
# "_" inside a word (OPEN_WORK_ORDERS_FOUND) never starts emphasis, so only a word-boundary "_" is escaped.
_WORD_BOUNDARY_UNDERSCORE = r"(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])"
_TEAMS_MARKDOWN = re.compile(r"([\\`*{}\[\]()<>#+!|~]|" + _WORD_BOUNDARY_UNDERSCORE + ")")
_SLACK_FORMATTING = re.compile(r"([*~`]|" + _WORD_BOUNDARY_UNDERSCORE + ")")


def _defang_urls(text: str) -> str:
    # "https://x" -> "https\u200b://x": still readable, no longer turned into a clickable link by Teams or Slack.
    return _URL_SCHEME.sub("\\1\u200b:", text)


def teams_escape(text: str) -> str:
    """A value shown in an Adaptive Card TextBlock or FactSet (which render Markdown): every Markdown character
    backslash-escaped, bare URLs defanged."""
    return _defang_urls(_TEAMS_MARKDOWN.sub(r"\\\1", text))


def slack_value(text: str) -> str:
    """A value shown in Slack mrkdwn (escaped for &, <, > where the text is composed): formatting characters
    broken with a zero-width space, bare URLs defanged. `<` and `>` are escaped later, so no `<url|text>` link."""
    return _defang_urls(_SLACK_FORMATTING.sub("\u200b\\1\u200b", text))


@dataclass(frozen=True)
class MessageFacts:
    """The only attributes a message shows, taken from one event."""

    event: Event
    source: str | None
    certificate_name: str | None
    reason: str | None = None
    message: str | None = None
    expiry_date: str | None = None
    days_left: int | None = None
    invocation_id: str | None = None
    host: str | None = None  # CertificateNotDeployed: the endpoint, what it serves and what it should serve
    served_thumbprint: str | None = None
    expected_thumbprint: str | None = None
    consumer_id: str | None = None  # CertificateConsumerPinned / Stale: the Azure resource and what it uses
    consumer_type: str | None = None
    pinned_version: str | None = None
    current_version: str | None = None

    @classmethod
    def of(cls, event: str, attributes: dict[str, Any]) -> MessageFacts:
        days = attributes.get("daysLeft")
        return cls(
            event=Event(event),
            source=_text(attributes.get("source")),
            certificate_name=_text(attributes.get("certificateName")),
            reason=_text(attributes.get("reason")),
            message=_text(attributes.get("message")),
            expiry_date=_text(attributes.get("expiryDate") or attributes.get("servedExpiryDate")),
            days_left=int(days) if isinstance(days, (int, float)) and not isinstance(days, bool) else None,
            invocation_id=_text(attributes.get("invocationId")),
            host=_text(attributes.get("host")),
            served_thumbprint=_text(attributes.get("servedThumbprint")),
            expected_thumbprint=_text(attributes.get("expectedThumbprint")),
            consumer_id=_text(attributes.get("consumerId")),
            consumer_type=_text(attributes.get("consumerType")),
            pinned_version=_text(attributes.get("pinnedVersion")),
            current_version=_text(attributes.get("currentVersion")),
        )

    @property
    def source_label(self) -> str:
        return SOURCE_LABELS.get(self.source or "", self.source or "unknown")

    @property
    def certificate(self) -> str:
        return self.certificate_name or UNKNOWN_CERTIFICATE

    @property
    def title(self) -> str:
        if self.event == Event.NEAR_EXPIRY:
            return f"Certificate near expiry: {self.certificate}"
        if self.event == Event.EXPIRED:
            return f"Certificate expired: {self.certificate}"
        if self.event == Event.NOT_DEPLOYED:
            return f"Certificate not deployed: {self.certificate} on {self.host or '?'}"
        if self.event == Event.CONSUMER_PINNED:
            return f"Certificate consumer pinned to an old version: {self.certificate}"
        if self.event == Event.CONSUMER_STALE:
            return f"Certificate consumer still uses the old certificate: {self.certificate}"
        return f"Certificate renewal failed: {self.certificate}"

    @property
    def summary(self) -> str:
        if self.event == Event.NEAR_EXPIRY:
            left = "an unknown number of" if self.days_left is None else str(self.days_left)
            return f"{self.certificate} ({self.source_label}) expires in {left} day(s), on {self.expiry_date or '?'}."
        if self.event == Event.EXPIRED:
            return f"{self.certificate} ({self.source_label}) expired on {self.expiry_date or '?'}."
        if self.event == Event.NOT_DEPLOYED:
            left = "an unknown number of" if self.days_left is None else str(self.days_left)
            return (
                f"{self.host or '?'} still serves another certificate than the current version of {self.certificate} "
                f"in Key Vault; the one it serves expires in {left} day(s), on {self.expiry_date or '?'}."
            )
        if self.event in (Event.CONSUMER_PINNED, Event.CONSUMER_STALE):
            return self._consumer_summary()
        return f"{self.certificate} ({self.source_label}) was not renewed: {self.reason or 'UNKNOWN'}."

    def _consumer_summary(self) -> str:
        consumer = f"{self.consumer_type or 'A resource'} {self.consumer_id or '?'}"
        if self.event == Event.CONSUMER_PINNED:
            left = "an unknown number of" if self.days_left is None else str(self.days_left)
            return (
                f"{consumer} references version {self.pinned_version or '?'} of {self.certificate}, not the current "
                f"{self.current_version or '?'}: it never moves to a renewal; the pinned one expires in {left} day(s)."
            )
        return (
            f"{consumer} still uses {self.served_thumbprint or '?'} a day after {self.certificate} was renewed "
            f"(current: {self.expected_thumbprint or '?'})."
        )

    def escaped(self, escape: Callable[[str], str]) -> MessageFacts:
        """The same facts with every caller- or upstream-supplied text passed through `escape`."""
        changes = {
            f.name: escape(getattr(self, f.name))
            for f in fields(self)
            if f.name != "event" and isinstance(getattr(self, f.name), str)
        }
        return replace(self, **changes)

    def facts(self) -> list[tuple[str, str]]:
        rows: list[tuple[str, str | None]] = [("Certificate", self.certificate), ("Source", self.source_label)]
        if self.event in (Event.NEAR_EXPIRY, Event.EXPIRED):
            rows += [
                ("Expires", self.expiry_date),
                ("Days left", None if self.days_left is None else str(self.days_left)),
            ]
        elif self.event == Event.NOT_DEPLOYED:
            rows += [
                ("Host", self.host),
                ("Serves", self.served_thumbprint),
                ("Served one expires", self.expiry_date),
                ("Days left", None if self.days_left is None else str(self.days_left)),
                ("Key Vault's current", self.expected_thumbprint),
            ]
        elif self.event in (Event.CONSUMER_PINNED, Event.CONSUMER_STALE):
            rows += [
                ("Resource", self.consumer_id),
                ("Type", self.consumer_type),
                ("Pinned version", self.pinned_version),
                ("Days left", None if self.days_left is None else str(self.days_left)),
                ("Uses", self.served_thumbprint),
                ("Current version", self.current_version),
                ("Key Vault's current", self.expected_thumbprint),
            ]
        else:
            rows += [("Reason", self.reason), ("Message", self.message)]
        rows.append(("Invocation", self.invocation_id))
        return [(title, value) for title, value in rows if value]


def teams_message(facts: MessageFacts) -> dict[str, Any]:
    """A Teams message with one Adaptive Card attachment (the Workflows trigger reads attachments[0].content)."""
    facts = facts.escaped(teams_escape)
    color = "Warning" if facts.event == Event.NEAR_EXPIRY else "Attention"
    card = {
        "$schema": ADAPTIVE_CARD_SCHEMA,
        "type": "AdaptiveCard",
        "version": ADAPTIVE_CARD_VERSION,
        "msteams": {"width": "Full"},
        "body": [
            {
                "type": "TextBlock",
                "text": facts.title,
                "weight": "Bolder",
                "size": "Medium",
                "color": color,
                "wrap": True,
            },
            {"type": "TextBlock", "text": facts.summary, "wrap": True},
            {"type": "FactSet", "facts": [{"title": title, "value": value} for title, value in facts.facts()]},
            {"type": "TextBlock", "text": f"{APP_NAME} · {facts.event}", "isSubtle": True, "size": "Small"},
        ],
    }
    return {
        "type": "message",
        "attachments": [{"contentType": ADAPTIVE_CARD, "contentUrl": None, "content": card}],
    }


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(facts: MessageFacts) -> dict[str, Any]:
    """Slack's incoming-webhook shape: `text` (notifications, fallback) and Block Kit `blocks`."""
    facts = facts.escaped(slack_value)
    emoji = ":hourglass_flowing_sand:" if facts.event == Event.NEAR_EXPIRY else ":x:"
    fields = [{"type": "mrkdwn", "text": f"*{title}*\n{_slack_escape(value)}"} for title, value in facts.facts()]
    return {
        "text": _slack_escape(f"{facts.title} — {facts.summary}"),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": facts.title[:150], "emoji": True}},
            {"type": "section", "text": {"type": "mrkdwn", "text": f"{emoji} {_slack_escape(facts.summary)}"}},
            {"type": "section", "fields": fields[:10]},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"{APP_NAME} · {facts.event}"}]},
        ],
    }


def json_message(facts: MessageFacts) -> dict[str, Any]:
    """One flat object with a fixed set of keys (null where the event has no value)."""
    return {
        "event": facts.event,
        "source": facts.source,
        "certificateName": facts.certificate_name,
        "reason": facts.reason,
        "message": facts.message,
        "expiryDate": facts.expiry_date,
        "daysLeft": facts.days_left,
        "invocationId": facts.invocation_id,
        "host": facts.host,
        "servedThumbprint": facts.served_thumbprint,
        "expectedThumbprint": facts.expected_thumbprint,
        "consumerId": facts.consumer_id,
        "consumerType": facts.consumer_type,
        "pinnedVersion": facts.pinned_version,
        "currentVersion": facts.current_version,
        "app": APP_NAME,
    }


BUILDERS: dict[str, Callable[[MessageFacts], dict[str, Any]]] = {
    "teams": teams_message,
    "slack": slack_message,
    "json": json_message,
}


def build_message(fmt: str, event: str, attributes: dict[str, Any]) -> dict[str, Any]:
    return BUILDERS[fmt](MessageFacts.of(event, attributes))


# -- delivery ---------------------------------------------------------------------------------------------------------
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
    _quiet_until: float = field(default=0.0, init=False, repr=False)
    dedup_seconds: float = DEDUP_SECONDS
    _sent: OrderedDict[tuple[str, str, str], float] = field(default_factory=OrderedDict, init=False, repr=False)

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
        certificate = _text(attributes.get("certificateName")) or UNKNOWN_CERTIFICATE
        with self._lock:
            quiet_for = self._quiet_until - self.clock()
        if quiet_for > 0:
            log.warning(
                "Notification of %s for %s to %s skipped: the last delivery failed (retrying deliveries in %.0f s)",
                name,
                certificate,
                self.target,
                quiet_for,
            )
            return Delivery(delivered=False, skipped=True, problem="cooling down after a failed delivery")
        # Per certificate and reason; an endpoint event is per host and a consumer event per resource, so each stale
        # host and each pinned resource is heard of.
        where = attributes.get("reason") or attributes.get("host") or attributes.get("consumerId")
        key = (name, certificate, _text(where) or "")
        if not self._reserve(key):
            log.info("Notification of %s for %s skipped: already sent within the hour", name, certificate)
            return Delivery(delivered=False, skipped=True, problem="already notified within the hour")
        delivery = self.deliver(build_message(self.format, name, attributes))
        if not delivery.delivered:
            self._unreserve(key)  # a failed delivery may be tried again (after the cooldown)
        with self._lock:
            self._quiet_until = 0.0 if delivery.delivered else self.clock() + self.cooldown_seconds
        if delivery.delivered:
            log.info("Notification of %s for %s sent to %s (%s)", name, certificate, self.target, delivery.status)
        else:
            log.warning(
                "Notification of %s for %s to %s failed: %s; the renewal itself is unaffected",
                name,
                certificate,
                self.target,
                delivery.problem,
            )
        return delivery

    def deliver(self, payload: dict[str, Any]) -> Delivery:
        """POST `payload` within the budget; the outcome, never an exception."""
        import requests

        # The budget bounds the whole delivery: every attempt, every wait and every read of the answer (a receiver
        # trickling its answer cannot hold the invocation beyond it).
        deadline = Deadline.after(self.budget_seconds, self.clock)
        try:
            response = send(
                self.session,
                "POST",
                self.url,
                idempotent=True,  # a duplicate chat message is better than a lost one
                policy=self.policy,
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


# -- installation -----------------------------------------------------------------------------------------------------
_install_lock = threading.Lock()
_installed: Notifier | None = None


def notifier_for(settings: Settings) -> Notifier | None:
    """The notifier the settings ask for, or None when NOTIFY_WEBHOOK_URL is not set. Raises SettingsError."""
    config = settings.notify
    if not config.webhook_url:
        return None
    return Notifier(url=config.webhook_url, format=message_format(config.webhook_url, config.format))


def install_notifications(settings: Settings) -> Notifier | None:
    """Register the notifier the settings ask for as an event sink, once per process, and return it.

    Called again, it keeps the registered notifier when the settings are unchanged, replaces it when they changed,
    and removes it when NOTIFY_WEBHOOK_URL is no longer set. Invalid notification settings are logged as an error
    and leave notifications off: they must not stop the app from renewing.
    """
    global _installed
    try:
        wanted = notifier_for(settings)
    except SettingsError as exc:
        log.error("Notifications are off: %s", exc.message)
        wanted = None
    with _install_lock:
        current = _installed
        if current is not None and wanted is not None and (current.url, current.format) == (wanted.url, wanted.format):
            wanted.close()
            return current
        if current is not None:
            remove_event_sink(current)
            current.close()
        _installed = wanted
        if wanted is not None:
            add_event_sink(wanted)
            log.info("Notifications on: %s messages to %s", wanted.format, wanted.target)
        return wanted


def uninstall_notifications() -> None:
    """Remove the registered notifier, if any (tests and the local stack)."""
    global _installed
    with _install_lock:
        if _installed is not None:
            remove_event_sink(_installed)
            _installed.close()
            _installed = None
