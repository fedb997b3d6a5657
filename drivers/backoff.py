"""Reconnect pacing shared by every hub: exponential backoff with jitter, capped.

The hub asks `remaining()` before an attempt (fail fast while it is positive), and reports the
outcome with `failed()` or `succeeded()`. Attempts happen under the hub's lock, so there is
never more than one in flight (MB-4).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable


class Backoff:
    """Delay before the next connection attempt: first_s, 2×, 4× … up to max_s, with jitter.

    Each delay is drawn from [½, 1] × the current step ("equal jitter"): gateways that went
    down together do not come back to a synchronised storm, and the cap is never exceeded.
    """

    def __init__(self, max_s: float, *, first_s: float = 0.5,
                 clock: Callable[[], float] = time.monotonic,
                 rng: Callable[[], float] = random.random) -> None:
        self.max_s = max_s
        self.first_s = min(first_s, max_s)
        self.failures = 0
        self._step = 0.0
        self._next = 0.0
        self._clock = clock
        self._rng = rng

    def remaining(self) -> float:
        """Seconds until the next attempt is allowed (0 when it is allowed now)."""
        return max(0.0, self._next - self._clock())

    def failed(self) -> float:
        """Record a failed attempt; returns the delay before the next one."""
        self.failures += 1
        self._step = min(self.max_s, self._step * 2 if self._step else self.first_s)
        delay = self._step * (0.5 + 0.5 * self._rng())
        self._next = self._clock() + delay
        return delay

    def succeeded(self) -> None:
        """Record a successful attempt: the next failure starts from `first_s` again."""
        self.failures = 0
        self._step = 0.0
        self._next = 0.0
