"""An accelerated clock shared with the daemon by construction, not by communication.

Both sides compute simulated time from the same three numbers (``start``, ``anchor_unix``,
``speed``) and the wall clock, so a simulator and the daemon running in separate processes agree
on "now" without exchanging messages.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta


class SimClock:
    """Simulated time = ``start + (wall time − anchor_unix) × speed``.

    ``start`` defaults to the current UTC time and ``anchor_unix`` to the current Unix time, so
    a default clock reads "now" and runs ``speed`` times faster than the wall clock.
    ``wall_time`` is injectable so that tests can freeze or step the wall clock.
    """

    def __init__(
        self,
        speed: float = 1.0,
        start: datetime | None = None,
        anchor_unix: float | None = None,
        *,
        wall_time: Callable[[], float] = time.time,
    ) -> None:
        if not speed > 0.0:  # also rejects NaN
            raise ValueError(f"clock speed must be > 0, got {speed!r}")
        if start is not None and start.utcoffset() is None:
            # A naive start is ambiguous on a gateway whose local time is not UTC.
            raise ValueError(f"clock start needs a UTC offset, got {start.isoformat()!r}")
        wall_now = wall_time()
        self._wall_time = wall_time
        self.speed = float(speed)
        self.start = (start or datetime.fromtimestamp(wall_now, UTC)).astimezone(UTC)
        self.anchor_unix = wall_now if anchor_unix is None else float(anchor_unix)

    def elapsed(self) -> float:
        """Simulated seconds since ``start`` (negative before the anchor)."""
        return (self._wall_time() - self.anchor_unix) * self.speed

    def timestamp(self) -> float:
        """Simulated time as Unix seconds."""
        return self.start.timestamp() + self.elapsed()

    def now(self) -> datetime:
        """Simulated time as an aware UTC datetime."""
        return self.start + timedelta(seconds=self.elapsed())

    async def sleep(self, sim_seconds: float) -> None:
        """Sleep for ``sim_seconds`` of simulated time (``sim_seconds / speed`` of wall time)."""
        await asyncio.sleep(max(0.0, sim_seconds) / self.speed)

    def __repr__(self) -> str:
        return (
            f"SimClock(speed={self.speed!r}, start={self.start.isoformat()!r}, "
            f"anchor_unix={self.anchor_unix!r})"
        )
