"""What a versionless consumer without a thumbprint of its own really serves: its host names, probed over TLS.

An Application Gateway listener or a Front Door custom domain does not say in Resource Graph which certificate it
loaded; its host name does, to anyone who asks (`shared.endpoints.probe`, the endpoint check's reader). Only consumers
whose certificate was renewed more than `STALE_AFTER` ago are probed (before that, the old one is expected), at most
`MAX_PROBES` host names a run, `MAX_PARALLEL` at a time, within one bound; a host that cannot be read is skipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import replace
from datetime import datetime

from shared.consumers.decisions import STALE_AFTER, Version
from shared.consumers.references import Reference
from shared.core.settings import EndpointCheck, is_dns_name
from shared.core.timestamps import utc
from shared.endpoints.decisions import Problem, ServedCertificate
from shared.endpoints.probe import TIMEOUT_SECONDS

MAX_PROBES = 100
MAX_PARALLEL = 8
GRACE_SECONDS = 5.0  # beyond the probes' own deadlines, for name resolution

Probe = Callable[[EndpointCheck], ServedCertificate | Problem]
AddressOf = Callable[[str], tuple[str, int]]


def default_address(host: str) -> tuple[str, int]:
    return host, 443


def needs_probe(reference: Reference, current: Version | None, now: datetime) -> bool:
    """A versionless consumer that names host names but no thumbprint, renewed long enough ago to be stale."""
    if reference.version is not None or reference.served_thumbprint or not reference.host_names or current is None:
        return False
    return current.not_before is not None and utc(now) - utc(current.not_before) >= STALE_AFTER


def probe_hosts(
    checks: Iterable[tuple[str, str]], probe: Probe, address_of: AddressOf = default_address
) -> dict[tuple[str, str], str]:
    """The thumbprint each (certificate, host) serves, for those that could be read."""
    wanted = [(c, h) for c, h in dict.fromkeys(checks) if is_dns_name(h)][:MAX_PROBES]
    if not wanted:
        return {}
    bound = math.ceil(len(wanted) / MAX_PARALLEL) * (TIMEOUT_SECONDS + GRACE_SECONDS)
    executor = ThreadPoolExecutor(max_workers=MAX_PARALLEL, thread_name_prefix="consumer-probe")
    try:
        futures = {}
        for certificate, host in wanted:
            address, port = address_of(host)
            check = EndpointCheck(certificate=certificate, host=host, address_host=address, port=port)
            futures[(certificate, host)] = executor.submit(probe, check)
        wait(futures.values(), timeout=bound)
    finally:
        executor.shutdown(wait=False, cancel_futures=True)  # a hung name lookup is left behind
    served = {}
    for key, future in futures.items():
        if future.done() and not future.cancelled() and future.exception() is None:
            result = future.result()
            if isinstance(result, ServedCertificate):
                served[key] = result.thumbprint
    return served


def with_probed(reference: Reference, current: Version, served: dict[tuple[str, str], str]) -> Reference:
    """The reference with what its host names serve: the first that is not the current certificate, if any."""
    found = [served[(reference.certificate, h)] for h in reference.host_names if (reference.certificate, h) in served]
    if not found:
        return reference
    other = next((t for t in found if t != current.thumbprint.upper()), found[0])
    return replace(reference, served_thumbprint=other)
