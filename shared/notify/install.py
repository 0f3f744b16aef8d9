"""Installing notifications: the `Notifier` the settings ask for, registered once per process as an event sink."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from shared.core.errors import SettingsError
from shared.core.settings import Settings
from shared.core.telemetry import add_event_sink, remove_event_sink
from shared.notify.budget import NotificationBudget
from shared.notify.delivery import Notifier
from shared.notify.formats import message_format

if TYPE_CHECKING:
    from azure.data.tables import TableClient

log = logging.getLogger("certrenew.notify")

_install_lock = threading.Lock()
_installed: Notifier | None = None


def notifier_for(settings: Settings) -> Notifier | None:
    """The notifier the settings ask for, or None when NOTIFY_WEBHOOK_URL is not set. Raises SettingsError."""
    config = settings.notify
    if not config.webhook_url:
        return None
    budget = NotificationBudget(config.budget_per_window, lambda: _budget_table(settings))
    return Notifier(url=config.webhook_url, format=message_format(config.webhook_url, config.format), budget=budget)


def _budget_table(settings: Settings) -> TableClient:
    """The shared budget's table (the idempotency table), opened on the first notification, not at start-up."""
    from shared.azure import identity
    from shared.azure.tables import open_table

    storage = settings.storage
    credential = None if storage.connection_string else identity.managed_identity(settings.identity)
    return open_table(storage, storage.idempotency_table, credential)


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


def flush_notification_digest() -> None:
    """Send the digest of a finished budget window that held messages back (every timer run calls this, so the
    digest comes even when no further notification does). Never raises."""
    notifier = _installed
    if notifier is None:
        return
    try:
        notifier.flush_digest()
    except Exception as exc:  # a digest never fails a timer run
        log.warning("Notification digest failed: %s", type(exc).__name__)
