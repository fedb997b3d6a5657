"""The last hours of every station, in memory, for the status page's charts.

A ring per station of one point per cycle (six hours at three minutes: 120 points), filled
as each cycle is recorded. It is not storage: InfluxDB holds the record, and a restart starts
the rings empty.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from gauged.alarm.types import StationState

HOURS = 6.0


@dataclass(frozen=True)
class Point:
    """One cycle of one station: the value its chart shows (freeboard in metres for a level
    station, the stage rain total in millimetres for a rain one; None when the reading was
    missing or bad), its stage and its quality."""

    ts: float  # UNIX seconds (UTC)
    value: float | None
    stage: int
    quality: str


class History:
    """`hours` of points per station at one point per `interval_s`."""

    def __init__(self, interval_s: float, hours: float = HOURS) -> None:
        self.span_s = hours * 3600.0
        self.size = max(2, math.ceil(self.span_s / interval_s))
        self._rings: dict[str, deque[Point]] = {}

    def add(self, state: StationState) -> None:
        """The state of a station after a cycle."""
        value = state.freeboard_m if state.kind == "level" else state.rain_total_mm
        if not state.quality.usable:
            value = None  # a bad reading is shown as a gap, never as a value
        ring = self._rings.setdefault(state.station, deque(maxlen=self.size))
        ring.append(Point(state.time.timestamp(), value, state.stage, state.quality.value))

    def points(self, station: str) -> list[Point]:
        return list(self._rings.get(station, ()))
