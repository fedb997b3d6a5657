"""Time for gauged: UTC wall time for timestamps, the monotonic clock for intervals.

On a gateway the clock runs at speed 1. For the demo and the tests it runs accelerated,
`sim = start + (wall − anchor) × speed`, with the same three numbers handed to the
simulators, so that the 3-minute cycle and the 60-minute rain window keep their meaning
while a storm plays in minutes.

The wall clock is read once, when the clock is made; from then on simulated time advances
with the monotonic clock. A step of the system clock (NTP correcting a gateway that booted
without a real-time clock, an operator's `date -s`) therefore moves no cycle and no calendar
job within a run: nothing is skipped, nothing runs twice, stamps never go backwards. The
step is measured (`skew`) so that the daemon can report it; a restart re-reads the wall
clock (state survives restarts).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime


class Clock:
    """A wall clock that may run faster than real time."""

    def __init__(self, speed: float = 1.0, start: datetime | None = None,
                 anchor_unix: float | None = None,
                 wall: Callable[[], float] = time.time) -> None:
        """`wall` is the system clock (UNIX seconds); tests inject one they can step."""
        if speed <= 0:
            raise ValueError("speed must be positive")
        self._wall = wall
        now, mono = wall(), time.monotonic()
        self.speed = speed
        self.anchor_unix = now if anchor_unix is None else anchor_unix
        start = start or datetime.fromtimestamp(self.anchor_unix, UTC)
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        self.start = start.astimezone(UTC)
        self._start_ts = self.start.timestamp()
        # the monotonic reading at which the wall clock read (or will read) `anchor_unix`
        self._mono_anchor = mono + (self.anchor_unix - now)

    def timestamp(self) -> float:
        """Simulated UNIX time in seconds, advancing with the monotonic clock."""
        return self._start_ts + (time.monotonic() - self._mono_anchor) * self.speed

    def wall_timestamp(self) -> float:
        """Simulated UNIX time as the wall clock has it now (moves when the clock is stepped)."""
        return self._start_ts + (self._wall() - self.anchor_unix) * self.speed

    def skew(self) -> float:
        """Simulated seconds the wall clock has been stepped by since this clock was made."""
        return self.wall_timestamp() - self.timestamp()

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
