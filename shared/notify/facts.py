"""What a notification says: the few attributes of one event a message shows (`MessageFacts`), its title, summary
and fact rows. Pure, no I/O.

Messages carry only the event attributes listed in `MessageFacts`, redacted by the redaction guard as well and stripped
of control and bidi characters; events never carry secrets, and a failure's raw exception text never reaches them
(only the event's `message`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

from shared.core import redaction
from shared.core.events import Event, Source
from shared.core.text import clean_text

SOURCE_LABELS = {
    Source.RCL: "RCL (Azure certificate renewal service)",
    Source.APPVIEWX: "AppViewX",
    Source.ENDPOINT: "endpoint check",
    Source.KEYVAULT: "Key Vault event (not renewed by this app)",
    Source.DISCOVERY: "consumer discovery (Azure Resource Graph)",
}
MAX_TEXT = 1500  # a message's longest text value; Slack allows 2,000 per field, Teams cards stay readable
UNKNOWN_CERTIFICATE = "(not identified)"


def message_text(value: Any) -> str | None:
    """A caller- or upstream-supplied value as a message may carry it: redacted, without control or bidi
    characters (no fake line breaks), bounded."""
    if value is None:
        return None
    return clean_text(redaction.redact(str(value)), MAX_TEXT) or None


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
            source=message_text(attributes.get("source")),
            certificate_name=message_text(attributes.get("certificateName")),
            reason=message_text(attributes.get("reason")),
            message=message_text(attributes.get("message")),
            expiry_date=message_text(attributes.get("expiryDate") or attributes.get("servedExpiryDate")),
            days_left=int(days) if isinstance(days, (int, float)) and not isinstance(days, bool) else None,
            invocation_id=message_text(attributes.get("invocationId")),
            host=message_text(attributes.get("host")),
            served_thumbprint=message_text(attributes.get("servedThumbprint")),
            expected_thumbprint=message_text(attributes.get("expectedThumbprint")),
            consumer_id=message_text(attributes.get("consumerId")),
            consumer_type=message_text(attributes.get("consumerType")),
            pinned_version=message_text(attributes.get("pinnedVersion")),
            current_version=message_text(attributes.get("currentVersion")),
        )

    @property
    def source_label(self) -> str:
        return SOURCE_LABELS.get(self.source or "", self.source or "unknown")

    @property
    def certificate(self) -> str:
        return self.certificate_name or UNKNOWN_CERTIFICATE

    @property
    def title(self) -> str:
        if self.event == Event.NOTIFICATIONS_HELD:
            return "Notifications held back"
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
        if self.event == Event.NOTIFICATIONS_HELD:
            return self.message or "Notifications were held back by the notification budget."
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
        if self.event == Event.NOTIFICATIONS_HELD:
            return [("Reason", self.reason or ""), ("Message", self.message or "")]
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
