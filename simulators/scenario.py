"""Scenario CSV files: what the gauges show over time (DESIGN §5).

Format: header ``time,station,quantity,value``; ``time`` is ISO-8601 with a UTC offset or
seconds from the scenario start (one form per file; absolute times become offsets from the first
row); ``quantity`` is ``level_m`` (water level above the gauge datum, metres) or ``rain_mm`` (rain
fallen since the previous row of that station); rows in time order. Offset 0 is the clock's
``start``.
"""

from __future__ import annotations

import bisect
import csv
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from simulators.errors import ScenarioError

HEADER = ("time", "station", "quantity", "value")
QUANTITIES = ("level_m", "rain_mm")
Quantity = Literal["level_m", "rain_mm"]


@dataclass(frozen=True, slots=True)
class ScenarioRow:
    """One row, with its time as seconds from the scenario start."""

    t_s: float
    station: str
    quantity: Quantity
    value: float


class Scenario:
    """A parsed scenario: a level step function and a cumulative rain total per station."""

    def __init__(self, rows: Sequence[ScenarioRow], origin: datetime | None = None) -> None:
        """Index ``rows`` (already validated and in time order) by station and quantity.

        ``origin`` is the absolute time of offset 0 when the file used ISO-8601 times.
        """
        self.rows: tuple[ScenarioRow, ...] = tuple(rows)
        self.origin = origin
        self._level_times: dict[str, list[float]] = {}
        self._level_values: dict[str, list[float]] = {}
        self._rain_times: dict[str, list[float]] = {}
        self._rain_totals: dict[str, list[float]] = {}
        for row in self.rows:
            if row.quantity == "level_m":
                self._level_times.setdefault(row.station, []).append(row.t_s)
                self._level_values.setdefault(row.station, []).append(row.value)
            else:
                totals = self._rain_totals.setdefault(row.station, [])
                self._rain_times.setdefault(row.station, []).append(row.t_s)
                totals.append((totals[-1] if totals else 0.0) + row.value)

    @property
    def duration_s(self) -> float:
        """Offset of the last row (0 for an empty scenario)."""
        return self.rows[-1].t_s if self.rows else 0.0

    def stations(self, quantity: Quantity) -> set[str]:
        """Stations that have at least one row of ``quantity``."""
        return set(self._level_times if quantity == "level_m" else self._rain_times)

    def level_at(self, station: str, t_offset_s: float) -> float | None:
        """Level of the last row at or before ``t_offset_s``; before the first row, the first.

        ``None`` when the station has no level rows at all.
        """
        times = self._level_times.get(station)
        if not times:
            return None
        index = bisect.bisect_right(times, t_offset_s) - 1
        return self._level_values[station][max(index, 0)]

    def rain_total_at(self, station: str, t_offset_s: float) -> float:
        """Cumulative rain (mm) of the station's rows with time ≤ ``t_offset_s``."""
        times = self._rain_times.get(station)
        if not times:
            return 0.0
        index = bisect.bisect_right(times, t_offset_s)
        return self._rain_totals[station][index - 1] if index else 0.0


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario CSV file; errors name the file and the line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read scenario: {exc}") from exc
    return parse_scenario(text, str(path))


def parse_scenario(text: str, name: str = "<scenario>") -> Scenario:
    """Parse scenario CSV ``text``; ``name`` labels error messages (usually the file path)."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or tuple(cell.strip() for cell in header) != HEADER:
        raise ScenarioError(f"{name}:1: header must be {','.join(HEADER)}, got {header!r}")
    return Scenario(*_parse_rows(((reader.line_num, cells) for cells in reader), name))


def _parse_rows(
    numbered: Iterable[tuple[int, list[str]]], name: str
) -> tuple[list[ScenarioRow], datetime | None]:
    rows: list[ScenarioRow] = []
    origin: datetime | None = None
    absolute: bool | None = None  # which time form the file uses, fixed by the first row
    last_t = -math.inf
    seen: set[tuple[float, str, str]] = set()
    for line, cells in numbered:
        if not any(cell.strip() for cell in cells):
            continue  # blank line
        where = f"{name}:{line}"
        if len(cells) != len(HEADER):
            raise ScenarioError(f"{where}: expected 4 fields ({','.join(HEADER)}), got {cells!r}")
        time_text, station, quantity, value_text = (cell.strip() for cell in cells)

        t_abs = _parse_time(time_text, where)
        if isinstance(t_abs, datetime):
            if absolute is False:
                raise ScenarioError(f"{where}: ISO-8601 time in a file of offsets in seconds")
            absolute = True
            origin = origin or t_abs
            t_s = (t_abs - origin).total_seconds()
        else:
            if absolute:
                raise ScenarioError(f"{where}: offset in seconds in a file of ISO-8601 times")
            absolute = False
            t_s = t_abs
        if t_s < last_t:
            raise ScenarioError(
                f"{where}: rows out of time order ({time_text} comes after an earlier row "
                f"at offset {last_t:g} s)"
            )
        last_t = t_s

        if not station:
            raise ScenarioError(f"{where}: empty station")
        if quantity not in QUANTITIES:
            raise ScenarioError(
                f"{where}: unknown quantity {quantity!r} (expected one of {', '.join(QUANTITIES)})"
            )
        kind: Quantity = "level_m" if quantity == "level_m" else "rain_mm"
        value = _parse_number(value_text, where, "value")
        if kind == "rain_mm" and value < 0.0:
            raise ScenarioError(f"{where}: rain_mm is rain since the previous row, not {value}")
        key = (t_s, station, quantity)
        if key in seen:
            raise ScenarioError(f"{where}: second {quantity} row for {station} at the same time")
        seen.add(key)
        rows.append(ScenarioRow(t_s, station, kind, value))
    return rows, origin


def _parse_time(text: str, where: str) -> float | datetime:
    try:
        return _parse_number(text, where, "time")
    except ScenarioError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ScenarioError(
            f"{where}: time {text!r} is neither seconds nor ISO-8601 with an offset"
        ) from None
    if moment.utcoffset() is None:
        raise ScenarioError(f"{where}: ISO-8601 time {text!r} needs a UTC offset")
    return moment


def _parse_number(text: str, where: str, field: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise ScenarioError(f"{where}: {field} {text!r} is not a number") from None
    if not math.isfinite(number):
        raise ScenarioError(f"{where}: {field} {text!r} is not finite")
    return number
