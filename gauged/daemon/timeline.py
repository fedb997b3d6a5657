"""When cycles run, and what a step of the wall clock does to the daemon (QUALITY SCH-3,
SCH-4).

Cycles run at wall-clock boundaries (:00, :03 … for 180 s) of the clock as it reads now
(gauged/clock.py reads the wall clock every time and notices steps). Between two cycles the
timer waits on the monotonic clock and reads the wall clock at least every `Clock.check_s`.

**A step** (NTP setting right a gateway that booted hours behind, an operator's `date`) is
followed at once, in both directions:

- the alarm history is *re-dated* by the step (`redate`: quality, rain windows, dwell,
  rates of rise, repeats and zone gaps; active inhibits): the rules go on as if the clock had
  always read the stepped time, so a step neither empties nor doubles a rain window, nor
  makes a lying gauge plausible by a "gap" that never was, nor holds back a repeat;
- the next cycle runs at the boundary of the stepped clock nearest to where the real pace
  puts it (one interval after the last cycle, re-dated). Nothing is read twice in quick
  succession and no interval goes without a reading: the gap between the two cycles around
  a step is one interval when the step is a whole number of intervals (NTP corrections of
  whole hours, say) and between half an interval and one and a half otherwise, once;
- cycle stamps, scheduled tests (gauged/field/prooftests.py: a fire time the step jumps over
  runs once, late, within its misfire grace; one it steps back over never runs twice) and
  the freshness of commands (gauged/ops/commands.py) follow the stepped clock.

Readings already sent to InfluxDB or MQTT keep the stamps they were sent with: after a
backward step the points of the next cycles may land on stamps used before the step (the
ones from before were off by the step).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from gauged.alarm.engine import Engine
from gauged.alarm.quality import Judge
from gauged.clock import Clock, nearest_boundary, next_boundary
from gauged.health import GaugeHealth
from gauged.ops.inhibits import Inhibits

log = logging.getLogger(__name__)


class CycleTimer:
    """Says when the next cycle is due and follows the clock's steps between cycles.

    `on_step(seconds)` is called once per step, between cycles (never while one runs), before
    the next cycle time is chosen.
    """

    def __init__(self, clock: Clock, interval_s: float,
                 on_step: Callable[[float], None] = lambda seconds: None) -> None:
        self.clock = clock
        self.interval = interval_s
        self.on_step = on_step
        self.last: float | None = None  # the last cycle's time (re-dated by every step)
        self._seen = len(clock.steps)
        self._stepped = False  # a step since the last cycle

    def _follow(self) -> None:
        """Take the steps seen since the last look."""
        steps = self.clock.steps[self._seen:]
        self._seen += len(steps)
        for step in steps:
            self._stepped = True
            if self.last is not None:
                self.last += step.seconds
            self.on_step(step.seconds)

    def _due(self, now: float) -> float:
        interval = self.interval
        if self.last is None:
            return next_boundary(now, interval)
        if self._stepped:  # keep the real pace: one interval after the last cycle
            return nearest_boundary(self.last + interval, interval)
        due = next_boundary(now, interval)
        return due if due > self.last else self.last + interval

    async def wait(self) -> datetime:
        """Sleep until the next cycle is due; its time (a boundary of the clock)."""
        while True:
            now = self.clock.timestamp()
            self._follow()
            due = self._due(now)
            if self._stepped and self.last is not None:
                log.info("next cycle at %s on the stepped clock (the last one re-dated to %s)",
                         _hms(due), _hms(self.last))
            if await self.clock.sleep_until(due) and self._seen == len(self.clock.steps):
                break
        late = self.clock.timestamp() - due
        interval = self.interval
        if self.last is not None and not self._stepped and due - self.last > interval:
            log.warning("cycle skipped: %d missed after a late cycle",
                        round((due - self.last) / interval) - 1)
        if late > interval / 2:
            log.warning("cycle late by %.1f s", late)
        return datetime.fromtimestamp(due, UTC)

    def ran(self, when: datetime) -> None:
        """The cycle at `when` has run."""
        self.last = when.timestamp()
        self._stepped = False


def redate(seconds: float, *, engine: Engine, judge: Judge,
           gauges: Iterable[GaugeHealth], inhibits: Inhibits | None) -> None:
    """Re-date the daemon's alarm history by a step of the wall clock of `seconds`."""
    judge.shift(seconds)
    engine.shift(seconds)
    for health in gauges:
        if health.last_good is not None:
            health.last_good = datetime.fromtimestamp(health.last_good.timestamp() + seconds,
                                                      UTC)
    if inhibits is not None:
        inhibits.shift(seconds)
    log.info("alarm history re-dated by %+.0f s: rain windows, dwell, rates, repeats and "
             "inhibits run on as if the clock had always read the stepped time", seconds)


def _hms(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%SZ")

