"""Notifications whose delivery failed, kept to be retried, and what failing deliveries may spend (no I/O).

A failed notification is not forgotten: it is kept (at most BACKLOG_MAX, each retried at most MAX_TRIES times) and
sent again after the next delivery that succeeds. While the receiver keeps failing, failed deliveries may together
spend one delivery budget per window (the notifier's cool-down): within it each further notification is tried once,
and once the window's budget is spent it is held (kept, counted) instead of posted, so a dead receiver costs one
budget per window, not one per certificate — and no notification is dropped for a minute wholesale.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

BACKLOG_MAX = 50
MAX_TRIES = 4  # the first delivery and three retries


@dataclass(frozen=True)
class Undelivered:
    """A notification not delivered yet."""

    key: tuple[str, str, str]  # event, certificate, reason/host (the dedup key)
    name: str
    certificate: str
    payload: dict[str, Any] = field(repr=False)
    tries: int = 0


@dataclass
class Backlog:
    budget_seconds: Callable[[], float]  # read at each use: the notifier's bounds may be changed after it is made
    window_seconds: Callable[[], float]
    clock: Callable[[], float]
    counts: Counter[str] = field(default_factory=Counter)
    _items: OrderedDict[tuple[str, str, str], Undelivered] = field(default_factory=OrderedDict, repr=False)
    _window_ends: float = 0.0
    _spent: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def in_window(self) -> bool:
        """A delivery failed within the window: the receiver may be down."""
        with self._lock:
            return self.clock() < self._window_ends

    def budget_left(self) -> float:
        """What a delivery may spend now: the whole budget, or (in a window) what failed deliveries left of it."""
        with self._lock:
            if self.clock() >= self._window_ends:
                return self.budget_seconds()
            return self.budget_seconds() - self._spent

    def failed(self, item: Undelivered, spent: float) -> Undelivered | None:
        """Keep a notification whose delivery failed (its tries counted); returns one dropped, if any."""
        with self._lock:
            now = self.clock()
            if now >= self._window_ends:
                self._window_ends, self._spent = now + self.window_seconds(), 0.0
            self._spent += max(spent, 0.0)
            self.counts["failed"] += 1
            kept = self._items.get(item.key)  # the same notification emitted again counts its earlier tries
            return self._keep(replace(item, tries=max(item.tries, kept.tries if kept else 0) + 1))

    def hold(self, item: Undelivered) -> Undelivered | None:
        """Keep a notification that was not posted (the window's budget is spent); returns one dropped, if any."""
        with self._lock:
            self.counts["held"] += 1
            return self._keep(item)

    def _keep(self, item: Undelivered) -> Undelivered | None:
        if item.tries >= MAX_TRIES:
            self.counts["dropped"] += 1
            self._items.pop(item.key, None)
            return item
        self._items[item.key] = item  # a newer copy of the same notification replaces the older one
        self._items.move_to_end(item.key)
        if len(self._items) > BACKLOG_MAX:
            self.counts["dropped"] += 1
            return self._items.popitem(last=False)[1]
        return None

    def succeeded(self) -> list[Undelivered]:
        """A delivery succeeded: the window closes and the kept notifications are handed out to be retried."""
        with self._lock:
            self.counts["delivered"] += 1
            self._window_ends, self._spent = 0.0, 0.0
            items = list(self._items.values())
            self._items.clear()
            return items

    def give_back(self, items: list[Undelivered]) -> None:
        """Notifications handed out but not tried (no budget left): kept as they were."""
        with self._lock:
            for item in items:
                self._keep(item)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
