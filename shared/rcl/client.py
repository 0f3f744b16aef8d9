"""RCL (Let's Encrypt through RCL's service): `POST /CertificateRenewal` and `GET /CertificateList` of API v2.

One `RclClient` per process keeps one `requests` session. Each method makes exactly one HTTP call: how often a
night may call RCL (its quota is 50 requests a week) is decided by the caller, not hidden in a retry loop here.
Tokens travel only in the Authorization header and the request body; they are never part of an error or a log line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.core.errors import RclError
from shared.core.outbound import (
    AnswerTooLarge,
    Deadline,
    RetryPolicy,
    deadline_adapter,
    never_sent,
    retry_after_seconds,
    send,
    upstream_text,
)
from shared.core.settings import RclSettings
from shared.core.upstream import CONNECT_TIMEOUT_SECONDS, optional_text

if TYPE_CHECKING:  # requests is imported where a call is made, to keep cold start short
    import requests

MIB = 1024 * 1024
MAX_RESPONSE_MB_CAP = 4096.0  # whatever RCL_MAX_RESPONSE_MB says (inf included), no answer is read beyond this
MAX_RETRY_AFTER_SECONDS = 60.0  # a longer Retry-After is not waited for inside a timer run

# Stable codes of RclError, each with what an operator can do about it.
UNAUTHORIZED = "RCL_UNAUTHORIZED"
QUOTA_EXCEEDED = "RCL_QUOTA_EXCEEDED"
SERVER_ERROR = "RCL_SERVER_ERROR"
TIMEOUT = "RCL_TIMEOUT"
UNREACHABLE = "RCL_UNREACHABLE"  # the request provably never reached RCL
CONNECTION_LOST = "RCL_CONNECTION_LOST"  # sent, but the connection broke before an answer
BAD_RESPONSE = "RCL_BAD_RESPONSE"
BAD_REQUEST = "RCL_BAD_REQUEST"
NOT_FOUND = "RCL_NOT_FOUND"

REMEDIATION: dict[str, str] = {
    # (QUOTA_EXCEEDED covers the 429 and the API gateway's 403 "Out of call volume quota".)
    UNAUTHORIZED: (
        "Register the client id of the identity the app uses for RCL (the managed identity's client id, or "
        "RCL_CLIENT_ID) in the RCL portal under Subscription > API Client > Register a Client Id, and check that "
        "RCL_TOKEN_SCOPE is https://management.core.windows.net/.default (the token's audience RCL expects)."
    ),
    QUOTA_EXCEEDED: (
        "RCL allows 50 API requests a week per subscription. Do not re-run by hand: the next scheduled run tries "
        "again. Check that RCL_RENEWAL_SCHEDULE and RCL_VERIFY_SCHEDULE run once a night and that nothing else "
        "(another app, a script) uses the same RCL subscription."
    ),
    SERVER_ERROR: "RCL's service failed; the next scheduled run tries again. Check RCL's status if it persists.",
    TIMEOUT: (
        "RCL did not answer in time (RCL_TIMEOUT_SECONDS). A renewal request may still have been scheduled: it is "
        "recorded as unknown, and the follow-up check reports what renewed since (the RCL portal's Notification page "
        "shows it too)."
    ),
    UNREACHABLE: "Check RCL_API_URL and the network path (DNS, firewall, outbound rules) from the Function App to RCL.",
    CONNECTION_LOST: "The connection to RCL broke before it answered; the next scheduled run tries again.",
    BAD_RESPONSE: (
        "RCL answered with something that is not the documented array of certificates; check RCL_API_URL. An answer "
        "larger than RCL_MAX_RESPONSE_MB is refused: raise it only if the subscription really holds that many "
        "certificates."
    ),
    BAD_REQUEST: (
        "RCL refused the request. If it names the Key Vault access token, check the managed identity's access to the "
        "vault, or set RCL_SEND_KEY_VAULT_TOKEN=false when the subscription has no Key Vault certificates."
    ),
    NOT_FOUND: "Check RCL_API_URL: it must be the v2 API base, e.g. https://letsencryptapi.azure-api.net/api/v2.",
}

# RCL writes ISO 8601 without a zone (meaning UTC) and with 7 fractional digits: 2021-04-30T01:04:32.1430019
_DATE = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})(?:[T ](?P<time>\d{2}:\d{2}(?::\d{2})?)(?:\.(?P<fraction>\d+))?)?"
    r"(?P<zone>Z|[+-]\d{2}:?\d{2})?$",
    re.IGNORECASE,
)


# What Azure Table storage (Edm.DateTime from 1601) and date arithmetic (a margin before year 9999) can hold. RCL's
# .NET defaults (0001-01-01 "MinValue", 9999-12-31 "MaxValue") are outside it and mean "no date".
EARLIEST_DATE = datetime(1601, 1, 2, tzinfo=UTC)
LATEST_DATE = datetime(9998, 12, 31, tzinfo=UTC)


def parse_rcl_date(value: Any) -> datetime | None:
    """An RCL date as an aware UTC datetime; None when absent, empty, not a date, or outside 1601..9998 (optional
    fields are tolerated; `date_problem` tells a caller that a given value was unusable)."""
    if not isinstance(value, str) or not value.strip():
        return None
    match = _DATE.match(value.strip())
    if not match:
        return None
    time_part = match["time"] or "00:00:00"
    if len(time_part) == 5:
        time_part += ":00"
    micro = (match["fraction"] or "")[:6].ljust(6, "0")  # Python keeps microseconds; RCL's 7th digit is dropped
    zone = match["zone"] or "+00:00"
    if zone.upper() == "Z":
        zone = "+00:00"
    elif ":" not in zone:
        zone = f"{zone[:3]}:{zone[3:]}"
    try:
        parsed = datetime.fromisoformat(f"{match['date']}T{time_part}.{micro}{zone}")
    except ValueError:
        return None
    if not EARLIEST_DATE <= parsed <= LATEST_DATE:  # compared before any conversion that could overflow
        return None
    return parsed.astimezone(UTC)


def date_problem(field_name: str, value: Any) -> str | None:
    """Why a present date value is not used ("expiryDate '0001-01-01T00:00:00' ..."), or None when it is fine."""
    if value is None or (isinstance(value, str) and not value.strip()) or parse_rcl_date(value) is not None:
        return None
    shown = upstream_text(value, 40)
    if isinstance(value, str) and _DATE.match(value.strip()):
        return f"{field_name} {shown!r} is outside 1601-9998 and is treated as missing"
    return f"{field_name} {shown!r} is not a date"


@dataclass(frozen=True)
class CertificateResponse:
    """One certificate as RCL describes it; only the fields the app uses, the rest are ignored."""

    id: int | None
    name: str
    issue_date: datetime | None
    expiry_date: datetime | None
    remote_create_date: datetime | None  # set once RCL installed the certificate on its target
    target: str | None
    renewal: str | None
    # Dates RCL sent that could not be used (unreadable, or outside what can be stored), for a warning.
    date_problems: tuple[str, ...] = ()

    @property
    def expiry_unreadable(self) -> bool:
        return any(p.startswith("expiryDate ") for p in self.date_problems)

    @property
    def key(self) -> str:
        """How the app tells certificates apart: RCL's id, else the name."""
        return f"id-{self.id}" if self.id is not None else f"name-{self.name}"


def _optional_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = value.strip() if isinstance(value, str) else ""
    # ASCII digits only ("²".isdigit() is true, int("²") fails), and short enough for int() (it refuses 4,300+).
    if text.isascii() and text.isdigit() and len(text) <= 30:
        return int(text)
    return None


def parse_certificate(item: Any, index: int) -> CertificateResponse:
    if not isinstance(item, dict):
        raise _bad(f"element {index} of RCL's answer is {type(item).__name__}, not a CertificateResponse object")
    name = optional_text(item.get("name"))
    if name is None:
        raise _bad(f"element {index} of RCL's answer has no name")
    dates = ("issueDate", "expiryDate", "remoteCreateDate")
    problems = tuple(p for p in (date_problem(f, item.get(f)) for f in dates) if p)
    return CertificateResponse(
        id=_optional_int(item.get("id")),
        name=name,
        issue_date=parse_rcl_date(item.get("issueDate")),
        expiry_date=parse_rcl_date(item.get("expiryDate")),
        remote_create_date=parse_rcl_date(item.get("remoteCreateDate")),
        target=optional_text(item.get("target")),
        renewal=optional_text(item.get("renewal")),
        date_problems=problems,
    )


def parse_certificates(body: bytes) -> list[CertificateResponse]:
    """RCL's answer: a JSON array of CertificateResponse objects (possibly empty); anything else is an RclError."""
    try:
        document = json.loads(body.decode("utf-8-sig")) if body.strip() else None
    except (ValueError, RecursionError):  # not UTF-8 or not JSON, or a number too long for int() (ValueError too)
        raise _bad("RCL's answer is not JSON (or holds a number too long to read)") from None
    if not isinstance(document, list):
        kind = "an empty body" if document is None else f"a JSON {type(document).__name__}"
        raise _bad(f"RCL answered with {kind}, not the documented array of certificates")
    return [parse_certificate(item, index) for index, item in enumerate(document)]


class RclHttpError(RclError):
    """RCL answered with an error status; `retry_after` is its Retry-After in seconds, when it sent one."""

    def __init__(self, message: str, *, code: str, http_status: int, retry_after: float | None) -> None:
        super().__init__(message, code=code, http_status=http_status, remediation=REMEDIATION[code])
        self.retry_after = retry_after


def _bad(message: str) -> RclError:
    return RclError(message, code=BAD_RESPONSE, remediation=REMEDIATION[BAD_RESPONSE])


_SECRETISH = re.compile(r"(?i)(bearer\s+)?\beyJ[\w-]+\.[\w-]+\.?[\w-]*|bearer\s+\S+")


def _safe_excerpt(text: str, secrets: tuple[str, ...]) -> str:
    """A short, single-line excerpt of RCL's error text, with anything token-like removed (RCL may echo them)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return upstream_text(_SECRETISH.sub("[redacted]", text), 200)


def _is_quota_refusal(status: int, body: bytes, retry_after: str | None) -> bool:
    """RCL's API gateway answers a used-up call volume quota with 403 "Out of call volume quota" and a
    Retry-After; that is the quota, not a refused identity."""
    if status != 403:
        return False
    return bool(retry_after and retry_after.strip()) or b"quota" in body[:4096].lower()


def error_for_status(
    status: int, body: bytes, what: str, secrets: tuple[str, ...], retry_after: str | None = None
) -> RclHttpError:
    """Map a non-2xx answer of RCL to the RclError an operator can act on."""
    excerpt = _safe_excerpt(body.decode("utf-8", "replace"), secrets) if body else ""
    said = f": {excerpt}" if excerpt else ""
    wait = retry_after_seconds(retry_after)
    if status == 429 or _is_quota_refusal(status, body, retry_after):
        code = QUOTA_EXCEEDED
        hint = f"; RCL says to retry after {timedelta(seconds=int(wait))}" if wait is not None else ""
        message = f"RCL's quota is used up (HTTP {status}) for {what}{said}{hint}. It was not retried."
    elif status in (401, 403):
        code = UNAUTHORIZED
        message = (
            f"RCL refused the app's token for {what} (HTTP {status}){said}. The identity's client id is not "
            "registered in the RCL portal, or the token's audience is wrong."
        )
    elif status >= 500:
        code = SERVER_ERROR
        message = f"RCL failed on {what} (HTTP {status}){said}"
    elif status == 404:
        code = NOT_FOUND
        message = f"RCL answered HTTP 404 for {what}{said}"
    else:
        code = BAD_REQUEST
        message = f"RCL refused {what} (HTTP {status}){said}"
    return RclHttpError(message, code=code, http_status=status, retry_after=wait)


def is_retryable(error: RclError, method: str) -> bool:
    """Whether one more call may help. Scheduling (POST) is not repeated after a timeout or a dropped connection,
    where RCL may already have scheduled; reading the list (GET) is safe to repeat. Quota and auth never are."""
    if error.code in (SERVER_ERROR, UNREACHABLE):
        return True
    return method == "GET" and error.code in (TIMEOUT, CONNECTION_LOST)


class RclClient:
    """RCL's API v2 for one subscription, as the identity registered in the RCL portal."""

    def __init__(self, settings: RclSettings, session: requests.Session | None = None) -> None:
        self.settings = settings
        import requests

        self.session = session or requests.Session()
        # No hidden retries (quota); RCL_TIMEOUT_SECONDS bounds the wait for the headers too.
        adapter = deadline_adapter(pool_connections=1, pool_maxsize=4, max_retries=0)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)

    def close(self) -> None:
        self.session.close()

    def schedule_renewals(self, bearer: str, key_vault_token: str) -> list[CertificateResponse]:
        """POST /CertificateRenewal: RCL schedules the due certificates and returns them (or [])."""
        body = json.dumps({"keyVaultAccessToken": key_vault_token})
        answer = self._call("POST", "CertificateRenewal", bearer, body, (bearer, key_vault_token))
        return parse_certificates(answer.content)

    def list_certificates(self, bearer: str) -> list[CertificateResponse]:
        """GET /CertificateList: every certificate of the subscription."""
        answer = self._call("GET", "CertificateList", bearer, None, (bearer,))
        return parse_certificates(answer.content)

    def _call(
        self, method: str, endpoint: str, bearer: str, body: str | None, secrets: tuple[str, ...]
    ) -> requests.Response:
        import requests

        url = f"{self.settings.api_url}/{endpoint}"
        what = f"{method} {endpoint}"
        headers = {"Authorization": f"Bearer {bearer}", "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        timeout = self.settings.timeout_seconds
        limit = int(min(self.settings.max_response_mb, MAX_RESPONSE_MB_CAP) * MIB)
        try:
            # RCL_TIMEOUT_SECONDS bounds the whole call, reading the answer included; one try (the caller decides
            # about a second one, within the night's budget).
            answer = send(
                self.session,
                method,
                url,
                idempotent=False,
                policy=RetryPolicy(attempts=1),
                timeout=(min(CONNECT_TIMEOUT_SECONDS, timeout), timeout),
                deadline=Deadline.after(timeout),
                max_bytes=limit,
                data=body,
                headers=headers,
            )
        except AnswerTooLarge:
            raise _bad(
                f"RCL's answer to {what} is larger than RCL_MAX_RESPONSE_MB ({self.settings.max_response_mb:g} MB) "
                "and was refused unread"
            ) from None
        except requests.ReadTimeout:
            raise RclError(
                f"RCL did not answer {what} within {timeout:g} s", code=TIMEOUT, remediation=REMEDIATION[TIMEOUT]
            ) from None
        except requests.RequestException as exc:
            if isinstance(exc, requests.exceptions.InvalidHeader) and exc.response is not None:
                raise _bad(f"RCL's answer to {what} has an unreadable Content-Length") from None
            code = UNREACHABLE if never_sent(exc) else CONNECTION_LOST
            raise RclError(
                f"RCL at {self.settings.api_url} could not be reached for {what}: {type(exc).__name__}",
                code=code,
                remediation=REMEDIATION[code],
            ) from None
        if not 200 <= answer.status_code < 300:
            raise error_for_status(answer.status_code, answer.content, what, secrets, answer.headers.get("Retry-After"))
        return answer
