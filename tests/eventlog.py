"""The custom events the app emitted during a test, as the telemetry sinks receive them (the `events` fixture)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from shared.core.telemetry import add_event_sink, remove_event_sink
from tests.standins.stack import SENTINELS


class Events:
    """Every custom event the app emitted, in order, with its properties."""

    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, name: str, attributes: dict[str, Any]) -> None:
        self.items.append((name, dict(attributes)))

    def named(self, name: str) -> list[dict[str, Any]]:
        return [a for n, a in self.items if n == name]

    def by_certificate(self, name: str) -> dict[str, dict[str, Any]]:
        return {a["certificateName"]: a for a in self.named(name)}

    def by_host(self) -> dict[str, tuple[str, dict[str, Any]]]:
        return {a["host"]: (n, a) for n, a in self.items if "host" in a}

    def clear(self) -> None:
        self.items.clear()


@contextmanager
def recording() -> Iterator[Events]:
    """Record the app's events while the block runs; none may carry a sentinel secret."""
    recorder = Events()
    add_event_sink(recorder)
    try:
        yield recorder
    finally:
        remove_event_sink(recorder)
    text = json.dumps(recorder.items, default=str)
    for sentinel in SENTINELS:
        assert sentinel not in text, "a secret reached a telemetry event"
