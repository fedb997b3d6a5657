"""`gauged replay`: a recorded series through the engine's rules, offline.

Takes a scenario (`gauged/alarm/scenario.py`: the CSV of DESIGN §5, `time,station,quantity,value`)
and yields the timeline of stage transitions and broadcast decisions. Two paths give the same
events, bit for bit:

- `replay_per_cycle` feeds each time step to the same `Engine` the daemon uses;
- `replay` (what the command runs) derives every station's whole record at once with numpy
  (`gauged.alarm.rain.rain_history`, `gauged.alarm.level.rise_rates`) and runs each stage
  machine over the arrays (`gauged.alarm.stages.run_machine`), so that a year of 3-minute data
  for 11 stations takes seconds. `tests/unit/test_replay_equivalence.py` holds them to the
  same events.

A `rain_counter` is turned into increments as the daemon does (rollover at the gauge's data
type, resets). Quality is judged per reading (range, not a number, negative rain); the
history-based checks of the daemon (spike, flat line) are not replayed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from gauged.alarm.engine import (
    Announcer,
    Engine,
    Quantity,
    combined,
    mover,
    quantities,
    rain_params,
)
from gauged.alarm.level import rise_rates, round_like_python
from gauged.alarm.quality import Quality, assess
from gauged.alarm.rain import CounterTracker, counter_increments, rain_history
from gauged.alarm.scenario import Q_CODES, FloatArray, Int64Array, Scenario, _time
from gauged.alarm.stages import StageChange, run_machine
from gauged.alarm.types import BroadcastRequest, Sample
from gauged.config.settings import Config

# ---- the daemon's engine, one time step at a time -----------------------------------

class _Sampler:
    """Turns rows into engine samples, judged as live readings are (per reading)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.counters: dict[str, CounterTracker] = {}

    def sample(self, station: str, quantity: int, value: float) -> Sample:
        st = self.config.stations[station]
        gauge = self.config.gauges[st.gauge]
        finite = math.isfinite(value)
        if quantity == Q_CODES["level_m"]:
            return Sample(value if finite else None, assess(value, gauge.range))
        if quantity == Q_CODES["rain_counter"]:
            if not finite or value < 0 or value != math.floor(value):
                return Sample(None, Quality.MISSING)  # no reading: the counter is untouched
            counter = self.counters.get(station)
            if counter is None:
                counter = self.counters[station] = CounterTracker(gauge.counter_bits,
                                                                  gauge.scale)
            return Sample(counter.update(int(value)), Quality.GOOD)
        if not finite:
            return Sample(None, Quality.MISSING)
        return Sample(value, Quality.GOOD if value >= 0 else Quality.BAD)


def replay_per_cycle(scenario: Scenario, config: Config) -> Iterator[dict[str, Any]]:
    """Events in time order, through `Engine.evaluate` once per time step."""
    engine = Engine(config)
    sampler = _Sampler(config)
    ids = scenario.stations
    time_us, station = scenario.time_us.tolist(), scenario.station.tolist()
    quantity, value = scenario.quantity.tolist(), scenario.value.tolist()
    i, n = 0, len(time_us)
    while i < n:
        us = time_us[i]
        samples: dict[str, Sample] = {}
        while i < n and time_us[i] == us:
            samples[ids[station[i]]] = sampler.sample(ids[station[i]], quantity[i], value[i])
            i += 1
        result = engine.evaluate(_time(us), samples)
        for t in result.transitions:
            yield _stage_event(t.time, t.station, t.kind, t.from_name, t.to_name, t.value)
        for b in result.broadcasts:
            yield _broadcast_event(b)


def _stage_event(time: datetime, station: str, quantity: str, from_name: str, to_name: str,
                 value: float) -> dict[str, Any]:
    return {"time": time.isoformat(), "station": station, "event": "stage",
            "quantity": quantity, "from": from_name, "to": to_name, "value": value}


def _broadcast_event(b: BroadcastRequest) -> dict[str, Any]:
    return {"time": b.time.isoformat(), "event": "broadcast", "zone": b.zone,
            "station": b.station, "stage": b.stage_name, "sequence": b.sequence,
            "kind": b.kind, "siren_s": b.siren_s, "clips": list(b.clips)}


# ---- the same over whole records -----------------------------------------------------

@dataclass(frozen=True)
class _Series:
    """One station's record, derived: what its quantities compare, reading by reading."""

    time_us: Int64Array
    t: FloatArray
    good: npt.NDArray[np.bool_]
    values: dict[str, FloatArray]
    partial: dict[str, npt.NDArray[np.bool_]]
    rate: FloatArray | None = None


def derive(scenario: Scenario, config: Config) -> dict[str, _Series]:
    """Every station's record through the derivations, vectorised."""
    order = np.argsort(scenario.station, kind="stable")
    stations = scenario.station[order]
    cuts = np.flatnonzero(np.diff(stations)) + 1
    params = rain_params(config)
    d = config.defaults
    out: dict[str, _Series] = {}
    for rows in np.split(order, cuts):
        if rows.size == 0:
            continue
        sid = scenario.stations[int(scenario.station[rows[0]])]
        st = config.stations[sid]
        gauge = config.gauges[st.gauge]
        time_us = scenario.time_us[rows]
        t = time_us / 1e6  # as datetime.timestamp() does it
        value = scenario.value[rows]
        finite = np.isfinite(value)
        if st.kind == "level":
            assert st.crest_m is not None
            good = finite.copy()
            if gauge.range is not None:
                good &= (value >= gauge.range[0]) & (value <= gauge.range[1])
            level = np.where(finite, value, np.nan)
            crest = st.crest_m
            fb = round_like_python(crest - level, 6)
            rate = rise_rates(t, level, good, d.rise_readings, d.rise_window_min * 60.0)
            out[sid] = _Series(time_us, t, good, {"freeboard": fb},
                               {"freeboard": np.zeros(rows.size, dtype=bool)}, rate)
            continue
        if int(scenario.quantity[rows[0]]) == Q_CODES["rain_counter"]:
            valid = finite & (value >= 0) & (value == np.floor(np.where(finite, value, 0)))
            raw = np.where(valid, value, np.nan)
            increment = counter_increments(raw, gauge.counter_bits, gauge.scale)
            quality = np.where(valid, Quality.GOOD.code, Quality.MISSING.code)
        else:
            increment = np.where(finite, value, np.nan)
            quality = np.where(~finite, Quality.MISSING.code,
                               np.where(value >= 0, Quality.GOOD.code, Quality.BAD.code))
        history = rain_history(t, increment, quality.astype(np.int8), params)
        out[sid] = _Series(time_us, t, history.good, history.totals, history.partial)
    return out


def _quantity_events(q: Quantity, series: _Series) -> list[tuple[int, int, int, float]]:
    values = series.values[q.name]
    rate = series.rate
    reached = q.rule.reached_array(values, rate)
    held = q.rule.held_array(values, rate)
    moves = run_machine(q.rule, series.t, series.good, reached, held, series.partial[q.name])
    return [(int(series.time_us[j]), a, b, float(values[j])) for j, a, b in moves]


def replay(scenario: Scenario, config: Config) -> Iterator[dict[str, Any]]:
    """Events in time order, in the `--json` form of DESIGN §5 (the vectorised path)."""
    Engine(config)  # the same configuration checks as the daemon
    series = derive(scenario, config)
    keyed: list[tuple[tuple[int, int, int, int], dict[str, Any]]] = []
    for pos, (sid, st) in enumerate(config.stations.items()):
        qs = quantities(config, sid)
        names = ("normal", *(s.name for s in st.stages))
        moves: list[tuple[int, int, int, int, float]] = []  # time, quantity, from, to, value
        for qi, q in enumerate(qs):
            if q.source in series:
                moves += [(us, qi, a, b, v)
                          for us, a, b, v in _quantity_events(q, series[q.source])]
        moves.sort(key=lambda m: (m[0], m[1]))
        stages = [0] * len(qs)
        announcer = Announcer(config, sid)
        # the cycles that evaluate this station: those with a reading of one of its sources
        cycles = np.unique(np.concatenate(
            [series[q.source].time_us for q in qs if q.source in series] or
            [np.zeros(0, dtype=np.int64)]))
        k = 0
        while k < len(moves):
            us = moves[k][0]
            before = combined(stages, st.combine)
            moved = []
            while k < len(moves) and moves[k][0] == us:
                _, qi, a, b, v = moves[k]
                stages[qi] = b
                moved.append((qs[qi], StageChange(a, b), v))
                k += 1
            after = combined(stages, st.combine)
            if after == before:
                continue
            q, value = mover(moved, before, after)
            time = _time(us)
            keyed.append(((us, 0, pos, 0), _stage_event(time, sid, q.kind, names[before],
                                                        names[after], value)))
            for z, request in enumerate(announcer.changed(time, StageChange(before, after))):
                keyed.append(((us, 1, pos, z), _broadcast_event(request)))
            until = moves[k][0] if k < len(moves) else None
            keyed += _repeats(announcer, after, cycles, us, until, pos)
    keyed.sort(key=lambda e: e[0])
    for _, event in keyed:
        yield event


def _repeats(announcer: Announcer, stage: int, cycles: Int64Array, since: int,
             until: int | None, pos: int) -> list[tuple[tuple[int, int, int, int],
                                                         dict[str, Any]]]:
    """The repeats of `stage` in the cycles after `since` and before `until` (the next
    transition), jumping from one due time to the next."""
    out = []
    start = int(np.searchsorted(cycles, since, side="right"))
    while (due := announcer.next_repeat_us(stage)) is not None:
        i = int(np.searchsorted(cycles, due, side="left"))
        i = max(i, start)
        if i >= len(cycles) or (until is not None and cycles[i] >= until):
            break
        us = int(cycles[i])
        for z, request in enumerate(announcer.held(_time(us), stage)):
            out.append(((us, 1, pos, z), _broadcast_event(request)))
        start = i + 1
    return out


def describe(event: dict[str, Any]) -> str:
    """One human-readable timeline line."""
    if event["event"] == "stage":
        return (f"{event['time']}  {event['station']:<20} {event['quantity']:<5} "
                f"{event['from']} → {event['to']}  ({event['value']:g})")
    siren = f"siren {event['siren_s']:g} s, " if event["siren_s"] else ""
    kind = {"repeat": "repeat ", "all_clear": "all-clear "}.get(event.get("kind", ""), "")
    return (f"{event['time']}  {event['station']:<20} {kind}broadcast on {event['zone']}: "
            f"{siren}{', '.join(event['clips'])}")
