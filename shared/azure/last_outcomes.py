"""The last outcome per Key Vault certificate: one row per vault + certificate name (last state, reason, time, which
path), upserted whenever either path settles a renewal — AppViewX records (`PendingStore.save`) and RCL records
(`RenewalStateStore`) — so the inventory reads one row per certificate on its page instead of the whole history.

Rows live in the AppViewX renewal table (`PENDING_TABLE`), partition `outcome-<vault host>` (RowKey: the certificate
name in lower case), so one partition query gives every certificate of a vault, however long the history. Records
written before these rows existed are folded in once by `backfill` (a bounded page per timer run, resumed from a
continuation kept in the partition's `~backfill` row).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from azure.core.exceptions import ResourceNotFoundError

from shared.azure.tables import TABLE_ERRORS, storage_failure, update_mode
from shared.core.timestamps import utc

if TYPE_CHECKING:
    from azure.data.tables import TableClient

log = logging.getLogger("certrenew.outcomes")

PARTITION_PREFIX = "outcome-"
BACKFILL_ROW = "~backfill"  # not a certificate name ('~' is not allowed in Key Vault names)
BACKFILL_PAGE = 1000  # history rows read per backfill step
TRANSACTION_LIMIT = 100


@dataclass(frozen=True)
class LastOutcome:
    state: str  # renewed, failed, pending, accepted (AppViewX); scheduled, renewed, failed, ... (RCL)
    at: datetime
    reason: str | None
    source: str  # appviewx | rcl


def partition_of(vault_url: str) -> str:
    host = (urlsplit(vault_url).netloc or vault_url).lower()
    # Table keys may not hold / \ # ? or control characters; a vault host holds none of them.
    return PARTITION_PREFIX + "".join(c for c in host if c.isalnum() or c in ".-:_")


def newest(found: dict[str, LastOutcome], name: str, outcome: LastOutcome) -> None:
    """Keep `outcome` for `name` (lower case) when it is later than what `found` holds."""
    key = name.lower()
    if key not in found or outcome.at > found[key].at:
        found[key] = outcome


def _row(partition: str, name: str, outcome: LastOutcome) -> dict[str, Any]:
    row = {
        "PartitionKey": partition,
        "RowKey": name.lower(),
        "name": name,
        "state": outcome.state,
        "at": utc(outcome.at),
        "reason": outcome.reason,
        "source": outcome.source,
    }
    return {k: v for k, v in row.items() if v is not None}


def _outcome(entity: Mapping[str, Any]) -> LastOutcome | None:
    at = entity.get("at")
    if not isinstance(at, datetime):
        return None
    reason = entity.get("reason")
    return LastOutcome(str(entity.get("state") or ""), utc(at), str(reason) if reason else None, str(entity["source"]))


class LastOutcomes:
    """The rows of one vault."""

    def __init__(self, table: TableClient, vault_url: str) -> None:
        self.table = table
        self.partition = partition_of(vault_url)

    def record(self, name: str, outcome: LastOutcome) -> None:
        """Upsert the row of `name`. Never raises: the row is a view of the records, which stay the truth (the
        next settled renewal writes it again)."""
        if not name:
            return
        try:
            self.table.upsert_entity(_row(self.partition, name, outcome), mode=update_mode("replace"))
        except TABLE_ERRORS as exc:
            log.warning("Last outcome of %s not recorded (%s)", name[:127], type(exc).__name__)

    def read(self) -> dict[str, LastOutcome]:
        """Every certificate's last outcome in this vault (one partition query: one row per certificate)."""
        with storage_failure("The last renewal outcomes could not be read"):
            entities = list(self.table.query_entities("PartitionKey eq @pk", parameters={"pk": self.partition}))
        found: dict[str, LastOutcome] = {}
        for entity in entities:
            outcome = _outcome(entity) if not str(entity.get("RowKey")).startswith(BACKFILL_ROW) else None
            if outcome is not None:
                found[str(entity["RowKey"])] = outcome
        return found

    def read_one(self, name: str) -> LastOutcome | None:
        """One certificate's last outcome in this vault (a point read), or None."""
        with storage_failure("The last renewal outcome could not be read"):
            try:
                entity = self.table.get_entity(self.partition, name.lower())
            except ResourceNotFoundError:
                return None
        return _outcome(entity)

    def record_many(self, outcomes: Mapping[str, LastOutcome]) -> None:
        """Upsert many rows in entity-group transactions of 100 (a night's RCL records). Never raises."""
        try:
            self._write(list(outcomes.items()))
        except TABLE_ERRORS as exc:
            log.warning("Last outcomes of %d certificates not recorded (%s)", len(outcomes), type(exc).__name__)

    def _write(self, rows: list[tuple[str, LastOutcome]]) -> None:
        mode = update_mode("replace")
        for start in range(0, len(rows), TRANSACTION_LIMIT):
            chunk = rows[start : start + TRANSACTION_LIMIT]
            self.table.submit_transaction([("upsert", _row(self.partition, n, o), {"mode": mode}) for n, o in chunk])

    def merge_newer(self, outcomes: Mapping[str, LastOutcome]) -> int:
        """Write the outcomes that are newer than the rows there (the backfill: history never hides a live row)."""
        current = self.read()
        newer = [(n, o) for n, o in outcomes.items() if n.lower() not in current or o.at > current[n.lower()].at]
        with storage_failure("The last renewal outcomes could not be written"):
            self._write(newer)
        return len(newer)

    def backfill_state(self, history: str) -> tuple[bool, str | None]:
        """(done, the continuation of the history query) as the `~backfill-<history>` row keeps them."""
        with storage_failure("The last-outcome backfill state could not be read"):
            try:
                row = self.table.get_entity(self.partition, f"{BACKFILL_ROW}-{history}")
            except ResourceNotFoundError:
                return False, None
        return bool(row.get("done")), row.get("continuation") or None

    def save_backfill_state(self, history: str, done: bool, continuation: str | None) -> None:
        entity = {
            "PartitionKey": self.partition,
            "RowKey": f"{BACKFILL_ROW}-{history}",
            "done": done,
            "continuation": continuation,
        }
        with storage_failure("The last-outcome backfill state could not be saved"):
            self.table.upsert_entity({k: v for k, v in entity.items() if v is not None}, mode=update_mode("replace"))


# A vault's URL or a listed vault's name (None: the default vault) -> its rows: AppViewX records name their vault by
# URL, RCL's by the name of the vault the morning check found the certificate in.
OutcomesByVault = Callable[[str | None], LastOutcomes]


def newest_of(rows: Iterable[tuple[str, LastOutcome]]) -> dict[str, LastOutcome]:
    found: dict[str, LastOutcome] = {}
    for name, outcome in rows:
        newest(found, name, outcome)
    return found
