"""Housekeeping run by the `complete_pending` timer, a bounded batch of each kind per run (so one run never takes
long, and a backlog is worked off over a few runs): settled AppViewX renewal records past
RENEWAL_RECORD_RETENTION_DAYS (open records never), expired idempotency keys, signature (replay) records, Key Vault
event and version claims and notification-budget rows; then one step of the last-outcome backfill. Never fails the
run: a table that cannot be reached is logged and tried again next run."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shared.appviewx.record_fields import LEGACY_STATES, shown_as_outcome
from shared.appviewx.records import PARTITION as AVX_PARTITION
from shared.appviewx.records import PendingRecord, PendingStore, RenewalState, read_rows
from shared.azure.last_outcomes import BACKFILL_PAGE, LastOutcome, OutcomesByVault, newest_of
from shared.azure.tables import delete_where, storage_failure
from shared.core.errors import StateStoreError
from shared.core.events import Source
from shared.notify.budget import purge_budget_rows
from shared.rcl.state import PARTITION as RCL_PARTITION
from shared.rcl.state import RenewalStateStore
from shared.rcl.state import outcomes_by_vault as rcl_outcomes_by_vault
from shared.security.idempotency import IdempotencyStore
from shared.security.replay import SignatureReplayStore
from shared.vault.event_claims import EventClaims

log = logging.getLogger("certrenew.housekeeping")

BATCH = 500  # rows of each kind removed per run at most (a run every 15 minutes: 48,000 a day)


@dataclass(frozen=True)
class HousekeepingStores:
    records: PendingStore
    idempotency: IdempotencyStore
    signatures: SignatureReplayStore
    claims: EventClaims
    outcomes: OutcomesByVault | None  # a listed vault's URL (None: the default one) -> its last-outcome rows
    rcl: RenewalStateStore | None


@dataclass
class Tidied:
    removed: dict[str, int] = field(default_factory=dict)
    backfilled: int = 0
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        removed = ", ".join(f"{count} {kind}" for kind, count in self.removed.items() if count) or "nothing"
        return f"Housekeeping: removed {removed}; last outcomes backfilled: {self.backfilled}"


def tidy(stores: HousekeepingStores, now: datetime, retention_days: float, batch: int = BATCH) -> Tidied:
    cutoff = now - timedelta(days=retention_days)
    done = Tidied()
    steps: dict[str, Callable[[], int]] = {
        "settled renewal records": lambda: remove_settled_before(stores.records, cutoff, batch),
        "idempotency keys": lambda: stores.idempotency.purge_expired(now, batch),
        "signature records": lambda: stores.signatures.purge_expired(now, batch),
        "Key Vault event claims": lambda: stores.claims.purge_expired(now, cutoff, batch),
        "notification budget rows": lambda: purge_budget_rows(stores.idempotency.table, now, batch),
    }
    for kind, step in steps.items():
        try:
            done.removed[kind] = step()
        except StateStoreError as exc:
            done.problems.append(f"{kind}: {exc.message}")
    if stores.outcomes is not None:
        try:
            done.backfilled = backfill_step(stores, stores.outcomes)
        except StateStoreError as exc:
            done.problems.append(f"last-outcome backfill: {exc.message}")
    for problem in done.problems:
        log.warning("Housekeeping step not done (tried again next run): %s", problem)
    return done


def backfill_step(stores: HousekeepingStores, outcomes_of: OutcomesByVault, page: int = BACKFILL_PAGE) -> int:
    """Fold one page of each history (AppViewX records, RCL records) written before the last-outcome rows existed
    into them (each record into the rows of the vault it names, else the default vault's); resumed next run from
    the continuation kept in the default vault's partition, done once each history is read to its end."""
    written = 0
    progress = outcomes_of(None)
    histories: list[tuple[str, Any, str, Callable[[list[dict[str, Any]]], dict[str | None, dict[str, LastOutcome]]]]]
    histories = [("avx", stores.records.table, AVX_PARTITION, _avx_outcomes)]
    if stores.rcl is not None:
        histories.append(("rcl", stores.rcl.table, RCL_PARTITION, _rcl_outcomes))
    for history, table, partition, outcomes_by_vault in histories:
        finished, token = progress.backfill_state(history)
        if finished:
            continue
        with storage_failure("The renewal history could not be read for the backfill"):
            pages = table.query_entities(
                "PartitionKey eq @pk", parameters={"pk": partition}, results_per_page=page
            ).by_page(continuation_token=json.loads(token) if token else None)
            rows = list(next(pages, []))
            following = pages.continuation_token
        for vault_url, found in outcomes_by_vault(rows).items():
            written += outcomes_of(vault_url).merge_newer(found)
        progress.save_backfill_state(history, following is None, json.dumps(following) if following else None)
    return written


def remove_settled_before(records: PendingStore, cutoff: datetime, limit: int) -> int:
    """Remove at most `limit` renewed or failed records settled before `cutoff`; open records never."""
    settled = {RenewalState.RENEWED.value, RenewalState.FAILED.value, *LEGACY_STATES}
    return delete_where(
        records.table,
        "PartitionKey eq @pk and completed_at lt @cutoff",
        {"pk": AVX_PARTITION, "cutoff": cutoff},
        limit,
        keep=lambda row: str(row.get("state") or "") not in settled,
        select=("state",),
    )


def last_outcome_of(record: PendingRecord) -> LastOutcome:
    return LastOutcome(record.state.value, record.completed_at or record.created_at, record.reason, Source.APPVIEWX)


def _avx_outcomes(rows: list[dict[str, Any]]) -> dict[str | None, dict[str, LastOutcome]]:
    """The newest outcome per certificate, by the vault each record names (None: the default vault)."""
    by_vault: dict[str | None, list[PendingRecord]] = {}
    for record in read_rows(rows)[0]:
        if record.key_vault_name and shown_as_outcome(record.state, record.lease_until):
            by_vault.setdefault(record.key_vault_url, []).append(record)
    return {
        vault: newest_of((r.key_vault_name or "", last_outcome_of(r)) for r in records)
        for vault, records in by_vault.items()
    }


def _rcl_outcomes(rows: list[dict[str, Any]]) -> dict[str | None, dict[str, LastOutcome]]:
    """RCL's records by the vault the morning check found each certificate in (its name; None: the default vault)."""
    return rcl_outcomes_by_vault(rows)
