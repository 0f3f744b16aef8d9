"""Outbound HTTP discipline, in one place: a total deadline and a size cap on every answer, bounded retries with
exponential backoff and jitter that honour a clamped Retry-After, and the rule for calls that are not idempotent.

- A `Deadline` bounds the whole call: every attempt, every wait between attempts and every read of the answer.
  A per-read timeout alone is not enough: an answer trickling one byte a second never trips it. That holds for the
  status line and headers as well as the body: sessions mount `deadline_adapter`, whose connections shut the socket
  down when the deadline passes while they wait for the headers (a read timeout to the caller).
- With `max_bytes`, the answer is read streamed and refused (`AnswerTooLarge`) as soon as it declares or reaches more
  than that, so a huge answer is never held in memory.

- Idempotent calls (GET, AVX search and download, logins that only mint a session) retry on connection errors,
  timeouts, 429 and 5xx.
- A non-idempotent call (AVX renew) retries only when it provably never reached the server: refused connection,
  DNS failure or connect timeout. A read timeout is final, because the server may have acted on it.
Key Vault and token calls go through the Azure SDK, whose retry policy is configured in their own modules.
"""

from __future__ import annotations

import contextvars
import email.utils
import functools
import math
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # requests is imported where a call is made, to keep cold start short
    import requests
    from requests.adapters import HTTPAdapter

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# The longest Retry-After the app believes (a week); larger values, inf or nan never reach arithmetic.
RETRY_AFTER_CAP_SECONDS = 7 * 24 * 3600.0
_DELTA_SECONDS = re.compile(r"\d{1,12}(?:\.\d{1,6})?")
# ASCII digits only (str.isdigit() and int() accept "²" or other scripts' digits); repeated equal values are allowed.
_CONTENT_LENGTH = re.compile(r"[0-9]{1,30}(?:[ \t]*,[ \t]*[0-9]{1,30})*")
_READ_CHUNK = 64 * 1024
# Upstream text echoed to a caller or a log line: at most this long, one line, no control characters.
UPSTREAM_TEXT_LIMIT = 300
_SECRET_MARGIN = 2048  # redacted before the cut, so a secret across it is never left half-shown
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2066-\u2069]+")


@dataclass(frozen=True)
class Deadline:
    """The moment a whole outbound call (attempts, waits, reads) must be over by, on a monotonic clock."""

    expires_at: float
    clock: Callable[[], float] = time.monotonic

    @classmethod
    def after(cls, seconds: float, clock: Callable[[], float] = time.monotonic) -> Deadline:
        return cls(clock() + seconds, clock)

    def left(self) -> float:
        return self.expires_at - self.clock()


class AnswerTooLarge(Exception):
    """The answer declared or reached more than the caller's cap; it was not read further."""

    def __init__(self, limit: int, declared: int | None = None) -> None:
        size = f"declared {declared} bytes" if declared is not None else f"more than {limit} bytes"
        super().__init__(f"the answer was refused: {size}, the limit is {limit} bytes")
        self.limit = limit
        self.declared = declared


def upstream_text(value: object, limit: int = UPSTREAM_TEXT_LIMIT, withheld: Iterable[str | None] = ()) -> str:
    """Text an upstream sent, made safe to echo: the secrets of the request it answers (`withheld`, e.g. the PFX
    password AVX's validation error quotes) and every secret the redaction guard knows (the app's credentials,
    one-time passwords, tokens, secret-shaped text) replaced by a marker; control and invisible formatting
    characters become spaces, whitespace runs collapse to one, and it is cut to `limit` characters (a log line or
    answer stays one line). Done where the text becomes an error message, so answers, records' lastError, events
    and notifications never carry it, not only log lines."""
    from shared.core.redaction import redact, withhold

    text = value if isinstance(value, str) else str(value)
    text = redact(withhold(text[: limit * 4 + _SECRET_MARGIN], withheld))
    text = " ".join(_CONTROL.sub(" ", text[: limit * 4]).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 20.0
    # The longest Retry-After the app waits for inside one call; a longer one ends the call (the caller reports).
    max_retry_after: float = 30.0


# The deadline of the `send` in progress on this thread (or task), read by the connections that wait for an answer's
# status line and headers: http.client reads those with the per-read socket timeout only.
_CALL_DEADLINE: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("outbound_deadline", default=None)


class _Watchdog:
    """Shuts a socket down when `seconds` have passed unless disarmed first, so a read blocked on it (or a peer
    trickling one byte per read) ends then. `disarm()` says whether it fired."""

    def __init__(self, sock: object, seconds: float) -> None:
        self._sock = sock
        self._lock = threading.Lock()
        self._fired = False
        self._disarmed = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if self._disarmed:
                return
            self._fired = True
        # The plain socket's shutdown, also for a TLS socket: ssl.SSLSocket.shutdown would drop its SSL object while
        # the other thread reads through it.
        shutdown = socket.socket.shutdown if isinstance(self._sock, socket.socket) else None
        try:
            if shutdown is not None:
                shutdown(self._sock, socket.SHUT_RDWR)  # type: ignore[arg-type]
            else:
                getattr(self._sock, "shutdown", lambda _how: None)(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed: nothing left to unblock

    def disarm(self) -> bool:
        self._timer.cancel()
        with self._lock:
            self._disarmed = True
            return self._fired


class _HeadersWithinDeadline:
    """Mixed into urllib3's connections: the status line and headers arrive within the `send` deadline, or the socket
    is shut down and the wait ends as a read timeout (what urllib3 and requests make of a socket timeout). A kept-alive
    connection is reused as before; one whose deadline fired is closed by urllib3, never reused."""

    sock: Any

    def getresponse(self) -> Any:
        deadline = _CALL_DEADLINE.get()
        if deadline is None or self.sock is None:
            return super().getresponse()  # type: ignore[misc]
        watchdog = _Watchdog(self.sock, max(deadline.left(), 0.0))
        try:
            response = super().getresponse()  # type: ignore[misc]
        except BaseException:
            if watchdog.disarm():
                raise TimeoutError("the answer's headers did not arrive within the call's deadline") from None
            raise
        if watchdog.disarm():  # fired as the headers completed: the socket is shut down, the answer unusable
            response.close()
            raise TimeoutError("the answer's headers did not arrive within the call's deadline")
        return response


@functools.cache
def _deadline_adapter_class() -> type[HTTPAdapter]:
    """An HTTPAdapter whose pools open `_HeadersWithinDeadline` connections (built on first use: cold start)."""
    from requests.adapters import HTTPAdapter
    from urllib3 import ProxyManager
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    http = type("DeadlineHTTPConnection", (_HeadersWithinDeadline, HTTPConnection), {})
    https = type("DeadlineHTTPSConnection", (_HeadersWithinDeadline, HTTPSConnection), {})
    pools = {
        "http": type("DeadlineHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": http}),
        "https": type("DeadlineHTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": https}),
    }

    class DeadlineAdapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = pools

        def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
            manager = super().proxy_manager_for(proxy, **proxy_kwargs)
            if type(manager) is ProxyManager:  # a SOCKS manager keeps its own connection classes
                manager.pool_classes_by_scheme = pools
            return manager

    return DeadlineAdapter


def deadline_adapter(**kwargs: Any) -> HTTPAdapter:
    """An `HTTPAdapter` (same arguments) whose connections hold `send`'s deadline while waiting for the status line
    and headers too. Mount it on every session `send` is given (`new_session` does)."""
    return _deadline_adapter_class()(**kwargs)


def new_session(pool_size: int = 64) -> requests.Session:
    """A kept-alive session whose pool serves concurrent webhook calls without opening a connection each."""
    import requests

    session = requests.Session()
    adapter = deadline_adapter(pool_connections=4, pool_maxsize=pool_size)
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
    """Retry-After as seconds between 0 and `RETRY_AFTER_CAP_SECONDS`: delta-seconds (a decimal fraction is
    tolerated) or an HTTP date. None when absent or unreadable; never inf, nan or an overflow."""
    if not value or not isinstance(value, str):
        return None
    value = value.strip()
    if len(value) > 64:
        return None
    if _DELTA_SECONDS.fullmatch(value):
        return min(float(value), RETRY_AFTER_CAP_SECONDS)
    try:
        moment = email.utils.parsedate_to_datetime(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = (moment - (now or datetime.now(UTC))).total_seconds()
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), RETRY_AFTER_CAP_SECONDS)


def backoff_delay(attempt: int, policy: RetryPolicy, rand: Callable[[], float] = random.random) -> float:
    """Full-jitter exponential backoff for the `attempt`-th retry (1-based)."""
    ceiling = min(policy.max_delay, policy.base_delay * (2 ** (attempt - 1)))
    return ceiling * (0.5 + rand() / 2)


def _socket_of(response: requests.Response) -> object | None:
    connection = getattr(response.raw, "connection", None)
    return getattr(connection, "sock", None)


def read_bounded(response: requests.Response, deadline: Deadline | None, max_bytes: int | None) -> bytes:
    """Read a streamed answer's body within `deadline` and at most `max_bytes` (decoded) bytes, and keep it as the
    response's `content`. Raises `AnswerTooLarge`, `requests.ReadTimeout` when the deadline passes mid-answer, or
    `requests.exceptions.InvalidHeader` (with the `response`) for an unreadable Content-Length (the connection is
    closed either way, never reused half-read)."""
    import requests
    from urllib3.exceptions import HTTPError as Urllib3Error
    from urllib3.exceptions import ReadTimeoutError

    declared = (response.headers.get("Content-Length") or "").strip()
    if declared:
        sizes = {int(size) for size in declared.split(",")} if _CONTENT_LENGTH.fullmatch(declared) else set()
        if len(sizes) != 1:  # the answer's framing cannot be trusted: a broken answer, never an unexpected error
            response.close()
            raise requests.exceptions.InvalidHeader("the answer's Content-Length is unreadable", response=response)
        (size,) = sizes
        if max_bytes is not None and size > max_bytes:
            response.close()
            raise AnswerTooLarge(max_bytes, size)
    sock = _socket_of(response)
    body = bytearray()
    try:
        while True:
            if deadline is not None:
                left = deadline.left()
                if left <= 0:
                    raise requests.ReadTimeout("the answer did not arrive within the call's deadline")
                settimeout = getattr(sock, "settimeout", None)
                if settimeout is not None:
                    settimeout(max(left, 0.001))  # the read in progress ends at the deadline too
            chunk = response.raw.read1(_READ_CHUNK, decode_content=True)
            if not chunk:
                break
            body += chunk
            if max_bytes is not None and len(body) > max_bytes:
                raise AnswerTooLarge(max_bytes)
    except ReadTimeoutError:
        response.close()
        raise requests.ReadTimeout("the answer did not arrive within the call's deadline") from None
    except Urllib3Error as exc:
        response.close()
        raise requests.ConnectionError(f"the answer broke off: {type(exc).__name__}") from None
    except BaseException:
        response.close()
        raise
    content = bytes(body)
    response._content = content  # what `response.content` / `.json()` return from now on
    response._content_consumed = True
    return content


def _attempt(
    session: requests.Session,
    method: str,
    url: str,
    timeout: tuple[float, float],
    deadline: Deadline | None,
    max_bytes: int | None,
    **kwargs: object,
) -> requests.Response:
    """One attempt: connect and read timeouts no longer than the time left, the answer read within the bounds."""
    bounded = deadline is not None or max_bytes is not None
    if deadline is not None:
        left = deadline.left()
        timeout = (max(min(timeout[0], left), 0.001), max(min(timeout[1], left), 0.001))
    in_call = _CALL_DEADLINE.set(deadline)  # the headers' wait ends at the deadline too (`deadline_adapter`)
    try:
        response = session.request(method, url, timeout=timeout, **({"stream": True} if bounded else {}), **kwargs)  # type: ignore[arg-type]
    finally:
        _CALL_DEADLINE.reset(in_call)
    if bounded and hasattr(response, "raw"):
        read_bounded(response, deadline, max_bytes)
    return response


def send(
    session: requests.Session,
    method: str,
    url: str,
    *,
    idempotent: bool,
    policy: RetryPolicy,
    timeout: tuple[float, float],
    sleep: Callable[[float], None] = time.sleep,
    deadline: Deadline | None = None,
    max_bytes: int | None = None,
    **kwargs: object,
) -> requests.Response:
    """Send one logical request with the retry rules above, the whole of it (attempts, waits and reads) within
    `deadline`, each answer read streamed up to `max_bytes`. Raises the last requests exception (a
    `requests.ReadTimeout` when the deadline passed while waiting for an answer) or `AnswerTooLarge`, or returns the
    last response, body read (which may be an error status the caller maps)."""
    import requests

    attempt = 0
    while True:
        attempt += 1
        try:
            response = _attempt(session, method, url, timeout, deadline, max_bytes, **kwargs)
        except requests.RequestException as exc:
            retryable = never_sent(exc) or (
                idempotent and isinstance(exc, (requests.ConnectionError, requests.Timeout))
            )
            if not retryable or attempt >= policy.attempts:
                raise
            delay = backoff_delay(attempt, policy)
            if deadline is not None and delay >= deadline.left() - 0.05:
                raise  # no time left for another attempt: the last failure is the answer
            sleep(delay)
            continue
        if not idempotent or response.status_code not in RETRY_STATUSES or attempt >= policy.attempts:
            return response
        wait = retry_after_seconds(response.headers.get("Retry-After"))
        if wait is not None and wait > policy.max_retry_after:
            return response
        delay = wait if wait is not None else backoff_delay(attempt, policy)
        if deadline is not None and delay >= deadline.left() - 0.05:
            return response
        sleep(delay)
