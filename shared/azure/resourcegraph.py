"""Azure Resource Graph: the one module that speaks its query protocol.

`POST {RESOURCE_MANAGER_URL}/providers/Microsoft.ResourceGraph/resources?api-version=2022-10-01` with
`{"subscriptions": [...], "query": "<KQL>", "options": {"$top", "$skipToken", "resultFormat": "objectArray"}}`; the
answer is `{"totalRecords", "count", "resultTruncated", "data": [rows], "$skipToken"}` and a `$skipToken` is passed back,
with the same query and subscriptions, for the next page (Resource Graph REST "Resources - Resources"; NOTES.md).

Through azure-core's pipeline (no hand-made HTTP): `BearerTokenCredentialPolicy` adds the managed identity's token for
`<RESOURCE_MANAGER_URL>/.default`, `RetryPolicy` retries throttling (429) and 5xx with backoff, honouring Retry-After —
or Resource Graph's own `x-ms-user-quota-resets-after` (hh:mm:ss) when that is all the answer gives — capped so one
run stays inside the timer's limit. The query is a read, so a POST is retried too.

Bounded: at most `max_rows` rows are read (the caller's per-run limit), pages of at most 1,000 rows (`$top`'s maximum),
at most `MAX_PAGES` pages (reported as a cut, like the row limit), each page's body read streamed up to
`MAX_PAGE_BYTES` (a larger page is asked again for half the rows, down to one), and a `$skipToken` that comes back again fails the run instead of looping.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError, ClientAuthenticationError
from azure.core.pipeline.policies import RetryPolicy

from shared.core.errors import IdentityError, ResourceGraphError
from shared.core.settings import ConsumerSettings, is_loopback
from shared.core.upstream import CONNECT_TIMEOUT_SECONDS

if TYPE_CHECKING:
    from azure.core import PipelineClient
    from azure.core.pipeline import PipelineResponse

API_VERSION = "2022-10-01"
RESOURCES_PATH = "/providers/Microsoft.ResourceGraph/resources"
PAGE_MAX = 1000  # the largest $top Resource Graph serves per page
# A page's body is read streamed up to this size (1,000 rows of the projected columns fit well within it).
MAX_PAGE_BYTES = 64 * 1024 * 1024
MAX_PAGES = 200  # a run reads at most this many pages, however few rows each holds
READ_TIMEOUT_SECONDS = 60
MAX_RETRY_AFTER_SECONDS = 30.0  # a longer throttling wait fails this run; the next one (6 h later) tries again
RETRY_BUDGET_SECONDS = 180  # all tries of one page, waits included
_QUOTA_RESET = re.compile(r"^(\d{1,2}):(\d{2}):(\d{2})(?:\.\d+)?$")


def quota_resets_after(value: str | None) -> float | None:
    """Seconds of Resource Graph's `x-ms-user-quota-resets-after` (`hh:mm:ss`), None when absent or unreadable."""
    match = _QUOTA_RESET.match((value or "").strip())
    if not match:
        return None
    hours, minutes, seconds = (int(part) for part in match.groups())
    return float(hours * 3600 + minutes * 60 + seconds)


class ThrottleAwareRetryPolicy(RetryPolicy):
    """azure-core's RetryPolicy that also retries the (read-only) query POST and reads Resource Graph's quota header
    when no Retry-After came; every wait is capped."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._method_whitelist = frozenset({*self._method_whitelist, "POST"})

    def get_retry_after(self, response: PipelineResponse[Any, Any]) -> float | None:
        wait = super().get_retry_after(response)
        if wait is None:
            wait = quota_resets_after(response.http_response.headers.get("x-ms-user-quota-resets-after"))
        return None if wait is None else min(wait, MAX_RETRY_AFTER_SECONDS)


class PageTooLarge(ResourceGraphError):
    """A page's answer beyond MAX_PAGE_BYTES."""


@dataclass(frozen=True)
class QueryResult:
    rows: list[dict[str, Any]]
    pages: int
    total_records: int | None  # what Resource Graph said matched (all pages), when it said
    limited: bool  # more rows were there than `max_rows`: the caller reports the cut


class ResourceGraph:
    """Queries Resource Graph for the subscriptions of `settings` with the app's managed identity."""

    def __init__(self, settings: ConsumerSettings, credential: TokenCredential, **client_options: Any) -> None:
        self.settings = settings
        self._credential = credential
        self._client = _pipeline_client(settings, credential, **client_options)
        # Plain http only reaches a loopback stand-in (settings refuse it elsewhere); the token policy needs telling.
        self._enforce_https = not is_loopback(urlsplit(settings.resource_manager_url).hostname or "")

    def close(self) -> None:
        self._client.close()

    def query(self, query: str, max_rows: int, page_size: int = PAGE_MAX) -> QueryResult:
        """Every row of `query` over the settings' subscriptions, page after page while a `$skipToken` comes, up to
        `max_rows` rows and `MAX_PAGES` pages (a page may hold fewer rows than `$top` asked for)."""
        rows: list[dict[str, Any]] = []
        seen_tokens: set[str] = set()
        token: str | None = None
        total: int | None = None
        size = max(1, min(page_size, PAGE_MAX))
        for pages in range(1, MAX_PAGES + 1):
            page, size = self._fitting_page(query, size, max_rows - len(rows), token)
            total = page["totalRecords"] if isinstance(page.get("totalRecords"), int) else total
            data, room = page["data"], max_rows - len(rows)
            rows.extend(data[:room])
            token = page.get("$skipToken") or None
            if len(data) > room or (token and len(rows) >= max_rows):
                return QueryResult(rows, pages, total, limited=True)
            if not token:
                return QueryResult(rows, pages, total, limited=_cut_short(page, len(rows), total))
            if token in seen_tokens:
                raise ResourceGraphError("Resource Graph's paging did not end (a $skipToken came back again)")
            seen_tokens.add(token)
        return QueryResult(rows, MAX_PAGES, total, limited=True)  # more pages than a run reads: reported as cut

    def _fitting_page(self, query: str, size: int, room: int, token: str | None) -> tuple[dict[str, Any], int]:
        """The next page, asked again for half as many rows while its answer is larger than MAX_PAGE_BYTES (rows of
        large resources); the smaller size is kept for the pages after it."""
        while True:
            try:
                return self._page(query, max(1, min(size, room)), token), size
            except PageTooLarge:
                if min(size, room) <= 1:
                    raise
                size = max(1, min(size, room) // 2)

    def _page(self, query: str, top: int, skip_token: str | None) -> dict[str, Any]:
        from azure.core.rest import HttpRequest

        options: dict[str, Any] = {"$top": top, "resultFormat": "objectArray"}
        if skip_token:
            options["$skipToken"] = skip_token
        body = {"subscriptions": list(self.settings.subscriptions), "query": query, "options": options}
        request = HttpRequest(
            "POST",
            f"{self.settings.resource_manager_url}{RESOURCES_PATH}",
            params={"api-version": API_VERSION},
            json=body,
        )
        try:
            response = self._client.send_request(request, stream=True, enforce_https=self._enforce_https)
            body = _read_bounded(response)
            if response.status_code >= 400:
                raise _answer_error(response.status_code, body)
            document = json.loads(body)
        except ClientAuthenticationError as exc:  # the token policy could not get a token
            raise IdentityError(
                f"Could not get a token for Resource Graph (scope {self.settings.scope}): {type(exc).__name__}"
            ) from None
        except (AzureError, ValueError) as exc:  # unreachable, timed out, or an answer that is not JSON
            raise ResourceGraphError(f"Resource Graph could not be queried: {type(exc).__name__}") from None
        return _checked_page(document)


def _pipeline_client(settings: ConsumerSettings, credential: TokenCredential, **options: Any) -> PipelineClient:
    from azure.core import PipelineClient
    from azure.core.pipeline.policies import BearerTokenCredentialPolicy, HeadersPolicy, UserAgentPolicy
    from azure.core.pipeline.transport import RequestsTransport

    from shared.core.outbound import new_session

    retry = ThrottleAwareRetryPolicy(
        retry_total=options.pop("retry_total", 4),
        retry_backoff_factor=options.pop("retry_backoff_factor", 1.0),
        retry_backoff_max=int(MAX_RETRY_AFTER_SECONDS),
        timeout=RETRY_BUDGET_SECONDS,
    )
    transport = options.pop("transport", None) or RequestsTransport(
        session=new_session(4),
        session_owner=True,
        connection_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=READ_TIMEOUT_SECONDS,
    )
    policies = [
        HeadersPolicy({"Accept": "application/json"}),
        UserAgentPolicy(sdk_moniker="certrenew-consumers"),
        retry,  # before the token policy: each try is authorized afresh
        BearerTokenCredentialPolicy(credential, settings.scope),
    ]
    return PipelineClient(base_url=settings.resource_manager_url, policies=policies, transport=transport)


def _read_bounded(response: Any) -> bytes:
    """The answer's body, refused (ResourceGraphError) once it declares or reaches more than MAX_PAGE_BYTES: a page
    is never held whole before its size is known."""
    try:
        declared = int(response.headers.get("Content-Length") or 0)
    except ValueError:
        declared = 0
    body = bytearray()
    try:
        if declared <= MAX_PAGE_BYTES:
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_PAGE_BYTES:
                    break
    finally:
        response.close()
    if declared > MAX_PAGE_BYTES or len(body) > MAX_PAGE_BYTES:
        raise PageTooLarge(f"Resource Graph answered a page larger than {MAX_PAGE_BYTES} bytes, even of one row")
    return bytes(body)


def _answer_error(status: int, body: bytes) -> ResourceGraphError:
    code = ""
    try:
        error = json.loads(body or b"{}").get("error") or {}
        code = str(error.get("code") or "")[:64]
    except (ValueError, AttributeError):
        pass
    detail = f"HTTP {status}" + (f" ({code})" if code else "")
    if status in (401, 403):
        return ResourceGraphError(
            f"Resource Graph refused the query: {detail}; the app's identity needs Reader on each subscription in "
            "CONSUMER_SUBSCRIPTIONS"
        )
    if status == 429:
        return ResourceGraphError(f"Resource Graph kept throttling the query: {detail}")
    return ResourceGraphError(f"Resource Graph answered {detail}")


def _cut_short(last_page: dict[str, Any], read: int, total: int | None) -> bool:
    """A last page (no `$skipToken`) that Resource Graph says is truncated, and fewer rows read than matched: paging
    was not possible ("When resultTruncated is true, the $skipToken property isn't set", Resource Graph "Guidance for
    pagination"; the same page calls it true also when fewer rows are left than asked for, hence the count)."""
    truncated = str(last_page.get("resultTruncated")).lower() == "true"
    return truncated and (total is None or read < total)


def _checked_page(document: Any) -> dict[str, Any]:
    """The page when it has the documented shape (objectArray `data`); a ResourceGraphError otherwise."""
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise ResourceGraphError("Resource Graph answered something that is not a query result (no data array)")
    token = document.get("$skipToken")
    if token is not None and (not isinstance(token, str) or len(token) > 8192):
        raise ResourceGraphError("Resource Graph answered a $skipToken that is not a short string")
    document["data"] = [row for row in document["data"] if isinstance(row, dict)]
    return document
