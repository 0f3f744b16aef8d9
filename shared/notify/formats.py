"""How each receiver takes a notification, chosen from the URL (`message_format`, a pure function of the URL;
`NOTIFY_FORMAT` overrides it). Pure, no I/O.

- `teams`: a Teams message whose one attachment is an Adaptive Card (1.4: TextBlocks and a FactSet) — what the
  Teams Workflows trigger "When a Teams webhook request is received" (Power Automate, `*.environment.api.
  powerplatform.com`; Logic Apps, `*.logic.azure.com`) and the legacy Teams incoming webhooks
  (`*.webhook.office.com`) accept;
- `slack`: Slack's incoming-webhook shape, `text` (the notification fallback) plus Block Kit `blocks`;
- `json`: one flat object, for anything else (an Azure Function, an API Management endpoint, a Logic App with its
  own schema, ...).

Every value that comes from a caller or an upstream is escaped for the receiver (Teams: Markdown backslash-escaped;
Slack: `&<>` escaped and formatting characters broken; both: bare URLs defanged), so a resourceId cannot become a
clickable link.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from shared.core.events import Event
from shared.core.settings import NOTIFY_FORMATS
from shared.notify.facts import MessageFacts

APP_NAME = "certrenew"
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
