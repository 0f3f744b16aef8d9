"""An HTTP proxy on 127.0.0.1 in front of Azurite: the app's table requests are counted (benchmark) and can be
answered with faults (tests) without touching the app — its TableClient is simply pointed at the proxy's port
through the connection string."""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from tests.standins.base import RecordedRequest, Response, StandIn

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection", "upgrade"}


@dataclass
class _Fault:
    remaining: int
    response: Response
    kind: str | None
    match: Callable[[RecordedRequest], bool] | None = None
    skip: int = 0  # matching requests forwarded before the fault starts


class CountingProxy(StandIn):
    """Forwards every request to `upstream_port` over a kept-alive connection per client connection."""

    name = "table-proxy"

    def __init__(self, upstream_port: int) -> None:
        super().__init__()
        self.upstream_port = upstream_port
        self._local = threading.local()
        self.upstream_seconds: Counter[str] = Counter()  # time Azurite took, by request kind
        self._faults: list[_Fault] = []

    def fail_next(
        self,
        count: int,
        response: Response,
        kind: str | None = None,
        match: Callable[[RecordedRequest], bool] | None = None,
        *,
        after: int = 0,
    ) -> None:
        """Answer the next `count` requests of `kind` (batch, query, read, write, table; None: any) for which
        `match` (if given) is true with `response` instead of forwarding them; with `after`, that many matching
        requests are forwarded first."""
        with self.lock:
            self._faults.append(_Fault(count, response, kind, match, after))

    def _fault_for(self, request: RecordedRequest) -> Response | None:
        with self.lock:
            for fault in self._faults:
                matches = fault.match is None or fault.match(request)
                if fault.remaining > 0 and fault.kind in (None, kind_of(request)) and matches:
                    if fault.skip > 0:
                        fault.skip -= 1
                        return None
                    fault.remaining -= 1
                    return fault.response
        return None

    def reset_records(self) -> None:
        with self.lock:
            super().reset_records()
            self.upstream_seconds.clear()
            self._faults.clear()

    def _connection(self, fresh: bool = False) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is None or fresh:
            if connection is not None:
                connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=60)
            self._local.connection = connection
        return connection

    def handle(self, request: RecordedRequest) -> Response:
        fault = self._fault_for(request)
        if fault is not None:
            return fault
        target = request.path
        if request.query:
            # Rebuilt from the parsed query, spaces as %20 (a `+` would reach Azurite's $filter as a plus sign).
            pairs = [(k, v) for k, values in request.query.items() for v in values]
            target += "?" + urlencode(pairs, quote_via=quote, safe="$'(),=:")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != "host"}
        headers["Host"] = f"127.0.0.1:{self.upstream_port}"
        headers["Content-Length"] = str(len(request.body))
        started = time.perf_counter()
        for attempt in (1, 2):
            connection = self._connection(fresh=attempt == 2)
            try:
                connection.request(request.method, target, body=request.body or None, headers=headers)
                answer = connection.getresponse()
                body = answer.read()
                break
            except (http.client.HTTPException, OSError):
                if attempt == 2:
                    raise
        with self.lock:
            self.upstream_seconds[kind_of(request)] += time.perf_counter() - started
        kept = {k: v for k, v in answer.getheaders() if k.lower() not in HOP_BY_HOP}
        return Response(status=answer.status, body=body, headers=kept)

    def counts(self) -> Counter[str]:
        """Requests by kind: `batch` (entity-group transactions), `query`, `read`, `write`, `table`."""
        kinds: Counter[str] = Counter()
        with self.lock:
            requests = list(self.requests)
        for request in requests:
            kinds[kind_of(request)] += 1
        return kinds


def kind_of(request: RecordedRequest) -> str:
    path = request.path.rstrip("/")
    if path.endswith("/$batch"):
        return "batch"
    if path.endswith("/Tables") or "/Tables(" in path:
        return "table"
    if request.method == "GET":
        # A point read addresses one entity: Table(PartitionKey='..',RowKey='..'); anything else is a query.
        return "read" if "PartitionKey=" in path and "RowKey=" in path else "query"
    return "write"
