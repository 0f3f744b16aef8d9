"""Application Insights ingestion stand-in: `POST /v2.1/track`, as the Azure Monitor exporter sends it.

The body is a JSON array of envelopes (or newline-delimited JSON), possibly gzip-compressed. Every envelope is
recorded; the answer is the service's `{"itemsReceived": n, "itemsAccepted": n, "errors": []}`.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

from tests.standins.base import RecordedRequest, Response, StandIn

INSTRUMENTATION_KEY = "00000000-0000-0000-0000-000000000000"


def parse_envelopes(body: bytes, content_encoding: str | None = None) -> list[dict[str, Any]]:
    if (content_encoding or "").lower() == "gzip" or body[:2] == b"\x1f\x8b":
        body = gzip.decompress(body)
    text = body.decode("utf-8").strip()
    if not text:
        return []
    if text.startswith("["):
        parsed = json.loads(text)
        return [item for item in parsed if isinstance(item, dict)]
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class IngestionStandIn(StandIn):
    name = "ingestion-standin"

    def __init__(self) -> None:
        super().__init__()
        self.envelopes: list[dict[str, Any]] = []
        self.raw_bodies: list[bytes] = []

    @property
    def connection_string(self) -> str:
        return f"InstrumentationKey={INSTRUMENTATION_KEY};IngestionEndpoint={self.url}/"

    def reset(self) -> None:
        with self.lock:
            self.envelopes.clear()
            self.raw_bodies.clear()
        self.reset_records()

    def handle(self, request: RecordedRequest) -> Response:
        if request.method != "POST" or request.path.rstrip("/") != "/v2.1/track":
            return Response.text("Not Found", status=404)
        try:
            envelopes = parse_envelopes(request.body, request.header("Content-Encoding"))
        except (ValueError, OSError) as exc:
            return Response.json({"itemsReceived": 0, "itemsAccepted": 0, "errors": [{"message": str(exc)}]}, 400)
        with self.lock:
            self.raw_bodies.append(request.body)
            self.envelopes.extend(envelopes)
        count = len(envelopes)
        return Response.json({"itemsReceived": count, "itemsAccepted": count, "errors": []})

    # -- views -----------------------------------------------------------------------------------------------------
    def of_type(self, base_type: str) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.envelopes if e.get("data", {}).get("baseType") == base_type]

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The customEvents rows' data: {name, properties, measurements}."""
        found = [e["data"]["baseData"] for e in self.of_type("EventData")]
        return [d for d in found if name is None or d.get("name") == name]

    def dependencies(self) -> list[dict[str, Any]]:
        return [e["data"]["baseData"] for e in self.of_type("RemoteDependencyData")]

    def messages(self) -> list[dict[str, Any]]:
        return [e["data"]["baseData"] for e in self.of_type("MessageData")]

    def exceptions(self) -> list[dict[str, Any]]:
        return [e["data"]["baseData"] for e in self.of_type("ExceptionData")]
