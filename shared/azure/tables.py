"""Azure Table storage on the account the Functions host already uses (AzureWebJobsStorage).

One factory for every table the app keeps (RCL renewals, pending AVX renewals, idempotency keys): a connection
string (Azurite, or key-based accounts) or identity-based access through the managed identity. Each table is
created on first use in the process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from azure.core import MatchConditions
from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from shared.core.errors import StateStoreError
from shared.core.outbound import new_session
from shared.core.settings import WORKER_DEFAULT_MAX_THREADS, StorageSettings

if TYPE_CHECKING:
    from azure.data.tables import TableClient, UpdateMode

# What a table call can raise: azure-core's errors, and ValueError (its DeserializationError) for an unreadable answer.
TABLE_ERRORS: tuple[type[Exception], ...] = (AzureError, ValueError)

CLIENT_OPTIONS: dict[str, object] = {
    "connection_timeout": 10,
    "read_timeout": 30,
    # azure-core's retry policy: exponential backoff, honours Retry-After on 429/503.
    "retry_total": 3,
    "retry_backoff_factor": 0.4,
}


def failure_detail(exc: Exception) -> str:
    """What a storage failure says: its HTTP status when the service answered, else the error's type (the SDK's own
    message may carry request details)."""
    status = getattr(exc, "status_code", None)
    return f"HTTP {status}" if status else type(exc).__name__


@contextmanager
def storage_failure(what: str) -> Iterator[None]:
    """The one way every table store reports a storage failure: `StateStoreError("<what>: <detail>")`, which the
    HTTP boundary answers 503 and the timers log with its remediation."""
    try:
        yield
    except TABLE_ERRORS as exc:
        raise StateStoreError(f"{what}: {failure_detail(exc)}") from None


def open_table(
    storage: StorageSettings,
    table_name: str,
    credential: TokenCredential | None,
    pool_size: int = WORKER_DEFAULT_MAX_THREADS,
) -> TableClient:
    """A client for `table_name`, creating the table when it does not exist yet. Its connection pool holds
    `pool_size` connections (settings.connection_pool_size; azure-core's default holds 10)."""
    from azure.core.pipeline.transport import RequestsTransport
    from azure.data.tables import TableClient  # lazy: only the functions that use tables pay for the SDK

    options = {
        **CLIENT_OPTIONS,
        "transport": RequestsTransport(
            session=new_session(pool_size),
            session_owner=True,
            connection_timeout=CLIENT_OPTIONS["connection_timeout"],
            read_timeout=CLIENT_OPTIONS["read_timeout"],
        ),
    }
    with storage_failure(f"The table {table_name!r} could not be opened"):
        if storage.connection_string:
            client = TableClient.from_connection_string(storage.connection_string, table_name, **options)
        else:
            client = TableClient(
                endpoint=storage.account_url or "", table_name=table_name, credential=credential, **options
            )
        try:
            client.create_table()
        except ResourceExistsError:
            pass
    return client


def update_mode(name: str) -> UpdateMode:
    """`UpdateMode.REPLACE` or `UpdateMode.MERGE`, without importing the table SDK at module load."""
    from azure.data.tables import UpdateMode

    return UpdateMode(name)


@dataclass(frozen=True)
class RowClaim:
    """What claiming a row gave: `taken` when this call now holds it (inserted, or took over a stale row), and the
    row that was there (None when inserted, or when another run changed or removed it meanwhile)."""

    taken: bool
    existing: dict[str, Any] | None = None


def claim_row(
    table: TableClient,
    entity: dict[str, Any],
    *,
    stale: Callable[[dict[str, Any]], bool],
    insert_failure: str,
    read_failure: str,
) -> RowClaim:
    """Claim `entity`'s row across instances: a conditional insert; an existing row is taken over (an ETag-conditional
    replace) only when `stale(existing)` says its owner is gone. A race lost to another run is RowClaim(False)."""
    with storage_failure(insert_failure):
        try:
            table.create_entity(entity)
            return RowClaim(True)
        except ResourceExistsError:
            pass
    with storage_failure(read_failure):
        try:
            existing = table.get_entity(entity["PartitionKey"], entity["RowKey"])
            if not stale(existing):
                return RowClaim(False, existing)
            table.update_entity(
                entity,
                mode=update_mode("replace"),
                etag=existing.metadata["etag"],
                match_condition=MatchConditions.IfNotModified,
            )
            return RowClaim(True, existing)
        except (ResourceModifiedError, ResourceNotFoundError):
            return RowClaim(False)


TRANSACTION_LIMIT = 100  # Azure Tables: at most 100 operations per entity-group transaction (one partition)


def delete_where(
    table: TableClient,
    query: str,
    parameters: dict[str, Any],
    limit: int,
    keep: Callable[[dict[str, Any]], bool] | None = None,
    select: tuple[str, ...] = (),
) -> int:
    """Delete at most `limit` rows of ONE partition matching `query` (minus those `keep` keeps), in transactions of
    up to 100; how many were deleted. Raises StateStoreError. Housekeeping: bounded per call, the next call goes on."""
    if limit <= 0:
        return 0
    keys: list[dict[str, Any]] = []
    with storage_failure(f"Old rows of the table {table.table_name!r} could not be removed"):
        rows = table.query_entities(
            query, parameters=parameters, select=["PartitionKey", "RowKey", *select], results_per_page=TRANSACTION_LIMIT
        )
        for row in rows:
            if keep is None or not keep(row):
                keys.append({"PartitionKey": row["PartitionKey"], "RowKey": row["RowKey"]})
            if len(keys) >= limit:
                break
        for start in range(0, len(keys), TRANSACTION_LIMIT):
            table.submit_transaction([("delete", key) for key in keys[start : start + TRANSACTION_LIMIT]])
    return len(keys)
