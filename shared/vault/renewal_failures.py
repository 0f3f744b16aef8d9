"""Each certificate's failed renewals in a row, for the renewal backoff (`shared.appviewx.backoff`): one row per vault
and certificate in the idempotency table (partition `kvbackoff`), written by every path that renews a Key Vault
certificate version (the daily sweep, Key Vault events, the operator's `renew`), deleted by a success. The sweep, the
plan and the inventory read it. A renewal that landed after the last failure on another path (the webhook, a completed
pending record: the vault's last-outcome row says `renewed`, later) ends the failures as well (`failures_since`).

Two instances failing the same certificate at once may count one failure instead of two: the backoff is then one
step shorter, which is harmless (no renewal is ever doubled by it: the version claim does that job).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.azure.tables import TABLE_ERRORS, storage_failure, update_mode
from shared.core.timestamps import utc
from shared.vault.renewal_plan import RenewalFailures, failures_since

if TYPE_CHECKING:
    from azure.data.tables import TableClient

    from shared.azure.last_outcomes import LastOutcome, LastOutcomes

FAILURE_PARTITION = "kvbackoff"
MAX_ROWS_READ = 20_000  # a bound on one read of the whole partition (one row per failing certificate)


def failure_key(vault_host: str, name: str) -> str:
    # Key Vault names are [0-9A-Za-z-] and hosts carry no / \\ # ?: both fit a RowKey as they are.
    return f"{vault_host.lower()}|{name.lower()}"


def _read(row: dict[str, Any]) -> RenewalFailures | None:
    count, at = row.get("failures"), row.get("lastFailureAt")
    if isinstance(count, bool) or not isinstance(count, int) or count <= 0 or not isinstance(at, datetime):
        return None
    reason = row.get("lastReason")
    return RenewalFailures(count, utc(at), reason if isinstance(reason, str) else None)


class RenewalFailureStore:
    def __init__(self, table: TableClient, vault_url: str, outcomes: LastOutcomes | None = None) -> None:
        from urllib.parse import urlsplit

        self.table = table
        self.vault_host = urlsplit(vault_url).netloc.lower()
        self.outcomes = outcomes  # this vault's last outcomes: a later renewal on any path ends the failures

    def _still_count(self, failures: RenewalFailures | None, outcome: LastOutcome | None) -> RenewalFailures | None:
        renewed = outcome is not None and outcome.state == "renewed"
        return failures_since(failures, outcome.at if renewed and outcome is not None else None)

    def get(self, name: str) -> RenewalFailures | None:
        from azure.core.exceptions import ResourceNotFoundError

        with storage_failure("The certificate's renewal backoff could not be read"):
            try:
                row = self.table.get_entity(FAILURE_PARTITION, failure_key(self.vault_host, name))
            except ResourceNotFoundError:
                return None
        failures = _read(dict(row))
        if failures is None or self.outcomes is None:
            return failures
        return self._still_count(failures, self.outcomes.read_one(name))

    def all(self) -> dict[str, RenewalFailures]:
        """Every failing certificate of this vault, by lower-case name (one partition query)."""
        found: dict[str, RenewalFailures] = {}
        prefix = f"{self.vault_host}|"
        with storage_failure("The certificates' renewal backoff could not be read"):
            rows = self.table.query_entities(f"PartitionKey eq '{FAILURE_PARTITION}'")
            for index, row in enumerate(rows):
                if index >= MAX_ROWS_READ:
                    break
                key = str(row.get("RowKey") or "")
                failures = _read(dict(row))
                if key.startswith(prefix) and failures is not None:
                    found[key[len(prefix) :]] = failures
        outcomes = self.outcomes.read() if found and self.outcomes is not None else {}
        return {
            name: kept for name, failures in found.items() if (kept := self._still_count(failures, outcomes.get(name)))
        }

    def failed(self, name: str, reason: str, now: datetime | None = None) -> RenewalFailures:
        """Count one more failure; a table problem is logged by the caller's boundary, never hides the failure."""
        now = now or datetime.now(UTC)
        before = self.get(name)
        failures = RenewalFailures((before.count if before else 0) + 1, now, reason[:256])
        with storage_failure("The certificate's renewal backoff could not be written"):
            self.table.upsert_entity(
                {
                    "PartitionKey": FAILURE_PARTITION,
                    "RowKey": failure_key(self.vault_host, name),
                    "certificate": name,
                    "failures": failures.count,
                    "lastFailureAt": now,
                    "lastReason": failures.last_reason,
                },
                mode=update_mode("replace"),
            )
        return failures

    def succeeded(self, name: str) -> None:
        """A renewal landed: the backoff starts again from nothing."""
        try:
            self.table.delete_entity(FAILURE_PARTITION, failure_key(self.vault_host, name))
        except TABLE_ERRORS:
            pass
