"""The weather of the bundled scenarios, row by row: the design storm and the calm day, with
the stage rules of the reference configuration they are built around. ``make_scenarios.py``
writes them to CSV and checks them against their brief (see its docstring).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

STEP_S = 180

LEVEL_STATIONS = ("shin_hiroo", "shirokane")
RAIN_STATIONS = ("rain_ward_office", *(f"rain_placeholder_{i}" for i in range(1, 9)))
STATIONS = LEVEL_STATIONS + RAIN_STATIONS

#: Crest (top of the river wall above the gauge datum) and freeboard thresholds, from the
#: reference config; stage names in order 1..n.
CREST_M = {"shin_hiroo": 4.60, "shirokane": 4.30}
LEVEL_STAGES = {
    "shin_hiroo": (("watch", 2.58), ("notice", 2.0), ("warning", 1.0), ("overflow", 0.0)),
    "shirokane": (("watch", 2.86), ("notice", 2.0), ("warning", 1.0), ("overflow", 0.0)),
}
RAIN_STAGES = (("watch", 25.0), ("notice", 30.0), ("warning", 50.0))
SEQUENCES = {
    "notice": "level_notice",
    "warning": "level_warning",
    "overflow": "level_overflow",
}
RAIN_SEQUENCES = {"warning": "rain_warning"}
LEVEL_MARGIN_M = 0.10
RAIN_MARGIN_MM = 5.0
CLEAR_SAMPLES = 2
RAIN_WINDOW_ROWS = 20  # 60 minutes of 3-minute rows

Row = tuple[int, str, str, float]  # (t_s, station, quantity, value)


# -- the design storm -----------------------------------------------------------------------

STORM_CYCLES = 81  # cycles 0..80: 4 hours
CALM_CYCLES = 6  # cycles 0..5 (t ≤ 900 s, the first 15 minutes): no rain, low levels


@dataclass(frozen=True)
class Hyetograph:
    """Rain per row on a skewed single-peaked curve, in whole 0.5 mm tips.

    Row i (from 0) gets ``amplitude · (x·e^(1−x))^shape`` mm with ``x = (i + 1) / peak_after``,
    rounded to the tip; leading and trailing dry rows are dropped and the first wet row is
    placed at cycle ``first``. The long, light tail makes the 1-hour total fall slowly past
    the thresholds, so that every de-escalation reads the same in any reasonable stage engine.
    """

    first: int
    amplitude: float
    peak_after: float
    shape: float

    def values(self, rows: int = 40) -> list[float]:
        """The wet rows, first to last (mm)."""
        out = []
        for index in range(rows):
            x = (index + 1) / self.peak_after
            out.append(round(2.0 * self.amplitude * (x * math.exp(1.0 - x)) ** self.shape) / 2.0)
        while out and out[-1] == 0.0:
            out.pop()
        while out and out[0] == 0.0:
            out.pop(0)
        return out


#: The cell crosses the ward from west to east: placeholder 3 first, the ward office four cycles
#: later, placeholder 6 another four cycles later (the three that pass 50 mm in an hour: peaks
#: 59.0, 57.5 and 56.0 mm); the other stations get the fringe (1-hour peaks 33.5, 27.5, 22.0,
#: 15.0, 10.0 and 5.0 mm).
STORM_RAIN = {
    "rain_ward_office": Hyetograph(first=8, amplitude=4.5, peak_after=7, shape=1.75),
    "rain_placeholder_1": Hyetograph(first=7, amplitude=3.0, peak_after=7, shape=2.5),
    "rain_placeholder_2": Hyetograph(first=9, amplitude=2.75, peak_after=7, shape=3.0),
    "rain_placeholder_3": Hyetograph(first=6, amplitude=4.75, peak_after=5, shape=1.0),
    "rain_placeholder_4": Hyetograph(first=10, amplitude=3.0, peak_after=5, shape=3.0),
    "rain_placeholder_5": Hyetograph(first=8, amplitude=1.25, peak_after=8, shape=2.5),
    "rain_placeholder_6": Hyetograph(first=11, amplitude=4.25, peak_after=9, shape=2.5),
    "rain_placeholder_7": Hyetograph(first=12, amplitude=0.75, peak_after=9, shape=2.0),
    "rain_placeholder_8": Hyetograph(first=13, amplitude=0.5, peak_after=6, shape=2.0),
}


@dataclass(frozen=True)
class Hydrograph:
    """A smooth single-peaked rise and fall: ``base + amplitude · (x·e^(1−x))^shape``.

    ``x = (cycle − onset) / peak_after``; the curve is ``base`` before the onset, peaks at
    ``onset + peak_after`` and decays back towards ``base``.
    """

    base: float
    amplitude: float
    onset: float
    peak_after: float
    shape: float

    def level(self, cycle: int) -> float:
        """Level (m) at ``cycle`` on the smooth curve."""
        x = (cycle - self.onset) / self.peak_after
        rise = 0.0 if x <= 0.0 else (x * math.exp(1.0 - x)) ** self.shape
        return self.base + self.amplitude * rise


def critical_levels(station: str) -> list[float]:
    """Levels where a stage changes: each threshold and each threshold's clear level."""
    crest = CREST_M[station]
    thresholds = [crest - freeboard for _name, freeboard in LEVEL_STAGES[station]]
    return sorted(thresholds + [level - LEVEL_MARGIN_M for level in thresholds])


def snap(level: float, critical: Sequence[float], clearance: float = 0.021) -> float:
    """``level`` rounded to mm and moved (at most 2.1 cm) out of ±2 cm of every critical level.

    It moves to the nearer side, so a monotonic curve stays monotonic as long as it crosses each
    band in one step of more than 4 cm (checked by ``make_scenarios.check_design_storm``).
    """
    for value in critical:
        if abs(level - value) < clearance:
            level = value + clearance if level >= value else value - clearance
    return round(level, 3)


#: Shin-Hiroo Park is upstream of Shirokane Park, so the wave reaches it first. Peaks: about
#: 4.71 m and 4.41 m, 0.11 m above the river wall, for 5 cycles each.
HYDROGRAPHS = {
    "shin_hiroo": Hydrograph(base=1.0, amplitude=3.71, onset=9.0, peak_after=20.0, shape=4.0),
    "shirokane": Hydrograph(base=1.0, amplitude=3.41, onset=11.0, peak_after=20.0, shape=4.0),
}


def design_storm() -> list[Row]:
    """Rows of ``design_storm_50mm.csv``."""
    rain = {station: storm_rain(station) for station in RAIN_STATIONS}
    rows: list[Row] = []
    for cycle in range(STORM_CYCLES):
        t_s = cycle * STEP_S
        for station in LEVEL_STATIONS:
            level = snap(HYDROGRAPHS[station].level(cycle), critical_levels(station))
            rows.append((t_s, station, "level_m", level))
        for station in RAIN_STATIONS:
            rows.append((t_s, station, "rain_mm", rain[station][cycle]))
    return rows


def storm_rain(station: str) -> list[float]:
    """Rain per row of ``station`` over the whole design storm."""
    hyetograph = STORM_RAIN[station]
    series = [0.0] * STORM_CYCLES
    for offset, value in enumerate(hyetograph.values()):
        series[hyetograph.first + offset] = value
    return series


# -- the calm day ---------------------------------------------------------------------------

CALM_DAY_CYCLES = 481  # 24 hours, both ends included
CALM_SEED = 20120401  # the ward plan's revision year; any fixed seed would do
DRIZZLE_STATIONS = ("rain_ward_office", "rain_placeholder_2", "rain_placeholder_5")


def calm_day() -> list[Row]:
    """Rows of ``calm_day.csv``: drizzle (never 5 mm/h) at a few stations, steady levels."""
    rng = random.Random(CALM_SEED)
    rows: list[Row] = []
    recent: dict[str, list[float]] = {station: [] for station in RAIN_STATIONS}
    for cycle in range(CALM_DAY_CYCLES):
        t_s = cycle * STEP_S
        for station in LEVEL_STATIONS:
            # A few millimetres of noise around 1.0 m: gauges are never perfectly still.
            rows.append((t_s, station, "level_m", round(1.0 + rng.uniform(-0.004, 0.004), 3)))
        drizzling = 6 * 20 <= cycle < 14 * 20 or 18 * 20 <= cycle < 21 * 20
        for station in RAIN_STATIONS:
            value = 0.0
            window = recent[station][-(RAIN_WINDOW_ROWS - 1) :]
            # A tip now and then, capped so that the 1-hour total stays at 4 mm at most.
            if station in DRIZZLE_STATIONS and drizzling and rng.random() < 0.25:
                value = 0.5 if sum(window) + 0.5 <= 4.0 else 0.0
            recent[station].append(value)
            rows.append((t_s, station, "rain_mm", value))
    return rows
