"""`gauged replay --report`: a backtest report, read off the replay's events.

`summarise(events, config, start, end)` takes the events of `gauged.alarm.replay.replay` (the
`--json` forms of DESIGN §5), the configuration and the scenario's first and last time, and
counts, per station and per zone, what an operator asks of a backtest: how often each stage
was broadcast (and with a siren), how long each stage stood, how much warning each stage gave
before the worst of its episode, how long the gauges were in fault. `render` prints it as a
fixed-width table; `Report.as_dict` is the `--report --json` document.

Definitions:

- A station starts the scenario in `normal` at `start`; each stage event moves it to its `to`,
  and the last stage lasts until `end`. Time in stage is summed over the stays.
- An episode runs from a stage event leaving `normal` to the next one returning to it (or to
  `end`: then its `end` is null). Its peak is the highest stage it reached (in config order),
  at the first moment it reached it. The lead time of a stage in an episode is from the first
  time the episode entered that stage to the peak (0 for the peak stage itself); a stage
  skipped on the way up (1 → 3 in one cycle) was not entered and has no lead time; one first
  entered after the peak (on the way down) neither. A stage's `lead_s` summary is over the
  episodes that went on above it (the warning it gave of something worse); `peaks` counts
  those that went no higher (lead 0, listed in `episodes` only).
- A broadcast counts for every station it names (`stations`, or `[station]` when absent) and
  for its zone; its outcome is `outcome`, `done` when absent. Counts and siren seconds are of
  the broadcasts decided, whatever their outcome (the zone's `by_outcome` says how they went).
- A fault runs from a `fault` event to the station's next `fault_cleared` (or to `end`); a
  `fault` while the station is already in fault is the same fault.

The JSON document (`Report.as_dict`; keys always present, stage keys in config order,
durations in seconds, times ISO-8601):

    {"format": 1, "start": ISO, "end": ISO, "span_s": float,
     "stations": {station: {
        "stages": {stage: {"entered": int, "time_s": float,     # every stage, normal first
                           "peaks": int, "lead_s": {"count": int, "min": float|null,
                                      "median": float|null, "max": float|null}}},
        "broadcasts": {stage: {"count": int, "sirens": int, "siren_s": float}},
                                  # the stages above normal, then "all-clear", then others seen
        "episodes": [{"start": ISO, "end": ISO|null, "peak": stage, "peak_time": ISO,
                      "lead_s": {stage: float}}],
        "faults": {"count": int, "time_s": float, "reasons": {reason: int}}}},
     "zones": {zone: {
        "broadcasts": int, "sirens": int, "siren_s": float,
        "by_stage": {stage: {"count": int, "sirens": int, "siren_s": float}},
                                  # the stages of the zone's stations, then "all-clear"
        "by_outcome": {"done": int, "superseded": int, "dropped": int, "pre-empted": int,
                       "merged": int}}}}            # then any other outcome seen
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gauged.config.settings import Config

NORMAL = "normal"
ALL_CLEAR = "all-clear"  # the stage name of an all-clear broadcast (gauged.alarm.engine)
OUTCOMES = ("done", "superseded", "dropped", "pre-empted", "merged")


@dataclass
class BroadcastCount:
    count: int = 0
    sirens: int = 0
    siren_s: float = 0.0

    def add(self, siren_s: float) -> None:
        self.count += 1
        if siren_s > 0:
            self.sirens += 1
            self.siren_s += siren_s

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count, "sirens": self.sirens, "siren_s": self.siren_s}


@dataclass
class StageStats:
    entered: int = 0
    time_s: float = 0.0
    peaks: int = 0  # episodes whose peak this stage was
    leads_s: list[float] = field(default_factory=list)  # episodes that went above it, in order

    def as_dict(self) -> dict[str, Any]:
        leads = self.leads_s
        return {"entered": self.entered, "time_s": self.time_s, "peaks": self.peaks, "lead_s": {
            "count": len(leads), "min": min(leads) if leads else None,
            "median": statistics.median(leads) if leads else None,
            "max": max(leads) if leads else None}}


@dataclass(frozen=True)
class Episode:
    start: datetime
    end: datetime | None  # None: still open at the end of the scenario
    peak: str
    peak_time: datetime
    lead_s: dict[str, float]  # stage → seconds from its first entry to the peak

    def as_dict(self) -> dict[str, Any]:
        return {"start": self.start.isoformat(),
                "end": None if self.end is None else self.end.isoformat(),
                "peak": self.peak, "peak_time": self.peak_time.isoformat(),
                "lead_s": dict(self.lead_s)}


@dataclass
class StationReport:
    stages: dict[str, StageStats]
    broadcasts: dict[str, BroadcastCount]
    episodes: list[Episode] = field(default_factory=list)
    faults: int = 0
    fault_s: float = 0.0
    fault_reasons: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"stages": {k: v.as_dict() for k, v in self.stages.items()},
                "broadcasts": {k: v.as_dict() for k, v in self.broadcasts.items()},
                "episodes": [e.as_dict() for e in self.episodes],
                "faults": {"count": self.faults, "time_s": self.fault_s,
                           "reasons": dict(self.fault_reasons)}}


@dataclass
class ZoneReport:
    by_stage: dict[str, BroadcastCount]
    by_outcome: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    total: BroadcastCount = field(default_factory=BroadcastCount)

    def as_dict(self) -> dict[str, Any]:
        return {"broadcasts": self.total.count, "sirens": self.total.sirens,
                "siren_s": self.total.siren_s,
                "by_stage": {k: v.as_dict() for k, v in self.by_stage.items()},
                "by_outcome": dict(self.by_outcome)}


@dataclass
class Report:
    start: datetime
    end: datetime
    stations: dict[str, StationReport]
    zones: dict[str, ZoneReport]

    def as_dict(self) -> dict[str, Any]:
        """The `--report --json` document (module docstring)."""
        return {"format": 1, "start": self.start.isoformat(), "end": self.end.isoformat(),
                "span_s": _seconds(self.start, self.end),
                "stations": {k: v.as_dict() for k, v in self.stations.items()},
                "zones": {k: v.as_dict() for k, v in self.zones.items()}}


def _seconds(a: datetime, b: datetime) -> float:
    return max(0.0, (b - a).total_seconds())


class _Track:
    """One station through the events: where it stands, its open episode and fault."""

    def __init__(self, report: StationReport, start: datetime) -> None:
        self.report = report
        self.order = {name: i for i, name in enumerate(report.stages)}
        self.stage, self.since = NORMAL, start
        self.first: dict[str, datetime] = {}  # the open episode: stage → first entry
        self.episode_start: datetime | None = None
        self.peak, self.peak_time = NORMAL, start
        self.fault_since: datetime | None = None

    def moved(self, time: datetime, to: str) -> None:
        stats = self.report.stages
        stats[self.stage].time_s += _seconds(self.since, time)
        if to not in stats:  # a name the config does not know: rank it above the rest
            stats[to] = StageStats()
            self.order[to] = len(self.order)
        self.stage, self.since = to, time
        stats[to].entered += 1
        if to == NORMAL:
            self._close_episode(time)
            return
        if self.episode_start is None:
            self.episode_start, self.first = time, {}
            self.peak, self.peak_time = to, time
        self.first.setdefault(to, time)
        if self.order[to] > self.order[self.peak]:
            self.peak, self.peak_time = to, time

    def _close_episode(self, end: datetime | None) -> None:
        if self.episode_start is None:
            return
        leads = {s: _seconds(t, self.peak_time) for s, t in self.first.items()
                 if t <= self.peak_time}
        self.report.stages[self.peak].peaks += 1
        for s, lead in leads.items():
            if s != self.peak:
                self.report.stages[s].leads_s.append(lead)
        self.report.episodes.append(Episode(self.episode_start, end, self.peak,
                                            self.peak_time, leads))
        self.episode_start = None

    def fault(self, time: datetime, reason: str) -> None:
        if self.fault_since is not None:
            return  # the same fault, perhaps with another reason
        self.fault_since = time
        self.report.faults += 1
        self.report.fault_reasons[reason] = self.report.fault_reasons.get(reason, 0) + 1

    def cleared(self, time: datetime) -> None:
        if self.fault_since is not None:
            self.report.fault_s += _seconds(self.fault_since, time)
            self.fault_since = None

    def finish(self, end: datetime) -> None:
        self.report.stages[self.stage].time_s += _seconds(self.since, end)
        self.since = end
        self._close_episode(None)
        self.cleared(end)


def _station_report(names: Iterable[str]) -> StationReport:
    names = list(names)
    return StationReport({n: StageStats() for n in names},
                         {n: BroadcastCount() for n in [*names[1:], ALL_CLEAR]})


def summarise(events: Iterable[dict[str, Any]], config: Config, start: datetime,
              end: datetime) -> Report:
    """The backtest of a replay: `events` in time order, `start` and `end` the scenario's
    first and last time (module docstring)."""
    tracks: dict[str, _Track] = {}
    for sid, st in config.stations.items():
        tracks[sid] = _Track(_station_report((NORMAL, *(s.name for s in st.stages))), start)
    zones: dict[str, ZoneReport] = {}
    for zid in config.zones:
        names = [s.name for st in config.stations.values() if zid in st.zones
                 for s in st.stages]
        zones[zid] = ZoneReport({n: BroadcastCount() for n in [*dict.fromkeys(names),
                                                                ALL_CLEAR]})

    def track(sid: str) -> _Track:
        if sid not in tracks:
            tracks[sid] = _Track(_station_report((NORMAL,)), start)
        return tracks[sid]

    for event in events:
        kind = event["event"]
        time = datetime.fromisoformat(event["time"])
        if kind == "stage":
            track(event["station"]).moved(time, event["to"])
        elif kind == "broadcast":
            stage, siren_s = event["stage"], float(event.get("siren_s") or 0.0)
            for sid in event.get("stations") or [event["station"]]:
                counts = track(sid).report.broadcasts
                counts.setdefault(stage, BroadcastCount()).add(siren_s)
            zone = zones.setdefault(event["zone"], ZoneReport({ALL_CLEAR: BroadcastCount()}))
            zone.by_stage.setdefault(stage, BroadcastCount()).add(siren_s)
            zone.total.add(siren_s)
            outcome = event.get("outcome") or "done"
            zone.by_outcome[outcome] = zone.by_outcome.get(outcome, 0) + 1
        elif kind == "fault":
            track(event["station"]).fault(time, str(event.get("fault", "")))
        elif kind == "fault_cleared":
            track(event["station"]).cleared(time)
    for t in tracks.values():
        t.finish(end)
    return Report(start, end, {sid: t.report for sid, t in tracks.items()}, zones)


# ---- the terminal table ----------------------------------------------------------------

def _duration(seconds: float | None) -> str:
    """`1d 02:03`, `2:03` (hours:minutes), with `:ss` when not whole minutes; `-` for none."""
    if seconds is None:
        return "-"
    total = round(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{days}d {hours:02d}:{minutes:02d}" if days else f"{hours}:{minutes:02d}"
    return text + (f":{secs:02d}" if secs else "")


def _station_lines(sid: str, r: StationReport, span: float) -> list[str]:
    lines = [sid]
    for name in dict.fromkeys([*r.stages, *r.broadcasts]):
        s, b = r.stages.get(name), r.broadcasts.get(name)
        if s is None and (b is None or b.count == 0):
            continue  # an all-clear that never sounded
        cells = [f"  {name:<16}"]
        if s is not None:
            share = f"{100 * s.time_s / span:.1f}%" if span else "-"
            leads = s.leads_s
            median = statistics.median(leads) if leads else None
            peaks = f"{s.peaks}" if name != NORMAL else "-"
            cells += [f"{s.entered:>7}", f"{peaks:>5}", f"{_duration(s.time_s):>12}",
                      f"{share:>6}"]
        else:
            cells += [f"{'':>7}", f"{'':>5}", f"{'':>12}", f"{'':>6}"]
        cells += [f"{b.count:>6}", f"{b.sirens:>6}"] if b is not None else [f"{'-':>6}"] * 2
        if s is not None and name != NORMAL:
            cells += [f"{_duration(min(leads) if leads else None):>8}",
                      f"{_duration(median):>8}",
                      f"{_duration(max(leads) if leads else None):>8}"]
        lines.append(" ".join(cells).rstrip())
    reasons = ", ".join(f"{k} {v}" for k, v in r.fault_reasons.items())
    lines.append(f"  faults {r.faults}, {_duration(r.fault_s)} in fault"
                 + (f" ({reasons})" if reasons else "") + f"; {len(r.episodes)} episodes")
    return lines


def render(report: Report) -> str:
    """The report as a fixed-width table for a terminal."""
    span = _seconds(report.start, report.end)
    out = [f"Backtest {report.start.isoformat()} → {report.end.isoformat()} "
           f"({_duration(span)})", "",
           "Stations: time in each stage; peaks = episodes that went no higher; broadcasts "
           "naming the station;",
           "lead = from entering the stage to the peak of an episode that went higher (h:mm)",
           f"  {'stage':<16} {'entered':>7} {'peaks':>5} {'in stage':>12} {'share':>6} "
           f"{'bcasts':>6} {'sirens':>6} {'lead min':>8} {'median':>8} {'max':>8}"]
    for sid, r in report.stations.items():
        out += _station_lines(sid, r, span)
    # zones: only the stage and outcome columns that have a broadcast somewhere
    stages = [s for s in dict.fromkeys(k for z in report.zones.values() for k in z.by_stage)
              if any(z.by_stage.get(s, BroadcastCount()).count for z in report.zones.values())]
    outcomes = [o for o in dict.fromkeys(k for z in report.zones.values() for k in z.by_outcome)
                if o == "done" or any(z.by_outcome.get(o) for z in report.zones.values())]
    width = max([len("zone"), *(len(z) for z in report.zones)])
    head = [f"{'zone':<{width}}", f"{'bcasts':>6}", *(f"{s:>{max(len(s), 5)}}" for s in stages),
            "|", *(f"{o:>{max(len(o), 5)}}" for o in outcomes), "|", f"{'sirens':>6}",
            f"{'siren s':>8}"]
    out += ["", "Zones: broadcasts by stage | by outcome | sirens", " ".join(head)]
    for zid, z in report.zones.items():
        row = [f"{zid:<{width}}", f"{z.total.count:>6}",
               *(f"{z.by_stage.get(s, BroadcastCount()).count:>{max(len(s), 5)}}"
                 for s in stages), "|",
               *(f"{z.by_outcome.get(o, 0):>{max(len(o), 5)}}" for o in outcomes), "|",
               f"{z.total.sirens:>6}", f"{z.total.siren_s:>8g}"]
        out.append(" ".join(row))
    return "\n".join(out)
