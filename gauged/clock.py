"""Time for gauged: UTC wall time for timestamps, the monotonic clock for intervals.

On a gateway the clock runs at speed 1. For the demo and the tests it runs accelerated,
`sim = start + (wall − anchor) × speed`, with the same three numbers handed to the
simulators, so that the 3-minute cycle and the 60-minute rain window keep their meaning
while a storm plays in minutes.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime


class Clock:
    """A wall clock that may run faster than real time."""

    def __init__(self, speed: float = 1.0, start: datetime | None = None,
                 anchor_unix: float | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        now = time.time()
        self.speed = speed
        self.anchor_unix = now if anchor_unix is None else anchor_unix
        start = start or datetime.fromtimestamp(self.anchor_unix, UTC)
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        self.start = start.astimezone(UTC)
        self._start_ts = self.start.timestamp()

    def timestamp(self) -> float:
        """Simulated UNIX time in seconds."""
        return self._start_ts + (time.time() - self.anchor_unix) * self.speed

    def now(self) -> datetime:
        """Simulated time, UTC."""
        return datetime.fromtimestamp(self.timestamp(), UTC)

    def real_seconds(self, sim_seconds: float) -> float:
        """How long `sim_seconds` of simulated time take in real time."""
        return sim_seconds / self.speed

    async def sleep(self, sim_seconds: float) -> None:
        """Sleep for `sim_seconds` of simulated time (measured on the monotonic clock)."""
        await asyncio.sleep(max(0.0, sim_seconds) / self.speed)

    async def sleep_until(self, sim_ts: float) -> None:
        """Sleep until the simulated UNIX time `sim_ts`, never returning before it.

        The event loop may wake a timer up to its clock resolution early; a cycle due at
        :03 must not read its gauges at 02:59.9.
        """
        while (remaining := sim_ts - self.timestamp()) > 0:
            await self.sleep(remaining)


def next_boundary(ts: float, interval_s: float) -> float:
    """The first multiple of `interval_s` (UNIX time) at or after `ts`: :00, :03, :06 …"""
    n = -(-ts // interval_s)  # ceiling division
    return float(n * interval_s)
