"""The process's long-lived clients, made on first use from the settings and kept for the process's life.

Functions hosts reuse a worker process for many invocations: one credential (its token cache), one AVX session
(kept-alive connections) and one Key Vault client (its challenge cache) serve them all.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared.core.errors import CertRenewError, SettingsError
from shared.core.settings import Settings, load_settings, reset_settings

if TYPE_CHECKING:  # the clients' modules (and the Azure SDK behind them) are imported when a client is first made:
    # importing the app (a cold start) pays for none of them, each function's first call for what it uses
    from azure.core.credentials import TokenCredential

    from shared.appviewx.client import AvxClient
    from shared.appviewx.records import PendingStore
    from shared.azure.keyvault import KeyVaultStore
    from shared.azure.last_outcomes import LastOutcomes, OutcomesByVault
    from shared.azure.resourcegraph import ResourceGraph
    from shared.consumers.run import DiscoveryDependencies
    from shared.consumers.store import ConsumerStore, KnownConsumers
    from shared.rcl.client import RclClient
    from shared.rcl.run_calls import RclDependencies
    from shared.rcl.state import RenewalStateStore
    from shared.security.idempotency import IdempotencyStore
    from shared.security.replay import SignatureReplayStore
    from shared.vault.event_claims import EventClaims
    from shared.vault.events import EventDependencies
    from shared.vault.renewal_failures import RenewalFailureStore
    from shared.vault.sweep import SweepDependencies

log = logging.getLogger("certrenew.consumers")
_lock = threading.RLock()
_clients: dict[str, Any] = {}


def settings() -> Settings:
    return load_settings()


def _cached(name: str, build: Any) -> Any:
    client = _clients.get(name)  # built once; every later call reads it without taking the lock (hot path)
    if client is not None:
        return client
    with _lock:
        if name not in _clients:
            _clients[name] = build()
        return _clients[name]


def avx_client() -> AvxClient:
    def build() -> AvxClient:
        from shared.appviewx.client import AvxClient
        from shared.core.outbound import new_session

        s = settings()
        return AvxClient(s.avx, new_session(s.worker.pool_size))

    return _cached("avx", build)


def key_vault_store(vault: str | None = None) -> KeyVaultStore:
    """The pooled client of one listed vault (`vault`: its URL or name; None: the default vault). Every vault's
    client shares the one managed identity credential: one token (audience https://vault.azure.net) serves them all.
    Raises VaultNotListed for a vault that is not in KEY_VAULT_URLS."""
    s = settings()
    chosen = s.key_vault.vault(vault)
    name = "keyvault" if chosen == s.key_vault.default else f"keyvault {chosen.host}"

    def build() -> KeyVaultStore:
        from shared.azure import identity
        from shared.azure.keyvault import KeyVaultStore

        credential = identity.managed_identity(s.identity)
        return KeyVaultStore(s.key_vault, credential, pool_size=s.worker.pool_size, vault=chosen)

    return _cached(name, build)


def _table(setting: str) -> Any:
    from shared.azure import identity
    from shared.azure.tables import open_table

    s = settings()
    storage = s.storage
    name = getattr(storage, setting)
    credential = None if storage.connection_string else identity.managed_identity(s.identity)
    return open_table(storage, name, credential, s.worker.pool_size)


def last_outcomes(vault: str | None = None) -> LastOutcomes:
    """Each certificate's last renewal outcome in one vault: rows in the pending table, a partition per vault; the
    inventory reads them, both renewal paths write them. `vault`: its URL (an AppViewX record's), or a listed vault's
    name (an RCL record's: where the morning check found it); None, or a name no longer listed: the default vault."""
    from shared.azure.last_outcomes import LastOutcomes

    url = _outcomes_vault_url(vault)
    return _cached(f"outcomes {url.lower()}", lambda: LastOutcomes(_table("pending_table"), url))


def _outcomes_vault_url(vault: str | None) -> str:
    from shared.core.settings import VaultNotListed

    key_vault = settings().key_vault
    if vault and "://" in vault:
        return vault
    try:
        return key_vault.vault(vault).url
    except VaultNotListed:
        return key_vault.url


def _outcomes_or_none() -> LastOutcomes | None:
    try:
        return last_outcomes()
    except CertRenewError as exc:  # the records are the truth; the inventory's view waits for the settings
        log.warning("Last outcomes not kept: %s", exc.message)
        return None


def _outcomes_of_vault(vault_url: str) -> LastOutcomes | None:
    return last_outcomes(vault_url) if _outcomes_or_none() is not None else None


def _outcomes_by_vault_or_none() -> OutcomesByVault | None:
    """`last_outcomes` as the records use it (each names its vault), or None as above."""
    return last_outcomes if _outcomes_or_none() is not None else None


def pending_store() -> PendingStore:
    from shared.appviewx.records import PendingStore

    return _cached("pending", lambda: PendingStore(_table("pending_table"), _outcomes_by_vault_or_none()))


def idempotency_store() -> IdempotencyStore:
    from shared.security.idempotency import IdempotencyStore

    return _cached("idempotency", lambda: IdempotencyStore(_table("idempotency_table")))


def signature_replays() -> SignatureReplayStore:
    from shared.security.replay import SignatureReplayStore

    return _cached("signatures", lambda: SignatureReplayStore(_table("idempotency_table")))


def event_claims() -> EventClaims:
    """Key Vault event claims, in the idempotency table (partitions apart from the webhook's keys)."""
    from shared.vault.event_claims import EventClaims

    return _cached("eventclaims", lambda: EventClaims(_table("idempotency_table")))


def renewal_failures(vault_url: str | None = None) -> RenewalFailureStore:
    """Each certificate's failed renewals in a row (the renewal backoff) of one vault (None: the default one), in the
    idempotency table."""
    from shared.vault.renewal_failures import RenewalFailureStore

    url = vault_url or settings().key_vault.url
    name = "renewalfailures" if url == settings().key_vault.url else f"renewalfailures {url}"
    return _cached(name, lambda: RenewalFailureStore(_table("idempotency_table"), url, _outcomes_of_vault(url)))


def rcl_certificate_names() -> list[str]:
    """The names in RCL's renewal records (who RCL renews)."""
    return [str(r.get("certificateName") or "") for r in renewal_state().all_records()]


def event_dependencies() -> EventDependencies:
    """What renewing or reporting a Key Vault certificate version needs (the event path, the sweep, the CLI); AVX
    and the records are made only when a renewal is due."""
    from shared.vault.events import EventDependencies

    return EventDependencies(
        vault_url=settings().key_vault.url,
        store=key_vault_store(),
        claims=event_claims(),
        records=pending_store,
        avx=avx_client,
        rcl_certificate_names=rcl_certificate_names,
        failures=renewal_failures(),
        vaults=settings().key_vault.all_vaults,
        stores=key_vault_store,
        failure_stores=renewal_failures,
    )


def sweep_dependencies() -> SweepDependencies:
    from shared.vault.renewal_plan import RenewalWindow
    from shared.vault.sweep import SweepDependencies

    sweep = settings().sweep  # validated first: a settings problem is named before anything is opened
    return SweepDependencies(
        events=event_dependencies(),
        window=RenewalWindow(sweep.remaining_fraction, sweep.before_days),
        max_renewals=sweep.max_renewals,
    )


def resource_graph() -> ResourceGraph:
    def build() -> ResourceGraph:
        from shared.azure import identity
        from shared.azure.resourcegraph import ResourceGraph

        s = settings()
        return ResourceGraph(s.consumers, identity.managed_identity(s.identity))

    return _cached("resourcegraph", build)


def consumer_store() -> ConsumerStore:
    from shared.consumers.store import ConsumerStore

    return _cached("consumers", lambda: ConsumerStore(_table("consumer_table")))


def known_consumers() -> dict[str, KnownConsumers]:
    """What the last discovery run stored, per certificate (lower-case name). {} when discovery is off; also {} (with
    a warning) when its settings are wrong or the table cannot be read: the endpoint check and the inventory go on."""
    try:
        if not settings().consumers.enabled:
            return {}
        return consumer_store().all()
    except CertRenewError as exc:  # SettingsError, StateStoreError: the messages are safe to log
        log.warning("Discovered consumers unavailable: %s", exc.message)
        return {}


def discovery_dependencies(*, save: bool = True) -> DiscoveryDependencies:
    from shared.consumers.run import DiscoveryDependencies

    s = settings()
    consumers = s.consumers  # validated first: a settings problem is named before anything is opened
    return DiscoveryDependencies(
        settings=consumers,
        graph=resource_graph,
        key_vault=key_vault_store,
        vault_url=s.key_vault.url if consumers.enabled else "",
        store=consumer_store if save else None,
    )


def rcl_client() -> RclClient:
    from shared.rcl.client import RclClient

    return _cached("rcl", lambda: RclClient(settings().rcl))


def renewal_state() -> RenewalStateStore:
    from shared.rcl.state import RenewalStateStore

    return _cached("renewalstate", lambda: RenewalStateStore(_table("renewal_table"), _outcomes_by_vault_or_none()))


def rcl_credential() -> TokenCredential:
    """RCL's bearer: the app registration's client credentials when all three RCL_CLIENT_* settings are given,
    otherwise the managed identity (its client id registered in the RCL portal)."""
    from shared.azure import identity

    s = settings()
    credentials = s.rcl.client_credentials
    return identity.client_credentials(credentials) if credentials else identity.managed_identity(s.identity)


def rcl_dependencies() -> RclDependencies:
    from shared.azure import identity
    from shared.rcl.run_calls import RclDependencies

    s = settings()
    rcl_settings = s.rcl  # validated first: a settings problem is named before anything is opened
    return RclDependencies(
        settings=rcl_settings,
        client=rcl_client(),
        state=renewal_state(),
        rcl_credential=rcl_credential(),
        key_vault_credential=identity.key_vault_credential_for_rcl(s.identity),
        fresh_key_vault_credential=lambda: identity.new_key_vault_credential_for_rcl(s.identity),
        locate=_rcl_locator(s),
    )


def _rcl_locator(s: Settings) -> Callable[[str, datetime | None], str | None] | None:
    """Where the morning check looks for RCL's renewed certificates: only with several vaults listed (with one, the
    vault is the default one), and never at the cost of the RCL run when the Key Vault settings are wrong."""
    from shared.vault.locate import vault_holding

    try:
        vaults = s.key_vault.all_vaults
    except SettingsError:
        return None
    if len(vaults) < 2:
        return None
    return lambda name, expiry: vault_holding(name, expiry, vaults, lambda url, n: key_vault_store(url).current(n))


def reset() -> None:
    """Close and forget every client and the settings (tests and the local stack change the environment)."""
    with _lock:
        for client in _clients.values():
            close = getattr(client, "close", None)
            if close:
                close()
        _clients.clear()
    from shared.azure import identity

    identity.reset_credentials()
    reset_settings()
