"""Pacing calls to an upstream that counts them in a window: at most `count` calls in any `window` seconds.

A sliding window, counted conservatively. The upstream counts a call when it arrives, somewhere between the moment
it was sent and the moment its answer came back (a token fetch or a challenge round trip can come in between), so a
call here holds its place in the window from when it starts until `window` seconds after it ends. That is right
whether the upstream's window is fixed or sliding, and whatever the latency: a limiter that only spaced the starts
would still collide when one call's latency differs from the next one's. It costs at most one round trip per window
of throughput.

The rule (`wait_seconds`) is pure; `WindowLimiter` applies it under a condition variable for the threads of one
process.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class WindowLimit:
    """At most `count` calls in any `window_seconds`."""

    count: int
    window_seconds: float

    def __post_init__(self) -> None:
        if self.count < 1 or self.window_seconds <= 0:
            raise ValueError(f"a window limit needs count >= 1 and a positive window, not {self}")


def forget_old(ended: deque[float], now: float, limit: WindowLimit) -> None:
    """Drop the end times (oldest first) of calls that no longer count: ended a whole window ago or earlier."""
    while ended and ended[0] + limit.window_seconds <= now:
        ended.popleft()


def wait_seconds(in_flight: int, ended: deque[float], now: float, limit: WindowLimit) -> float | None:
    """How long a new call must wait: 0.0 to start now; seconds until the oldest ended call leaves the window; or
    None when every place is held by a call still in flight (wait for one to end). `ended` holds the end times of
    the calls that still count, oldest first (see `forget_old`). Pure."""
    if in_flight + len(ended) < limit.count:
        return 0.0
    if not ended:
        return None
    return ended[0] + limit.window_seconds - now


class WindowLimiter:
    """One `WindowLimit` shared by the threads of this process: `with limiter.slot(): call()`."""

    def __init__(self, limit: WindowLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._changed = threading.Condition()
        self._in_flight = 0
        self._ended: deque[float] = deque()

    @contextmanager
    def slot(self) -> Iterator[float]:
        """Wait for a place in the window (yields the seconds waited), hold it while the call runs, and keep it
        counted for a window after the call ends, however it ends."""
        waited = self._acquire()
        try:
            yield waited
        finally:
            self._release()

    def _acquire(self) -> float:
        started = self._clock()
        with self._changed:
            while True:
                now = self._clock()
                forget_old(self._ended, now, self.limit)
                wait = wait_seconds(self._in_flight, self._ended, now, self.limit)
                if wait is not None and wait <= 0:
                    self._in_flight += 1
                    return now - started
                self._changed.wait(wait)

    def _release(self) -> None:
        with self._changed:
            self._in_flight -= 1
            self._ended.append(self._clock())
            self._changed.notify_all()
