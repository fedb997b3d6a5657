"""Time for gauged: the wall clock for timestamps and calendars, the monotonic clock for
waiting and for durations.

On a gateway the clock runs at speed 1. For the demo and the tests it runs accelerated,
`sim = start + (wall − anchor) × speed`, with the same three numbers handed to the
simulators, so that the 3-minute cycle and the 60-minute rain window keep their meaning
while a storm plays in minutes.

**The wall clock is read every time** (`timestamp`, `now`): a gateway without a battery
clock boots hours behind and is set right later by NTP, and from that moment on cycles,
calendars, timestamps and the freshness of commands follow the corrected clock. Waiting and
durations use the monotonic clock, which no step moves (`sleep`, `monotonic`).

**Steps are detected** by comparing wall − monotonic at every reading with the previous
reading: a change of `STEP_MIN_S` real seconds or more is a step (NTP steps only beyond a
threshold, chrony's `makestep 1 3` say; below it it slews at most 0.5 ms/s, far below
this). The monotonic clock is read on both sides of the wall clock; a reading preempted
between them judges nothing. Each step is logged once at WARNING and appended to
`steps`, where the daemon picks it up between cycles to re-date the alarm history
(gauged/daemon/timeline.py), so that the quality, rain and stage rules see no jump.
`sleep_until` wakes up at least every `check_s` real seconds to read the clock, and returns
early when it steps.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)

# A jump of wall − monotonic of this many real seconds between two readings is a step.
STEP_MIN_S = 0.5
# At most this many real seconds pass between two readings while `sleep_until` waits
# (and at most 5 simulated seconds, for accelerated clocks).
CHECK_S = 1.0


@dataclass(frozen=True)
class Step:
    """A step of the wall clock, in simulated seconds (positive: forward)."""

    seconds: float
    before: float  # simulated UNIX time the clock read just before the step (as it ran)
    after: float  # simulated UNIX time it read just after


class Clock:
    """A wall clock that may run faster than real time, and notices when it is stepped."""

    def __init__(self, speed: float = 1.0, start: datetime | None = None,
                 anchor_unix: float | None = None,
                 wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        """`wall` is the system clock (UNIX seconds) and `monotonic` the monotonic clock;
        tests inject a wall clock they can step."""
        if speed <= 0:
            raise ValueError("speed must be positive")
        self._wall = wall
        self._mono = monotonic
        now, mono = wall(), monotonic()
        self.speed = speed
        self.anchor_unix = now if anchor_unix is None else anchor_unix
        start = start or datetime.fromtimestamp(self.anchor_unix, UTC)
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        self.start = start.astimezone(UTC)
        self._start_ts = self.start.timestamp()
        self._mono0 = mono
        self._offset = now - mono  # wall − monotonic at the last reading (real seconds)
        self.steps: list[Step] = []  # every step seen, oldest first
        self._lock = threading.Lock()
        self.check_s = min(CHECK_S, max(0.01, 5.0 / speed))

    def _sim(self, wall: float) -> float:
        return self._start_ts + (wall - self.anchor_unix) * self.speed

    def timestamp(self) -> float:
        """Simulated UNIX time in seconds: the wall clock, read now."""
        with self._lock:  # a thread may read it too: each step is seen once
            before, wall, after = self._mono(), self._wall(), self._mono()
            if after - before < STEP_MIN_S / 10:  # not preempted between the readings
                offset = wall - (before + after) / 2
                jump = offset - self._offset
                self._offset = offset
                if abs(jump) >= STEP_MIN_S:
                    self._stepped(wall, jump)
        return self._sim(wall)

    def _stepped(self, wall: float, jump: float) -> None:
        # `before`: as it would read now had it not been stepped
        step = Step(jump * self.speed, self._sim(wall - jump), self._sim(wall))
        self.steps.append(step)
        log.warning("wall clock stepped by %+.0f s (%s → %s UTC): cycles, scheduled tests, "
                    "timestamps and command freshness follow it; the alarm history is "
                    "re-dated by the step", step.seconds, _hms(step.before), _hms(step.after))

    def now(self) -> datetime:
        """Simulated time, UTC."""
        return datetime.fromtimestamp(self.timestamp(), UTC)

    def monotonic(self) -> float:
        """Simulated seconds on the monotonic clock since this clock was made: for
        durations, which a step of the wall clock must not lengthen or shorten."""
        return (self._mono() - self._mono0) * self.speed

    def skew(self) -> float:
        """Simulated seconds the wall clock has been stepped by, in all, since this clock was
        made (0 when it never was)."""
        self.timestamp()
        return sum(s.seconds for s in self.steps)

    def real_seconds(self, sim_seconds: float) -> float:
        """How long `sim_seconds` of simulated time take in real time."""
        return sim_seconds / self.speed

    async def sleep(self, sim_seconds: float) -> None:
        """Sleep for `sim_seconds` of simulated time (measured on the monotonic clock)."""
        await asyncio.sleep(max(0.0, sim_seconds) / self.speed)

    async def sleep_until(self, sim_ts: float) -> bool:
        """Sleep until the wall clock reads `sim_ts` (simulated UNIX time); True then.

        Returns False, possibly early, when the wall clock was stepped meanwhile (the caller
        plans again on the stepped clock). Never returns True before `sim_ts`: the event
        loop may wake a timer up to its clock resolution early, and a cycle due at :03 must
        not read its gauges at 02:59.9.
        """
        seen = len(self.steps)
        while (remaining := sim_ts - self.timestamp()) > 0:
            if len(self.steps) != seen:
                return False
            await asyncio.sleep(min(remaining / self.speed, self.check_s))
        return len(self.steps) == seen


class OffsetWall:
    """The system clock plus a number of seconds read from a file: the test hook
    `[test_hooks] wall_offset_file` (gauged/config/models.py), with which a test boots the
    daemon hours behind and steps its wall clock as NTP would, without root. The file is
    read again whenever it is replaced or rewritten; an unreadable one keeps the offset."""

    def __init__(self, path: Path, wall: Callable[[], float] = time.time) -> None:
        self.path = path
        self._wall = wall
        self.offset = 0.0
        self._seen: tuple[int, int, int] | None = None
        self._read()

    def _read(self) -> None:
        try:
            st = os.stat(self.path)
            seen = (st.st_ino, st.st_mtime_ns, st.st_size)
            if seen != self._seen:
                self.offset = float(self.path.read_text(encoding="utf-8").strip() or 0.0)
                self._seen = seen
        except (OSError, ValueError):
            pass

    def __call__(self) -> float:
        self._read()
        return self._wall() + self.offset


def next_boundary(ts: float, interval_s: float) -> float:
    """The first multiple of `interval_s` (UNIX time) at or after `ts`: :00, :03, :06 …"""
    n = -(-ts // interval_s)  # ceiling division
    return float(n * interval_s)


def nearest_boundary(ts: float, interval_s: float) -> float:
    """The multiple of `interval_s` (UNIX time) nearest to `ts` (a tie goes to the later)."""
    return float((ts // interval_s + (ts % interval_s >= interval_s / 2)) * interval_s)


def _hms(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")
