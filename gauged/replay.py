"""`gauged replay`: a recorded series through the live engine, offline.

Reads a scenario CSV (DESIGN §5: `time,station,quantity,value`), feeds each time step to
the same `Engine` the daemon uses, and yields the timeline of stage transitions and
broadcast decisions.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gauged.config import Config
from gauged.engine import Engine, Sample
from gauged.errors import ScenarioError
from gauged.quality import Quality, assess

QUANTITIES = {"level_m": "level", "rain_mm": "rain"}
DEFAULT_START = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Row:
    time: datetime
    station: str
    quantity: str
    value: float | None


def read_scenario(path: Path, config: Config, start: datetime = DEFAULT_START) -> list[Row]:
    """Parse and check a scenario; times in seconds are offsets from `start`."""
    rows: list[Row] = []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or [h.strip() for h in header] != \
                    ["time", "station", "quantity", "value"]:
                raise ScenarioError(f"{path}:1: header must be time,station,quantity,value")
            for n, fields in enumerate(reader, start=2):
                if not fields or not "".join(fields).strip():
                    continue
                rows.append(_row(path, n, fields, config, start, rows[-1] if rows else None))
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror}") from None
    return rows


def _row(path: Path, n: int, fields: list[str], config: Config, start: datetime,
         previous: Row | None) -> Row:
    where = f"{path}:{n}"
    if len(fields) != 4:
        raise ScenarioError(f"{where}: expected 4 fields, got {len(fields)}")
    t_text, station, quantity, v_text = (f.strip() for f in fields)
    try:
        when = start + timedelta(seconds=float(t_text))
    except ValueError:
        try:
            when = datetime.fromisoformat(t_text)
        except ValueError:
            raise ScenarioError(f"{where}: time {t_text!r} is neither seconds nor "
                                f"ISO-8601") from None
        if when.tzinfo is None:
            raise ScenarioError(f"{where}: time {t_text!r} has no UTC offset") from None
    st = config.stations.get(station)
    if st is None:
        raise ScenarioError(f"{where}: unknown station {station!r}")
    if QUANTITIES.get(quantity) != st.kind:
        raise ScenarioError(f"{where}: quantity {quantity!r} does not fit {st.kind} "
                            f"station {station}")
    try:
        value = float(v_text) if v_text else None
    except ValueError:
        raise ScenarioError(f"{where}: value {v_text!r} is not a number") from None
    when = when.astimezone(UTC)  # storage and output are UTC (DESIGN §6)
    if previous is not None and when < previous.time:
        raise ScenarioError(f"{where}: time goes backwards")
    return Row(when, station, quantity, value)


def sample(row: Row, config: Config) -> Sample:
    """The engine input for one row, judged like a live reading."""
    if row.quantity == "level_m":
        gauge = config.gauges[config.stations[row.station].gauge]
        return Sample(row.value, assess(row.value, gauge.range))
    if row.value is None or not math.isfinite(row.value):
        return Sample(None, Quality.MISSING)
    return Sample(row.value, Quality.GOOD if row.value >= 0 else Quality.BAD)


def replay(rows: list[Row], config: Config) -> Iterator[dict[str, Any]]:
    """Events in time order, in the `--json` form of DESIGN §5."""
    engine = Engine(config)
    i = 0
    while i < len(rows):
        when = rows[i].time
        samples: dict[str, Sample] = {}
        while i < len(rows) and rows[i].time == when:
            samples[rows[i].station] = sample(rows[i], config)
            i += 1
        result = engine.evaluate(when, samples)
        for t in result.transitions:
            yield {"time": t.time.isoformat(), "station": t.station, "event": "stage",
                   "quantity": t.quantity, "from": t.from_name, "to": t.to_name,
                   "value": t.value}
        for b in result.broadcasts:
            yield {"time": b.time.isoformat(), "event": "broadcast", "zone": b.zone,
                   "station": b.station, "stage": b.stage_name, "sequence": b.sequence,
                   "siren_s": b.siren_s, "clips": list(b.clips)}


def describe(event: dict[str, Any]) -> str:
    """One human-readable timeline line."""
    if event["event"] == "stage":
        return (f"{event['time']}  {event['station']:<20} {event['quantity']:<5} "
                f"{event['from']} → {event['to']}  ({event['value']:g})")
    siren = f"siren {event['siren_s']:g} s, " if event["siren_s"] else ""
    return (f"{event['time']}  {event['station']:<20} broadcast on {event['zone']}: "
            f"{siren}{', '.join(event['clips'])}")
