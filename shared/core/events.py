"""The names the app reports under: every custom event's name (`Event`) and the `source` property's values (`Source`).

Both are `StrEnum`s, so a member *is* its string: the event names and properties in Application Insights, the KQL in
`docs/` and `infra/`, and the JSON the app writes stay exactly the strings below. Every producer passes a member
to `shared.core.telemetry.emit_event`; `tests/core/test_events.py` checks that no other name is emitted and that the
events table in docs/telemetry.md lists each one.
"""

from __future__ import annotations

from enum import StrEnum


class Event(StrEnum):
    """The name of a custom event (`customEvents.name`)."""

    RENEWAL_SCHEDULED = "CertificateRenewalScheduled"  # RCL scheduled a certificate in the nightly run
    RCL_RENEWAL_RUN_COMPLETED = "RclRenewalRunCompleted"  # end of a nightly RCL run
    RCL_VERIFY_RUN_COMPLETED = "RclVerifyRunCompleted"  # end of a morning RCL check
    RENEWED = "CertificateRenewed"
    RENEWAL_PENDING = "CertificateRenewalPending"
    RENEWAL_FAILED = "CertificateRenewalFailed"
    RECORD_UNREADABLE = "RenewalRecordUnreadable"  # an open AppViewX renewal record no version wrote (once per row)
    NEAR_EXPIRY = "CertificateNearExpiry"
    EXPIRED = "CertificateExpired"  # a certificate not renewed in time has expired (Key Vault event, sweep)
    DEPLOYED = "CertificateDeployed"  # an endpoint serves Key Vault's current version
    NOT_DEPLOYED = "CertificateNotDeployed"  # an endpoint still serves another certificate
    ENDPOINT_CHECK_FAILED = "EndpointCheckFailed"  # an endpoint or its Key Vault certificate could not be read
    RENEWAL_SWEEP_COMPLETED = "RenewalSweepCompleted"  # end of a daily renewal sweep (plan_renewals), with counts
    RENEWAL_SWEEP_DEFERRED = "RenewalSweepDeferred"  # the sweep reached RENEWAL_SWEEP_MAX_RENEWALS: the rest wait
    CONSUMER_PINNED = "CertificateConsumerPinned"  # an Azure resource references an old version of a certificate
    CONSUMER_STALE = "CertificateConsumerStale"  # a versionless consumer still uses the old one a day after renewal
    CONSUMER_DISCOVERY_LIMITED = "ConsumerDiscoveryLimited"  # a discovery run stopped at CONSUMER_MAX_PER_RUN
    CONSUMER_DISCOVERY_COMPLETED = "ConsumerDiscoveryCompleted"  # end of a discovery run (its counts)
    NOTIFICATIONS_HELD = "NotificationsHeldBack"  # the notification budget held messages back (the digest)


class Source(StrEnum):
    """Which path an event is about (its `source` property), and the `source` tag the app puts on certificates it
    stores from AppViewX."""

    RCL = "rcl"
    APPVIEWX = "appviewx"
    ENDPOINT = "endpoint"  # the endpoint check
    KEYVAULT = "keyvault"  # a Key Vault event about a certificate nobody renews
    SWEEP = "sweep"  # the daily renewal sweep (plan_renewals) and its expiry ladder
    DISCOVERY = "discovery"  # the discovery of the Azure resources that use a certificate (Resource Graph)
