"""The Azure Table of scheduled RCL renewals (`RENEWAL_STATE_TABLE`, default `certrenewals`) on the host's storage
account, and the per-night budget of RCL calls.

Layout, one table:
- PartitionKey `rcl`: one entity per certificate RCL scheduled per night (RowKey `<yyyymmdd>-id-<RCL id>`), with
  `state` `scheduled` (or `notinstalled`: renewed, not installed yet) until the follow-up check closes it as
  `renewed` or `failed`; and `<yyyymmdd>-unknown` (`state` `unknown`) for a renewal request whose answer never
  came, until a check closes it as `resolved` or `failed`. One partition, so a night's records are written in
  entity-group transactions of up to 100. Closed records older than `RCL_RETENTION_DAYS` are removed.
- PartitionKey `rclbudget`: one entity per UTC night counting the RCL calls made (`renewalCalls`, `listCalls`),
  updated with optimistic concurrency, so re-runs and overlapping invocations cannot exceed RCL's quota.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from shared.azure.last_outcomes import LastOutcome, OutcomesByVault, newest_of
from shared.azure.tables import storage_failure, update_mode
from shared.core.certificates import derive_certificate_name
from shared.core.errors import StateStoreError
from shared.core.events import Source
from shared.core.timestamps import utc
from shared.rcl.decisions import Outcome, Verdict
from shared.rcl.scheduled import OPEN_STATES, RecordState, ScheduledRenewal, night_of

if TYPE_CHECKING:  # the table SDK is imported where it is used, to keep cold start short
    from azure.data.tables import TableClient, UpdateMode

PARTITION = "rcl"
BUDGET_PARTITION = "rclbudget"
CLEANUP_LIMIT = 1000  # rows removed per nightly run at most: a backlog is worked off over a few nights
TRANSACTION_LIMIT = 100  # Azure Tables: at most 100 operations per entity-group transaction
_INT32 = range(-(2**31), 2**31)


def _plain(value: Any) -> Any:
    from azure.data.tables import EntityProperty

    return value.value if isinstance(value, EntityProperty) else value


def _id_value(value: int | None) -> int | str | None:
    # Plain ints go to Edm.Int32; a larger RCL id is kept as text rather than refused.
    return value if value is None or value in _INT32 else str(value)


def to_entity(record: ScheduledRenewal) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "PartitionKey": PARTITION,
        "RowKey": record.record_key,
        "certificateId": _id_value(record.certificate_id),
        "certificateName": record.certificate_name,
        "target": record.target,
        "expiryDate": record.expiry_date,
        "scheduledAt": record.scheduled_at,
        "runId": record.run_id,
        "state": record.state,
    }
    return {k: v for k, v in entity.items() if v is not None}


def _state(entity: dict[str, Any]) -> RecordState:
    text = str(_plain(entity.get("state")) or RecordState.SCHEDULED)
    try:
        return RecordState(text)
    except ValueError:
        raise StateStoreError(
            f"The renewal record {entity.get('RowKey')!r} has an unknown state {text[:40]!r}"
        ) from None


def from_entity(entity: dict[str, Any]) -> ScheduledRenewal:
    raw_id = _plain(entity.get("certificateId"))
    expiry = _plain(entity.get("expiryDate"))
    scheduled = _plain(entity.get("scheduledAt"))
    renewed = _plain(entity.get("renewedAt"))
    if not isinstance(scheduled, datetime):
        raise StateStoreError(f"The renewal record {entity.get('RowKey')!r} has no scheduledAt date")
    return ScheduledRenewal(
        record_key=str(entity["RowKey"]),
        certificate_id=int(raw_id) if raw_id not in (None, "") else None,
        certificate_name=str(entity.get("certificateName") or ""),
        target=entity.get("target"),
        expiry_date=utc(expiry) if isinstance(expiry, datetime) else None,
        scheduled_at=utc(scheduled),
        run_id=entity.get("runId"),
        state=_state(entity),
        renewed_at=utc(renewed) if isinstance(renewed, datetime) else None,
    )


def closing_entity(verdict: Verdict, closed_at: datetime) -> dict[str, Any]:
    """What a check writes: the closed state, or for a renewal first seen not installed, when that was."""
    still_open = verdict.outcome is Outcome.NOT_INSTALLED
    entity: dict[str, Any] = {
        "PartitionKey": PARTITION,
        "RowKey": verdict.record.record_key,
        "state": RecordState(verdict.outcome.value),
        "closedAt": None if still_open else utc(closed_at),
        "renewedAt": utc(closed_at) if still_open else None,
        "installed": verdict.installed if verdict.outcome in (Outcome.RENEWED, Outcome.NOT_INSTALLED) else None,
        "newExpiryDate": verdict.new_expiry,
        "reason": verdict.reason,
        "message": verdict.message[:1000] if verdict.message else None,
        "vault": verdict.vault or None,
    }
    return {k: v for k, v in entity.items() if v is not None}


@dataclass(frozen=True)
class Cleanup:
    records: int
    budget_rows: int


def _chunks(items: Sequence[dict[str, Any]]) -> Iterator[Sequence[dict[str, Any]]]:
    for start in range(0, len(items), TRANSACTION_LIMIT):
        yield items[start : start + TRANSACTION_LIMIT]


def row_outcome(row: dict[str, Any]) -> tuple[str, LastOutcome] | None:
    """A record's (Key Vault name, outcome) for the inventory: RCL writes `contoso.com`, Key Vault holds
    `contoso-com`; None for a row without a name or a date."""
    name = derive_certificate_name(str(_plain(row.get("certificateName")) or ""))
    at = _plain(row.get("closedAt")) or _plain(row.get("scheduledAt"))
    if not name or not isinstance(at, datetime):
        return None
    reason = _plain(row.get("reason"))
    return name, LastOutcome(str(_plain(row.get("state")) or ""), utc(at), str(reason) if reason else None, Source.RCL)


def outcomes_by_vault(rows: Sequence[dict[str, Any]]) -> dict[str | None, dict[str, LastOutcome]]:
    """The newest outcome per certificate, by the vault the morning check found it in (the row's `vault`, a listed
    vault's name; None where it was not told: the default vault)."""
    by_vault: dict[str | None, list[dict[str, Any]]] = {}
    for row in rows:
        by_vault.setdefault(str(_plain(row.get("vault")) or "") or None, []).append(row)
    found = {vault: newest_of(p for p in map(row_outcome, named) if p is not None) for vault, named in by_vault.items()}
    return {vault: outcomes for vault, outcomes in found.items() if outcomes}


class RenewalStateStore:
    """Scheduled RCL renewals and the nightly RCL call budget, in one table."""

    def __init__(self, table: TableClient, outcomes: OutcomesByVault | None = None) -> None:
        self.table = table
        # Each certificate's last outcome (shared.azure.last_outcomes), when kept: a vault's rows by the vault the
        # morning check found the certificate in (its name), or the default vault's (None).
        self.outcomes = outcomes

    def _note_outcomes(self, rows: Sequence[dict[str, Any]]) -> None:
        if self.outcomes is None:
            return
        for vault, found in outcomes_by_vault(rows).items():
            self.outcomes(vault).record_many(found)

    @property
    def name(self) -> str:
        return self.table.table_name

    def close(self) -> None:
        self.table.close()

    def _upsert_all(self, entities: Sequence[dict[str, Any]], mode: UpdateMode, action: str) -> None:
        with storage_failure(f"Could not {action} in the table {self.name!r}"):
            for chunk in _chunks(entities):
                self.table.submit_transaction([("upsert", e, {"mode": mode}) for e in chunk])

    def record_scheduled(self, records: Sequence[ScheduledRenewal]) -> None:
        """Record what RCL scheduled; a record of the same certificate the same night is replaced, not doubled."""
        entities = [to_entity(r) for r in records]
        self._upsert_all(entities, update_mode("replace"), "record the scheduled renewals")
        self._note_outcomes(entities)

    def open_renewals(self) -> list[ScheduledRenewal]:
        """Every record the follow-up check has not closed yet (scheduled, not installed, unknown requests)."""
        states = " or ".join(f"state eq @s{i}" for i in range(len(OPEN_STATES)))
        parameters = {"pk": PARTITION, **{f"s{i}": state for i, state in enumerate(OPEN_STATES)}}
        with storage_failure(f"Could not read the open renewals in the table {self.name!r}"):
            entities = list(self.table.query_entities(f"PartitionKey eq @pk and ( {states} )", parameters=parameters))
        return [from_entity(e) for e in entities]

    def all_records(self) -> list[dict[str, Any]]:
        """Every renewal record, open or closed, newest first (for the operator's status table)."""
        with storage_failure(f"Could not read the renewals in the table {self.name!r}"):
            entities = list(self.table.query_entities("PartitionKey eq @pk", parameters={"pk": PARTITION}))
        rows = [{k: _plain(v) for k, v in e.items()} for e in entities]
        return sorted(rows, key=lambda r: str(r.get("scheduledAt") or ""), reverse=True)

    def close_verdicts(self, verdicts: Sequence[Verdict], closed_at: datetime) -> None:
        """Close renewed and failed records, and note when a renewal was first seen not installed (pending ones
        stay as they are)."""
        changing = [v for v in verdicts if v.changes_record]
        closing = [closing_entity(v, closed_at) for v in changing]
        self._upsert_all(closing, update_mode("merge"), "close the checked renewals")
        named = [{**c, "certificateName": v.record.certificate_name} for c, v in zip(closing, changing, strict=True)]
        self._note_outcomes([{**n, "closedAt": n.get("closedAt") or n.get("renewedAt")} for n in named])

    def record_unknown(self, record: ScheduledRenewal) -> None:
        """A renewal request whose answer never came: the morning check finds out what it did."""
        self._upsert_all([to_entity(record)], update_mode("merge"), "record the unanswered renewal request")

    def close_unknown(self, record: ScheduledRenewal, state: RecordState, closed_at: datetime, message: str) -> None:
        entity = {
            "PartitionKey": PARTITION,
            "RowKey": record.record_key,
            "state": state,
            "closedAt": utc(closed_at),
            "message": message[:1000],
        }
        self._upsert_all([entity], update_mode("merge"), "close the unanswered renewal request")
        self._note_outcomes([{**entity, "certificateName": record.certificate_name}])

    def remove_older_than(self, cutoff: datetime, limit: int = CLEANUP_LIMIT) -> Cleanup:
        """Remove closed records closed before `cutoff` and call counts of nights before it, at most `limit` rows
        in all, in transactions of up to 100. Open records are never removed."""
        removed = self._delete_matching(
            "PartitionKey eq @pk and closedAt lt @cutoff",
            {"pk": PARTITION, "cutoff": utc(cutoff)},
            limit,
            lambda e: _plain(e.get("state")) not in OPEN_STATES,
        )
        budget = self._delete_matching(
            "PartitionKey eq @pk and RowKey lt @night",
            {"pk": BUDGET_PARTITION, "night": night_of(cutoff)},
            limit - removed,
            lambda e: True,
        )
        return Cleanup(records=removed, budget_rows=budget)

    def _delete_matching(self, query: str, parameters: dict[str, Any], limit: int, keep_if: Any) -> int:
        if limit <= 0:
            return 0
        keys: list[dict[str, Any]] = []
        with storage_failure(f"Could not remove old rows in the table {self.name!r}"):
            pages = self.table.query_entities(
                query, parameters=parameters, select=["PartitionKey", "RowKey", "state"], results_per_page=100
            )
            for entity in pages:
                if keep_if(entity):
                    keys.append({"PartitionKey": entity["PartitionKey"], "RowKey": entity["RowKey"]})
                if len(keys) >= limit:
                    break
            for chunk in _chunks(keys):
                self.table.submit_transaction([("delete", e) for e in chunk])
        return len(keys)

    def reserve_call(self, night: str, kind: str, limit: int) -> int | None:
        """Count one more `kind` call ("renewal" or "list") for `night`; the call's number, or None if `limit` calls
        were already made. Optimistic concurrency: two invocations racing cannot both take the last call."""
        field = f"{kind}Calls"
        with storage_failure(f"Could not count the night's RCL calls in the table {self.name!r}"):
            for _ in range(10):
                try:
                    entity = self.table.get_entity(BUDGET_PARTITION, night)
                except ResourceNotFoundError:
                    try:
                        self.table.create_entity({"PartitionKey": BUDGET_PARTITION, "RowKey": night, field: 1})
                        return 1
                    except ResourceExistsError:
                        continue  # another invocation made it first: read it again
                used = int(_plain(entity.get(field)) or 0)
                if used >= limit:
                    return None
                try:
                    self.table.update_entity(
                        {"PartitionKey": BUDGET_PARTITION, "RowKey": night, field: used + 1},
                        mode=update_mode("merge"),
                        etag=entity.metadata["etag"],
                        match_condition=MatchConditions.IfNotModified,
                    )
                    return used + 1
                except ResourceModifiedError:
                    continue
        raise StateStoreError(f"Could not count the night's RCL calls in the table {self.name!r}: too much contention")
