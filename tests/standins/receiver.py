"""Notification receiver stand-in: a webhook endpoint (Teams Workflows, Slack, or any JSON receiver) on 127.0.0.1.

It records every POST and answers 200 (Slack's `ok`, or 202 like the Workflows trigger when asked), unless answers
were scripted: `script(Response(status=429, headers={"Retry-After": "1"}), Response(status=500))` answers the next
calls in that order; `always(Response(...))` answers every call the same way (a receiver that keeps failing);
`Response(delay=...)` answers late and `Response(drop=True)` closes the connection without answering.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from tests.standins.base import RecordedRequest, Response, StandIn


def busy(retry_after: str = "1") -> Response:
    return Response.json({"error": "throttled"}, status=429, headers={"Retry-After": retry_after})


def server_error() -> Response:
    return Response.text("upstream failure", status=500)


def slow(seconds: float) -> Response:
    return Response(status=200, body=b"ok", delay=seconds)


def dropped() -> Response:
    return Response(drop=True)


class ReceiverStandIn(StandIn):
    name = "receiver-standin"
    path = "/hooks/notify"

    def __init__(self) -> None:
        super().__init__()
        self.scripted: deque[Response] = deque()
        self.fallback: Response | None = None
        self.success = Response.text("ok")

    def webhook_url(self, query: str = "api-version=1&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=Receiver-Sig-Q9") -> str:
        """The receiver's URL, shaped like a Workflows URL: its `sig` stands for the secret a real one carries."""
        return f"{self.url}{self.path}?{query}" if query else f"{self.url}{self.path}"

    # -- scripting -------------------------------------------------------------------------------------------------
    def script(self, *responses: Response) -> None:
        with self.lock:
            self.scripted.extend(responses)

    def always(self, response: Response | None) -> None:
        with self.lock:
            self.fallback = response

    def reset(self) -> None:
        with self.lock:
            self.scripted.clear()
            self.fallback = None
        self.reset_records()

    # -- views -----------------------------------------------------------------------------------------------------
    def messages(self) -> list[dict[str, Any]]:
        """The JSON bodies of every POST to the webhook path, in order (including retried ones)."""
        return [r.json() for r in self.received("POST", self.path)]

    def bodies(self) -> list[bytes]:
        with self.lock:
            return [r.body for r in self.requests]

    def handle(self, request: RecordedRequest) -> Response:
        if request.method != "POST" or request.path != self.path:
            return Response.text("Not Found", status=404)
        with self.lock:
            if self.scripted:
                return self.scripted.popleft()
            if self.fallback is not None:
                return self.fallback
        return self.success
