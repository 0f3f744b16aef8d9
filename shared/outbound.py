"""Outbound HTTP discipline, in one place: timeouts on every call, bounded retries with exponential backoff and
jitter that honour Retry-After, and the rule for calls that are not idempotent.

- Idempotent calls (GET, AVX search and download, logins that only mint a session) retry on connection errors,
  timeouts, 429 and 5xx.
- A non-idempotent call (AVX renew) retries only when it provably never reached the server: refused connection,
  DNS failure or connect timeout. A read timeout is final, because the server may have acted on it.
Key Vault and token calls go through the Azure SDK, whose retry policy is configured in their own modules.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # requests is imported where a call is made, to keep cold start short
    import requests

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 20.0
    # The longest Retry-After the app waits for inside one call; a longer one ends the call (the caller reports).
    max_retry_after: float = 30.0


def new_session(pool_size: int = 64) -> requests.Session:
    """A kept-alive session whose pool serves concurrent webhook calls without opening a connection each."""
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def never_sent(exc: BaseException) -> bool:
    """True only when a request provably did not reach the server: refused connection, DNS failure, connect timeout."""
    import requests
    from urllib3.exceptions import NameResolutionError, NewConnectionError

    if isinstance(exc, requests.ConnectTimeout):
        return True
    stack: list[BaseException] = [exc]
    seen: set[int] = set()
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, (NewConnectionError, NameResolutionError, ConnectionRefusedError)):
            return True
        linked = (getattr(current, "reason", None), current.__cause__, current.__context__, *current.args)
        stack.extend(e for e in linked if isinstance(e, BaseException))
    return False


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date. None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


def backoff_delay(attempt: int, policy: RetryPolicy, rand: Callable[[], float] = random.random) -> float:
    """Full-jitter exponential backoff for the `attempt`-th retry (1-based)."""
    ceiling = min(policy.max_delay, policy.base_delay * (2 ** (attempt - 1)))
    return ceiling * (0.5 + rand() / 2)


def send(
    session: requests.Session,
    method: str,
    url: str,
    *,
    idempotent: bool,
    policy: RetryPolicy,
    timeout: tuple[float, float],
    sleep: Callable[[float], None] = time.sleep,
    **kwargs: object,
) -> requests.Response:
    """Send one logical request with the retry rules above. Raises the last requests exception, or returns the
    last response (which may be an error status the caller maps)."""
    import requests

    attempt = 0
    while True:
        attempt += 1
        try:
            response = session.request(method, url, timeout=timeout, **kwargs)  # type: ignore[arg-type]
        except requests.RequestException as exc:
            retryable = never_sent(exc) or (
                idempotent and isinstance(exc, (requests.ConnectionError, requests.Timeout))
            )
            if not retryable or attempt >= policy.attempts:
                raise
            sleep(backoff_delay(attempt, policy))
            continue
        if not idempotent or response.status_code not in RETRY_STATUSES or attempt >= policy.attempts:
            return response
        wait = retry_after_seconds(response.headers.get("Retry-After"))
        if wait is not None and wait > policy.max_retry_after:
            return response
        sleep(wait if wait is not None else backoff_delay(attempt, policy))
