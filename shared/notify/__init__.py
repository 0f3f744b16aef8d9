"""Notifications: a chat or webhook message when a certificate renewal fails, a certificate nears expiry, an
endpoint still serves another certificate than Key Vault's current version, or an Azure resource is pinned to an old
version of a certificate (or still uses the old one a day after a renewal). An outbound integration of its own,
beside AppViewX, RCL and the vault; it stands on `shared.core` only.

- `install`: with the optional setting `NOTIFY_WEBHOOK_URL`, `install_notifications` registers a `Notifier` as a
  telemetry event sink (shared.core.telemetry), once per process.
- `delivery`: the `Notifier` — which events notify, at most one message per event, certificate and reason an hour,
  the post within a total budget, a pause after a failed delivery; a notification never fails a renewal.
- `facts`: what a message says (`MessageFacts`: the event's attributes a message may show, cleaned and redacted).
- `formats`: how each receiver takes it (`teams` Adaptive Card, `slack` Block Kit, flat `json`), chosen from the
  URL's host (`message_format`), every value escaped for the receiver.
"""
