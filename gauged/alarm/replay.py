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
type, resets), and every reading is judged by the daemon's quality rules with their history
(`gauged.alarm.quality`: range, spike, implausible fall, flat line, frozen against related
gauges, stale). What each zone plays goes through the daemon's zone rules (`ZoneAnnouncer`:
one broadcast per escalation) and its queue (`gauged.alarm.queue.ZoneQueue`: pre-emption,
supersession, duplicates), timed by each sequence's length, so every broadcast event carries
the outcome the daemon would log. A row without a number (an empty value) is a failed read.

A configuration in which a station `follow`s another runs the per-cycle path (the follow
rule couples the stage machines of two stations); every other configuration runs vectorised.

A station with two gauges (`second_gauge`, `gauged.alarm.quality.combine`): its `station` rows
are its first gauge's readings and its `station:gauge` rows the named gauge's. Both gauges are
read in every cycle that has a row for either (as the daemon reads both every cycle): a cycle
with a row for one gauge and none for the other is a failed read of the other. A second gauge
without a single row of its own reads the station's rows (as the simulators play them), so a
scenario written for one gauge replays unchanged. Each gauge is judged with its own history and
the station's reading is their combination; the station's `fault` events are those of the
station (both gauges in gauge_fault).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from gauged.alarm.engine import (
    Announcer,
    Engine,
    Quantity,
    ZoneAnnouncer,
    combined,
    mover,
    quantities,
    rain_params,
    request_order,
)
from gauged.alarm.level import rise_rates, round_like_python
from gauged.alarm.quality import Judge, Observation, Quality, in_range
from gauged.alarm.quality_arrays import (
    JudgedRecord,
    ObservationRecord,
    combine_arrays,
    judge_records,
)
from gauged.alarm.queue import ZoneQueue, broadcast_seconds, sequence_of
from gauged.alarm.rain import CounterTracker, TimeBasis, counter_increments, rain_history
from gauged.alarm.scenario import Q_CODES, FloatArray, Int64Array, Scenario, _time
from gauged.alarm.stages import StageChange, run_machine
from gauged.alarm.types import BroadcastRecord, BroadcastRequest, Merged, Sample
from gauged.config.checks import clip_seconds
from gauged.config.settings import Config

Key = tuple[int, int, int, int]  # time (µs), kind (0 fault, 1 stage, 2 broadcast), station, n
NO_READING = "no reading"

# ---- the daemon's pipeline, one time step at a time ---------------------------------

class _Observer:
    """Turns rows into observations, as the poller turns gauge answers into them."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.counters: dict[str, CounterTracker] = {}
        self.seen: dict[str, float] = {}  # rain counted so far
        self.nonzero: dict[str, int] = {}  # rain_mm rows with rain (their flat-line key)

    def observe(self, station: str, quantity: int, value: float) -> Observation:
        """One row of a channel (`station` is a channel id, `Config.channels`)."""
        gauge = self.config.gauges[self.config.channels()[station][1]]
        if not math.isfinite(value):
            return Observation(error=NO_READING)
        if quantity == Q_CODES["level_m"]:
            return Observation(value, key=value,
                               watch=value if in_range(value, gauge.range) else None)
        seen = self.seen.get(station, 0.0)
        if quantity == Q_CODES["rain_counter"]:
            if value < 0 or value != math.floor(value):
                return Observation(error=NO_READING)  # the counter is untouched
            counter = self.counters.get(station)
            if counter is None:
                counter = self.counters[station] = CounterTracker(gauge.counter_bits,
                                                                  gauge.scale)
            increment = counter.update(int(value))
            self.seen[station] = seen + (0.0 if increment is None else increment)
            return Observation(increment, key=value, watch=self.seen[station])
        nonzero = self.nonzero[station] = self.nonzero.get(station, 0) + (value != 0)
        self.seen[station] = seen + (value if value >= 0 else 0.0)
        return Observation(value, key=float(nonzero), watch=self.seen[station])


def paired(scenario: Scenario, config: Config) -> Scenario:
    """The scenario with both gauges of every two-gauge station read in the same cycles (see
    the module docstring): a second gauge without rows gets its station's rows, and a cycle
    that has a row for one gauge only gets an empty row (a failed read) for the other."""
    ids = scenario.stations
    pairs = [(ids.index(sid), ids.index(f"{sid}:{st.second_gauge}"))
             for sid, st in config.stations.items() if st.second_gauge is not None]
    if not pairs:
        return scenario
    times, stations, qs, values = ([scenario.time_us], [scenario.station], [scenario.quantity],
                                   [scenario.value])
    level = np.int8(Q_CODES["level_m"])
    for a, b in pairs:
        ta, tb = scenario.time_us[scenario.station == a], scenario.time_us[scenario.station == b]
        if tb.size == 0:
            rows = scenario.station == a
            times.append(ta)
            stations.append(np.full(ta.size, b, dtype=np.int32))
            qs.append(scenario.quantity[rows])
            values.append(scenario.value[rows])
            continue
        for mine, theirs, who in ((ta, tb, b), (tb, ta, a)):
            lack = mine[~np.isin(mine, theirs)]
            times.append(lack)
            stations.append(np.full(lack.size, who, dtype=np.int32))
            qs.append(np.full(lack.size, level, dtype=np.int8))
            values.append(np.full(lack.size, np.nan))
    time_us = np.concatenate(times)
    order = np.argsort(time_us, kind="stable")
    return Scenario(ids, time_us[order], np.concatenate(stations)[order],
                    np.concatenate(qs)[order], np.concatenate(values)[order])


def replay_per_cycle(scenario: Scenario, config: Config) -> Iterator[dict[str, Any]]:
    """Events in time order, through the daemon's `Judge` and `Engine` once per time step."""
    engine = Engine(config)
    judge = Judge(config)
    observer = _Observer(config)
    scenario = paired(scenario, config)
    ids = scenario.stations
    pos = {sid: i for i, sid in enumerate(config.stations)}
    time_us, station = scenario.time_us.tolist(), scenario.station.tolist()
    quantity, value = scenario.quantity.tolist(), scenario.value.tolist()
    faults: dict[str, str] = {}
    keyed: list[tuple[Key, dict[str, Any]]] = []
    broadcasts: list[tuple[int, BroadcastRequest | Merged]] = []
    i, n = 0, len(time_us)
    while i < n:
        us = time_us[i]
        observations: dict[str, Observation] = {}
        while i < n and time_us[i] == us:
            channel = ids[station[i]]
            observations[channel] = observer.observe(channel, quantity[i], value[i])
            i += 1
        time = _time(us)
        judged = judge.judge(time.timestamp(), observations)
        samples = {}
        for sid, r in judge.stations(observations, judged).items():
            samples[sid] = Sample(r.value, r.judgement.quality, r.judgement.reason, r.fault,
                                  r.gauges)
            if bool(r.fault) != bool(faults.get(sid, "")):  # starts or clears, as logged
                keyed.append(((us, 0, pos[sid], 0), _fault_event(time, sid, r.fault)))
            faults[sid] = r.fault
        result = engine.evaluate(time, samples)
        for k, t in enumerate(result.transitions):
            keyed.append(((us, 1, pos[t.station], k), _stage_event(
                t.time, t.station, t.kind, t.from_name, t.to_name, t.value)))
        broadcasts += [(us, b) for b in result.broadcasts]
        broadcasts += [(us, m) for m in result.merged]
    keyed += _broadcast_events(config, broadcasts)
    keyed.sort(key=lambda e: e[0])
    for _, event in keyed:
        yield event


def _fault_event(time: datetime, station: str, fault: str) -> dict[str, Any]:
    if fault:
        return {"time": time.isoformat(), "station": station, "event": "fault", "fault": fault}
    return {"time": time.isoformat(), "station": station, "event": "fault_cleared"}


def _stage_event(time: datetime, station: str, quantity: str, from_name: str, to_name: str,
                 value: float) -> dict[str, Any]:
    return {"time": time.isoformat(), "station": station, "event": "stage",
            "quantity": quantity, "from": from_name, "to": to_name, "value": value}


def _broadcast_event(b: BroadcastRequest, outcome: str,
                     into: BroadcastRequest | None = None) -> dict[str, Any]:
    event = {"time": b.time.isoformat(), "event": "broadcast", "zone": b.zone,
             "station": b.station, "stations": list(b.named), "stage": b.stage_name,
             "sequence": b.sequence, "kind": b.kind, "siren_s": b.siren_s,
             "clips": list(b.clips), "outcome": outcome}
    if outcome == "merged":
        event["into"] = None if into is None else into.station
    return event


def _broadcast_events(config: Config, decided: Iterable[tuple[int, BroadcastRequest | Merged]]
                      ) -> list[tuple[Key, dict[str, Any]]]:
    """The broadcast events of the decisions (in decision order), with what each zone's queue
    makes of them: each zone plays one broadcast at a time for as long as its sequence lasts
    (`broadcast_seconds`, clips as long as `config.clip_seconds` says)."""
    pos = {sid: i for i, sid in enumerate(config.stations)}
    clip_s = clip_seconds(config)
    zones = {zone: _ZoneTimeline(config, zone, clip_s) for zone in config.zones}
    out: list[tuple[Key, dict[str, Any]]] = []
    records: list[tuple[Key, BroadcastRecord]] = []
    cycle: list[BroadcastRecord] = []
    decided = list(decided)
    for n, (us, item) in enumerate(decided):
        if isinstance(item, Merged):
            r = item.request
            out.append(((us, 2, pos[r.station], n), _broadcast_event(r, "merged", item.into)))
        else:
            record = BroadcastRecord(request=item)
            records.append(((us, 2, pos[item.station], n), record))
            cycle.append(record)
        if n + 1 == len(decided) or decided[n + 1][0] != us:
            # the daemon submits a cycle's broadcasts together, then the zones play them
            now = us / 1e6
            for timeline in zones.values():
                timeline.advance(now)
            for record in cycle:
                zones[record.request.zone].submit(record, now)
            for timeline in zones.values():
                timeline.advance(now)
            cycle = []
    for timeline in zones.values():
        timeline.advance(math.inf)
    out += [(key, _broadcast_event(r.request, r.outcome)) for key, r in records]
    return out


class _ZoneTimeline:
    """A zone's queue on the scenario's clock: what plays when, and for how long."""

    def __init__(self, config: Config, zone: str, clip_s: Mapping[str, float]) -> None:
        self.queue = ZoneQueue()
        self.sequences = config.sequences
        self.clip_s = clip_s
        # a zone without a siren relay plays no siren (ZoneBroadcaster skips it)
        self.siren_max_s = config.defaults.siren_max_s if config.zones[zone].siren_relay \
            else 0.0
        self.ends: float | None = None  # when the playing broadcast ends

    def advance(self, now: float) -> None:
        """Play the queue up to `now`: what ends by then has ended, and the next broadcast
        starts as soon as the zone is free (at `now` at the latest)."""
        while True:
            at = now
            if self.ends is not None:
                if self.ends > now:
                    return
                playing = self.queue.playing
                assert playing is not None
                playing.outcome = "done"
                at, self.ends = self.ends, None
                self.queue.finished(playing)
            _, record = self.queue.start_next(at)
            if record is None:
                return
            seq = sequence_of(record.request, self.sequences)
            self.ends = at + broadcast_seconds(seq, self.clip_s, self.siren_max_s)

    def submit(self, record: BroadcastRecord, now: float) -> None:
        preempted = self.queue.submit(record, now)
        if preempted is not None:
            self.ends = None
            self.queue.finished(preempted)


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


def cycle_index(time_us: Int64Array) -> Int64Array:
    """The index of each row's time step (rows are in time order)."""
    if time_us.size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([[0], np.cumsum(np.diff(time_us) != 0)]).astype(np.int64)


def observations(scenario: Scenario, config: Config) -> dict[str, ObservationRecord]:
    """Every channel's rows as observations (`_Observer.observe` over arrays); `scenario`
    already `paired`."""
    channels = config.channels()
    order = np.argsort(scenario.station, kind="stable")
    stations = scenario.station[order]
    cuts = np.flatnonzero(np.diff(stations)) + 1
    cycle_of = cycle_index(scenario.time_us)
    out: dict[str, ObservationRecord] = {}
    for rows in np.split(order, cuts):
        if rows.size == 0:
            continue
        sid = scenario.stations[int(scenario.station[rows[0]])]
        gauge = config.gauges[channels[sid][1]]
        time_us = scenario.time_us[rows]
        t = time_us / 1e6  # as datetime.timestamp() does it
        value = scenario.value[rows]
        finite = np.isfinite(value)
        quantity = int(scenario.quantity[rows[0]])
        if quantity == Q_CODES["level_m"]:
            error = ~finite
            watch = np.where(finite, value, np.nan)
            if gauge.range is not None:
                watch = np.where((value >= gauge.range[0]) & (value <= gauge.range[1]), watch,
                                 np.nan)
            level = np.where(finite, value, np.nan)
            out[sid] = ObservationRecord(time_us, t, cycle_of[rows], level, level, watch, error)
            continue
        if quantity == Q_CODES["rain_counter"]:
            valid = finite & (value >= 0) & (value == np.floor(np.where(finite, value, 0)))
            raw = np.where(valid, value, np.nan)
            increment = counter_increments(raw, gauge.counter_bits, gauge.scale)
            seen = np.cumsum(np.where(np.isfinite(increment), increment, 0.0))
            out[sid] = ObservationRecord(time_us, t, cycle_of[rows], increment, raw,
                                         np.where(valid, seen, np.nan), ~valid)
            continue
        key = np.cumsum(finite & (value != 0)).astype(np.float64)
        seen = np.cumsum(np.where(finite & (value >= 0), value, 0.0))
        out[sid] = ObservationRecord(time_us, t, cycle_of[rows], np.where(finite, value, np.nan),
                                     np.where(finite, key, np.nan),
                                     np.where(finite, seen, np.nan), ~finite)
    return out


def derive(scenario: Scenario, config: Config) -> tuple[dict[str, _Series],
                                                        list[tuple[int, str, str]]]:
    """Every station's record judged and through the derivations, vectorised; and the
    gauge_fault changes as (time µs, station, fault)."""
    records = observations(scenario, config)
    cycles = int(np.count_nonzero(np.diff(scenario.time_us))) + 1 if scenario.time_us.size \
        else 0
    channels = config.channels()
    two = frozenset(c for c, (sid, _) in channels.items()
                    if config.stations[sid].second_gauge is not None)
    judged = judge_records(config, records, cycles, texts=two)
    params = rain_params(config)
    d = config.defaults
    out: dict[str, _Series] = {}
    faults: list[tuple[int, str, str]] = []
    bases: list[TimeBasis] = []  # one per distinct set of reading times
    for sid, st in config.stations.items():
        if sid not in records:
            continue
        rec = records[sid]
        quality = judged[sid].quality
        time_us = rec.time_us
        good = quality == Quality.GOOD.code
        level = rec.value
        if st.second_gauge is None:
            faults += [(int(time_us[i]), sid, fault) for i, fault in judged[sid].faults]
        else:
            level, good, changes = _combined(st.gauge, rec, judged[sid], st.second_gauge,
                                             records[f"{sid}:{st.second_gauge}"],
                                             judged[f"{sid}:{st.second_gauge}"], st.tolerance)
            faults += [(int(time_us[i]), sid, fault) for i, fault in changes]
        if st.kind == "level":
            assert st.crest_m is not None
            fb = round_like_python(st.crest_m - level, 6)
            rate = rise_rates(rec.t, level, good, d.rise_readings, d.rise_window_min * 60.0)
            out[sid] = _Series(time_us, rec.t, good, {"freeboard": fb},
                               {"freeboard": np.zeros(rec.t.size, dtype=bool)}, rate)
            continue
        basis = next((b for b in bases if b.fits(rec.t, params)), None)
        if basis is None:
            basis = TimeBasis(rec.t, params)
            bases.append(basis)
        history = rain_history(rec.t, rec.value, quality, params, basis)
        out[sid] = _Series(time_us, rec.t, history.good, history.totals, history.partial)
    return out, faults


def _combined(a: str, rec_a: ObservationRecord, judged_a: JudgedRecord, b: str,
              rec_b: ObservationRecord, judged_b: JudgedRecord, tolerance: float
              ) -> tuple[FloatArray, npt.NDArray[np.bool_], list[tuple[int, str]]]:
    """`Judge.stations` over a two-gauge station's records (`paired`: the same cycles): the
    station's level, whether it is good, and its gauge_fault changes (index, fault)."""
    assert np.array_equal(rec_a.time_us, rec_b.time_us)
    assert judged_a.fault_text is not None
    assert judged_b.fault_text is not None
    level, good = combine_arrays(rec_a.value, judged_a.quality == Quality.GOOD.code,
                                 rec_b.value, judged_b.quality == Quality.GOOD.code, tolerance)
    both = (judged_a.fault_text != "") & (judged_b.fault_text != "")
    starts = np.flatnonzero(np.diff(np.concatenate([[False], both])))
    changes = [(int(i), f"{a}: {judged_a.fault_text[i]}; {b}: {judged_b.fault_text[i]}"
                if both[i] else "") for i in starts]
    return level, good, changes


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
    if any(st.follow is not None for st in config.stations.values()):
        yield from replay_per_cycle(scenario, config)
        return
    series, faults = derive(paired(scenario, config), config)
    pos = {sid: i for i, sid in enumerate(config.stations)}
    keyed: list[tuple[Key, dict[str, Any]]] = [
        ((us, 0, pos[sid], 0), _fault_event(_time(us), sid, fault)) for us, sid, fault in faults]
    requests: list[tuple[int, BroadcastRequest]] = []
    episodes: dict[str, tuple[list[int], list[bool]]] = {}
    for sid, st in config.stations.items():
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
        episode = episodes[sid] = ([], [])
        # the cycles that evaluate this station: those with a reading of one of its sources
        cycles = _union([series[q.source].time_us for q in qs if q.source in series])
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
            keyed.append(((us, 1, pos[sid], 0), _stage_event(time, sid, q.kind, names[before],
                                                             names[after], value)))
            requests += [(us, r) for r in announcer.changed(time, StageChange(before, after))]
            episode[0].append(us)
            episode[1].append(announcer.episode)
            until = moves[k][0] if k < len(moves) else None
            requests += _repeats(announcer, after, cycles, us, until)
    keyed += _broadcast_events(config, _by_zone(config, requests, episodes))
    keyed.sort(key=lambda e: e[0])
    for _, event in keyed:
        yield event


def _union(times: list[Int64Array]) -> Int64Array:
    """The sorted union of sorted, duplicate-free time arrays."""
    if not times:
        return np.zeros(0, dtype=np.int64)
    if all(t is times[0] for t in times):
        return times[0]
    merged: Int64Array = np.sort(np.concatenate(times), kind="stable")
    out: Int64Array = merged[np.concatenate([[True], np.diff(merged) != 0])]
    return out


def _by_zone(config: Config, requests: list[tuple[int, BroadcastRequest]],
             episodes: Mapping[str, tuple[list[int], list[bool]]]
             ) -> list[tuple[int, BroadcastRequest | Merged]]:
    """`Engine._by_zone` over the whole record: each cycle's requests through the zones'
    rules, in the engine's order."""
    zones = {zone: ZoneAnnouncer(config, zone) for zone in config.zones}
    order = request_order(config)
    requests.sort(key=lambda r: (r[0], order(r[1])))
    out: list[tuple[int, BroadcastRequest | Merged]] = []
    i = 0
    while i < len(requests):
        us = requests[i][0]
        cycle = []
        while i < len(requests) and requests[i][0] == us:
            cycle.append(requests[i][1])
            i += 1

        def in_episode(sid: str, us: int = us) -> bool:
            times, states = episodes[sid]
            j = bisect.bisect_right(times, us)
            return states[j - 1] if j else False

        played: list[BroadcastRequest] = []
        merged: list[Merged] = []
        by_zone: dict[str, list[BroadcastRequest]] = {}
        for r in cycle:
            by_zone.setdefault(r.zone, []).append(r)
        for zone, zone_requests in by_zone.items():
            p, m = zones[zone].filter(us, zone_requests, in_episode)
            played += p
            merged += m
        played.sort(key=order)
        merged.sort(key=lambda m: order(m.request))
        out += [(us, r) for r in played] + [(us, m) for m in merged]
    return out


def _repeats(announcer: Announcer, stage: int, cycles: Int64Array, since: int,
             until: int | None) -> list[tuple[int, BroadcastRequest]]:
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
        out += [(us, r) for r in announcer.held(_time(us), stage)]
        start = i + 1
    return out


def describe(event: dict[str, Any]) -> str:
    """One human-readable timeline line."""
    if event["event"] == "stage":
        return (f"{event['time']}  {event['station']:<20} {event['quantity']:<5} "
                f"{event['from']} → {event['to']}  ({event['value']:g})")
    if event["event"] == "fault":
        return f"{event['time']}  {event['station']:<20} gauge_fault: {event['fault']}"
    if event["event"] == "fault_cleared":
        return f"{event['time']}  {event['station']:<20} gauge_fault cleared"
    siren = f"siren {event['siren_s']:g} s, " if event["siren_s"] else ""
    kind = {"repeat": "repeat ", "all_clear": "all-clear "}.get(event.get("kind", ""), "")
    stations = event.get("stations") or [event["station"]]
    also = f" (also {', '.join(stations[1:])})" if len(stations) > 1 else ""
    outcome = event.get("outcome", "done")
    if outcome == "merged":
        into = event.get("into")
        return (f"{event['time']}  {event['station']:<20} {kind}broadcast on {event['zone']} "
                f"merged: the zone already hears " +
                (f"{into}'s broadcast" if into else "a raised station"))
    return (f"{event['time']}  {event['station']:<20} {kind}broadcast on {event['zone']}: "
            f"{siren}{', '.join(event['clips'])}{also} [{outcome}]")
