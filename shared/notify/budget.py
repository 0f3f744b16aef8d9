"""The global notification budget: at most `limit` messages per 10-minute window (NOTIFY_BUDGET).

Counted twice: in this process (so the bound holds when the table cannot be reached) and in one table row per window
shared by every instance (partition `notifybudget` of the idempotency table, ETag-conditional increments), so N
instances together still send at most `limit`. What is not sent is held back and counted; once the window is over,
one digest per window (claimed in the same row, so one instance sends it) says how many were held back and gives the
KQL that lists them — the events themselves are always in Application Insights.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.core.errors import CertRenewError

if TYPE_CHECKING:
    from azure.data.tables import TableClient

log = logging.getLogger("certrenew.notify")

WINDOW = timedelta(minutes=10)
PARTITION = "notifybudget"
DEFAULT_LIMIT = 20
KEEP_WINDOWS = 12  # windows this process remembers (2 hours)
CONTENTION_TRIES = 8
TableFactory = Callable[[], "TableClient"]


def window_start(now: datetime) -> datetime:
    now = now.astimezone(UTC)
    minute = now.minute - now.minute % 10
    return now.replace(minute=minute, second=0, microsecond=0)


def window_key(start: datetime) -> str:
    return start.strftime("%Y%m%dT%H%MZ")


def held_back_kql(start: datetime, end: datetime, events: Iterable[str]) -> str:
    """The query that lists the notified events of one window (what the digest stands for)."""
    names = ", ".join(f'"{name}"' for name in sorted(events))
    return (
        f"customEvents | where timestamp between (datetime({start:%Y-%m-%dT%H:%M:%SZ}) .. "
        f"datetime({end:%Y-%m-%dT%H:%M:%SZ})) | where name in ({names}) | project timestamp, name, "
        "certificate = tostring(customDimensions.certificateName), reason = tostring(customDimensions.reason)"
    )


@dataclass
class _Window:
    sent: int = 0
    held: int = 0
    digest_done: bool = False


@dataclass(frozen=True)
class Digest:
    start: datetime
    held: int

    @property
    def end(self) -> datetime:
        return self.start + WINDOW


class NotificationBudget:
    """`take(now)`: may a message be sent now? `due_digests(now)`: the closed windows whose digest this process
    sends. Never raises: a table that cannot be reached leaves the per-process bound."""

    def __init__(self, limit: int = DEFAULT_LIMIT, table: TableFactory | None = None) -> None:
        self.limit = limit
        self._table_factory = table
        self._table: TableClient | None = None
        self._lock = threading.Lock()
        self._windows: OrderedDict[datetime, _Window] = OrderedDict()

    def _window(self, start: datetime) -> _Window:
        window = self._windows.get(start)
        if window is None:
            window = self._windows[start] = _Window()
            while len(self._windows) > KEEP_WINDOWS:
                self._windows.popitem(last=False)
        return window

    def take(self, now: datetime) -> bool:
        start = window_start(now)
        with self._lock:
            local_full = self._window(start).sent >= self.limit
        if local_full:  # this process has sent its share: held back, and counted so in the shared row
            self._update(start, lambda row: "held")
            shared: bool | None = False
        else:
            shared = self._update(start, lambda row: "sent" if int(row.get("sent") or 0) < self.limit else "held")
        with self._lock:
            window = self._window(start)
            allowed = (not local_full) and (shared if shared is not None else window.sent < self.limit)
            if allowed:
                window.sent += 1
            else:
                window.held += 1
            return allowed

    def due_digests(self, now: datetime) -> list[Digest]:
        current = window_start(now)
        with self._lock:
            due = [s for s, w in self._windows.items() if s < current and w.held and not w.digest_done]
            for start in due:
                self._windows[start].digest_done = True
        digests = []
        for start in due:
            with self._lock:
                local_held = self._windows[start].held if start in self._windows else 0
            claimed = self._claim_digest(start)
            if claimed is None:  # the table is unreachable: this process tells what it held back itself
                digests.append(Digest(start, local_held))
            elif claimed:
                digests.append(Digest(start, claimed))
        return digests

    # -- the shared row ---------------------------------------------------------------------------------------------
    def _open(self) -> TableClient | None:
        if self._table is None and self._table_factory is not None:
            try:
                self._table = self._table_factory()
            except CertRenewError as exc:  # SettingsError, StateStoreError: messages are safe
                log.warning("Notification budget kept per instance only: %s", exc.message)
                self._table_factory = None
        return self._table

    def _update(self, start: datetime, field_for: Callable[[dict[str, Any]], str]) -> bool | None:
        """Count one message in the shared row under the field `field_for(row)` picks (sent or held): True when it
        was counted sent, False held, None when the table cannot be reached (or is too contended)."""
        from azure.core import MatchConditions  # the table SDK only once a notification is sent, not at cold start
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

        from shared.azure.tables import TABLE_ERRORS, update_mode

        table = self._open()
        if table is None:
            return None
        key = window_key(start)
        try:
            for _ in range(CONTENTION_TRIES):
                try:
                    row = table.get_entity(PARTITION, key)
                except ResourceNotFoundError:
                    try:
                        table.create_entity({"PartitionKey": PARTITION, "RowKey": key, "sent": 1, "held": 0})
                        return True
                    except ResourceExistsError:
                        continue
                name = field_for(row)
                try:
                    table.update_entity(
                        {"PartitionKey": PARTITION, "RowKey": key, name: int(row.get(name) or 0) + 1},
                        mode=update_mode("merge"),
                        etag=row.metadata["etag"],
                        match_condition=MatchConditions.IfNotModified,
                    )
                    return name == "sent"
                except ResourceModifiedError:
                    continue
        except TABLE_ERRORS as exc:
            log.warning("Notification budget row unavailable (%s); counting per instance", type(exc).__name__)
            return None
        return None  # too much contention: the per-process bound decides

    def _claim_digest(self, start: datetime) -> int | None:
        """How many the window held back in all when this call claimed its digest; 0 when another instance did or
        nothing was held; None when the table cannot be reached."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        from shared.azure.tables import TABLE_ERRORS, update_mode

        table = self._open()
        if table is None:
            return None
        key = window_key(start)
        try:
            for _ in range(CONTENTION_TRIES):
                try:
                    row = table.get_entity(PARTITION, key)
                except ResourceNotFoundError:
                    return None  # never counted in the table (it was down): this process's own count
                if row.get("digestSent") or not int(row.get("held") or 0):
                    return 0
                try:
                    table.update_entity(
                        {"PartitionKey": PARTITION, "RowKey": key, "digestSent": True},
                        mode=update_mode("merge"),
                        etag=row.metadata["etag"],
                        match_condition=MatchConditions.IfNotModified,
                    )
                    return int(row.get("held") or 0)
                except ResourceModifiedError:
                    continue  # a late count or another instance's claim: read again
        except TABLE_ERRORS:
            return None
        return 0


def purge_budget_rows(table: TableClient, now: datetime, limit: int) -> int:
    """Remove at most `limit` budget rows of windows over a day old (housekeeping)."""
    from shared.azure.tables import delete_where

    cutoff = window_key(window_start(now - timedelta(days=1)))
    return delete_where(table, "PartitionKey eq @pk and RowKey lt @key", {"pk": PARTITION, "key": cutoff}, limit)
