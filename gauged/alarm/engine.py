"""The alarm engine: samples in, station states, stage transitions and broadcasts out.

One `Engine.evaluate` call per cycle. The live daemon and `gauged replay` both follow these
rules: replay runs them over whole records at once (`gauged/alarm/replay.py`), and a test runs
both on the same data and compares every event. The engine is pure logic: no I/O, no clock
(the cycle time is an argument).

A station's stage comes from one or more *quantities*, each with its own stage machine: its
own quantity (freeboard, or a rain total) and the `inputs` of its config (a quantity of this
or another station, with thresholds for its stages 1, 2 …). `combine = "max"` (the default)
makes the station's stage the highest of its quantities' stages, `"min"` the lowest. A
transition names the quantity that moved the station (`level` or `rain`, or `follow`).

A station whose gauge is in `gauge_fault` holds its stage (its readings are not good, so no
stage machine moves on them; a station with two gauges is in gauge_fault only when both are,
`gauged.alarm.quality.combine`); with `follow = "<station>"` its stage follows that station's
upward, never down, until its own good readings take over again.

What a cycle sounds is decided per station (`Announcer`: transitions, repeats, all-clear) and
then per zone (`ZoneAnnouncer`): stations of one zone that reach one stage are heard once per
`min_gap_min`, and an all-clear waits for the zone's last raised station.

An unexpected error while evaluating one station (its derivations, its stage machines, its
announcer, following its leader) is contained to it (QUALITY SYS-5, gauged/barrier.py): the
station is in gauge_fault with the reason `internal: …` and holds its stage (its machines see
a reading that is not good: nothing raises or lowers it, a pending confirmation starts again;
a station with `follow` follows its leader upward, as in any gauge_fault); stations whose
quantities it feeds see it as not good too; every other station is evaluated as usual. The
error comes back in `CycleResult.contained`: the engine neither logs nor counts it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from gauged.alarm.level import LevelTrend, freeboard, minutes_to
from gauged.alarm.quality import Quality
from gauged.alarm.rain import RainParams, RainState
from gauged.alarm.stages import StageChange, StageMachine, StageRule
from gauged.alarm.types import (
    BroadcastRequest,
    CycleResult,
    Merged,
    Sample,
    StationState,
    Transition,
)
from gauged.barrier import EVALUATE, Contained
from gauged.config.checks import combine_problems
from gauged.config.models import StationConfig, StationInput
from gauged.config.settings import Config
from gauged.errors import ConfigError


@dataclass(frozen=True)
class Quantity:
    """One quantity a station's stage depends on."""

    source: str  # the station whose derived value it is
    name: str  # "freeboard" or a rain quantity (gauged.rain.QUANTITIES)
    kind: str  # "level" or "rain"
    rule: StageRule


def rain_params(config: Config) -> RainParams:
    d = config.defaults
    return RainParams(window_s=d.rain_window_min * 60.0,
                      clock=d.rain_window_mode == "clock_hour", dry_s=d.rain_event_dry_h * 3600.0,
                      half_lives_s=(d.rain_half_life_short_h * 3600.0,
                                    d.rain_half_life_long_h * 3600.0),
                      timezone=config.gateway.timezone)


def stage_rule(config: Config, station: StationConfig) -> StageRule:
    """The stage rule of a station's own quantity, with the config's defaults filled in."""
    d = config.defaults
    rise = tuple(s.rise_m_per_h for s in station.stages)
    return StageRule(
        names=("normal", *(s.name for s in station.stages)),
        thresholds=tuple(s.threshold for s in station.stages),
        direction="falling" if station.kind == "level" else "rising",
        margin=config.station_margin(station),
        clear_samples=station.clear_samples or d.clear_samples,
        confirm_samples=station.confirm_samples or d.confirm_samples,
        dwell_s=(station.dwell_min if station.dwell_min is not None else d.dwell_min) * 60.0,
        rise=rise if any(r is not None for r in rise) else (),
    )


def quantities(config: Config, sid: str) -> list[Quantity]:
    """The quantities of a station: its own first, then its inputs."""
    st = config.stations[sid]
    own = Quantity(sid, st.stage_quantity, st.kind, stage_rule(config, st))
    return [own, *(_input(config, sid, st, inp) for inp in st.inputs)]


def _input(config: Config, sid: str, st: StationConfig, inp: StationInput) -> Quantity:
    base = stage_rule(config, st)
    source = inp.station or sid
    level = inp.quantity == "freeboard"
    margin = inp.margin if inp.margin is not None else (
        config.defaults.level_margin_m if level else config.defaults.rain_margin_mm)
    rule = StageRule(names=base.names[:len(inp.thresholds) + 1],
                     thresholds=tuple(inp.thresholds),
                     direction="falling" if level else "rising", margin=margin,
                     clear_samples=base.clear_samples, confirm_samples=base.confirm_samples,
                     dwell_s=base.dwell_s)
    return Quantity(source, inp.quantity, "level" if level else "rain", rule)


def combined(stages: list[int], rule: str) -> int:
    return max(stages) if rule == "max" else min(stages)


def mover(moved: list[tuple[Quantity, StageChange, float]], before: int,
          after: int) -> tuple[Quantity, float]:
    """Which of the quantities that moved this cycle moved the station from `before` to
    `after`: the first that moved the same way and now holds `after`, else the first that
    held `before`, else the first that moved the same way."""
    same = [m for m in moved if m[1].upward == (after > before)]
    q, _, value = next((m for m in same if m[1].to_stage == after), None) or \
        next((m for m in same if m[1].from_stage == before), same[0])
    return q, value


@dataclass
class _Derived:
    """A station's derivations for one cycle: the values its quantities compare."""

    state: StationState
    good: bool
    values: dict[str, float | None]
    partial: dict[str, bool]
    rate: float | None = None


class Engine:
    """Derivations, stages and broadcast decisions for every station of a config."""

    def __init__(self, config: Config) -> None:
        problems = combine_problems(config)
        if problems:
            raise ConfigError([f"{config.source}: {p}" for p in problems])
        self.config = config
        d = config.defaults
        self.quantities = {sid: quantities(config, sid) for sid in config.stations}
        self.inputs = {sid: [StageMachine(q.rule) for q in qs]
                       for sid, qs in self.quantities.items()}
        # the machine of each station's own quantity
        self.machines = {sid: ms[0] for sid, ms in self.inputs.items()}
        self.stages = {sid: 0 for sid in config.stations}
        self.trends = {sid: LevelTrend(d.rise_readings, d.rise_window_min * 60.0)
                       for sid, st in config.stations.items() if st.kind == "level"}
        params = rain_params(config)
        self.rain = {sid: RainState(params)
                     for sid, st in config.stations.items() if st.kind == "rain"}
        self.announcers = {sid: Announcer(config, sid) for sid in config.stations}
        self.zones = {zone: ZoneAnnouncer(config, zone) for zone in config.zones}
        self.followers = {sid: st.follow for sid, st in config.stations.items()
                          if st.follow is not None}
        # every quantity name read from each station (what a held derivation must answer)
        self._names = {sid: {config.stations[sid].stage_quantity} for sid in config.stations}
        for qs in self.quantities.values():
            for q in qs:
                self._names[q.source].add(q.name)

    def restore(self, station: str, stage: int, entered: datetime | None = None) -> None:
        """Set a station's stage (state restored after a restart): every quantity of the
        station holds it (as far as it has stages) until its own data clear it."""
        ts = entered.timestamp() if entered is not None else None
        self.inputs[station] = [StageMachine(q.rule, min(stage, len(q.rule.thresholds)), ts)
                                for q in self.quantities[station]]
        self.machines[station] = self.inputs[station][0]
        self.stages[station] = combined([m.stage for m in self.inputs[station]],
                                        self.config.stations[station].combine)
        self.announcers[station].restored(self.stages[station])

    def carry_over(self, old: Engine) -> None:
        """Take over the state of `old`, the engine of the configuration before a reload
        (the same stations reading the same gauges; gauged/daemon/reload.py): every station
        keeps its stage and when it entered it, its rain history and rate of rise, when it
        last sounded; every zone what it heard. A quantity whose rule did not change keeps
        its machine as it is (a confirmation under way included); one whose rule changed
        keeps its stage (capped at its highest), entry time and last value; a new input
        holds the station's stage, as after a restart. The station's stage is kept (capped
        at its highest): nothing sounds for the reload itself, and the next cycle moves it
        by the usual rules (a station the new thresholds put higher escalates then)."""
        for sid, st in self.config.stations.items():
            if sid not in old.config.stations:
                continue
            stage = min(old.stages[sid], len(st.stages))
            before = {(q.source, q.name): m
                      for q, m in zip(old.quantities[sid], old.inputs[sid], strict=True)}
            machines = []
            for q in self.quantities[sid]:
                was = before.get((q.source, q.name))
                if was is not None and was.rule == q.rule:
                    machines.append(was)
                    continue
                top = len(q.rule.thresholds)
                machine = StageMachine(q.rule, min(was.stage if was else stage, top),
                                       was.entered if was else None)
                machine.last_value = was.last_value if was else None
                machines.append(machine)
            self.inputs[sid] = machines
            self.machines[sid] = machines[0]
            self.stages[sid] = stage
            if sid in old.trends and sid in self.trends:
                self.trends[sid] = old.trends[sid]
            if sid in old.rain and sid in self.rain:
                self.rain[sid] = old.rain[sid]
            announcer, was_announcer = self.announcers[sid], old.announcers[sid]
            announcer.sounded_us, announcer.episode = was_announcer.sounded_us, \
                was_announcer.episode
        for zone, announcer_z in self.zones.items():
            if zone in old.zones:
                announcer_z.heard = dict(old.zones[zone].heard)

    def shift(self, seconds: float) -> None:
        """Re-date the whole history by `seconds`: the wall clock was stepped (NTP setting a
        gateway right that booted hours behind; gauged/clock.py). Dwell, rates of rise, rain
        windows, repeats and zone gaps then go on as if the clock had always read the
        stepped time: a step neither shortens nor lengthens any of them."""
        for machines in self.inputs.values():
            for machine in machines:
                machine.shift(seconds)
        for trend in self.trends.values():
            trend.shift(seconds)
        for rain in self.rain.values():
            rain.shift(seconds)
        us = round(seconds * 1e6)
        for announcer in self.announcers.values():
            announcer.shift(us)
        for zone in self.zones.values():
            zone.shift(us)

    def evaluate(self, time: datetime, samples: Mapping[str, Sample],
                 withhold: Callable[[BroadcastRequest], bool] | None = None) -> CycleResult:
        """Process one cycle's samples (stations absent from `samples` are left as they are).

        `withhold` says which requests an inhibit withholds (the daemon's maintenance
        inhibits): they go to `result.withheld`, before the zones merge what is left, so a
        withheld station never silences another."""
        result = CycleResult()
        ts = time.timestamp()
        derived: dict[str, _Derived] = {}
        for sid in self.config.stations:
            if sid in samples:
                try:
                    derived[sid] = self._derive(sid, time, ts, samples[sid])
                except Exception as exc:  # contained to this station (SYS-5)
                    derived[sid] = self._held(sid, time, samples[sid],
                                              self._contain(result, sid, exc))
        requests: list[BroadcastRequest] = []
        for sid, st in self.config.stations.items():
            machines = [(m.stage, m.entered) for m in self.inputs[sid]]
            before, transitions = self.stages[sid], len(result.transitions)
            try:
                requests += self._station(result, time, ts, sid, st, derived)
            except Exception as exc:  # contained: the station holds its stage (SYS-5)
                for m, (stage, entered) in zip(self.inputs[sid], machines, strict=True):
                    m.stage, m.entered = stage, entered
                    with contextlib.suppress(Exception):  # it may be what raised
                        m.update(None, False, ts=ts)  # a pending confirmation starts again
                self.stages[sid] = before
                del result.transitions[transitions:]
                self._fault(derived, sid, self._contain(result, sid, exc))
        for sid, leader in self.followers.items():
            d = derived.get(sid)
            if d is not None and d.state.fault:
                try:
                    requests += self._follow(result, time, ts, sid, leader)
                except Exception as exc:
                    self._fault(derived, sid, self._contain(result, sid, exc))
        for sid, d in derived.items():
            try:
                self._finish(d, self.config.stations[sid], self.stages[sid])
            except Exception as exc:
                d.state.stage = self.stages[sid]
                self._fault(derived, sid, self._contain(result, sid, exc))
        if withhold is not None:
            result.withheld = [r for r in requests if withhold(r)]
            requests = [r for r in requests if r not in result.withheld]
        result.broadcasts, result.merged = self._by_zone(_us(time), requests)
        result.states = [d.state for d in derived.values()]
        return result

    def _station(self, result: CycleResult, time: datetime, ts: float, sid: str,
                 st: StationConfig, derived: Mapping[str, _Derived]) -> list[BroadcastRequest]:
        """One station's stage machines fed this cycle's values: its transition and what it
        sounds (nothing when none of its sources was read)."""
        moved: list[tuple[Quantity, StageChange, float]] = []
        updated = False
        for q, machine in zip(self.quantities[sid], self.inputs[sid], strict=True):
            d = derived.get(q.source)
            if d is None:
                continue
            updated = True
            value = d.values[q.name]
            change = machine.update(value, d.good, rate=d.rate, partial=d.partial[q.name],
                                    ts=ts)
            if change is not None and value is not None:
                moved.append((q, change, value))
        if not updated:
            return []
        before = self.stages[sid]
        after = combined([m.stage for m in self.inputs[sid]], st.combine)
        self.stages[sid] = after
        if after != before:
            q, value = mover(moved, before, after)
            return self._record(result, time, sid, StageChange(before, after), q.kind, value)
        return self.announcers[sid].held(time, after)

    def _contain(self, result: CycleResult, sid: str, exc: Exception) -> str:
        """Hand an unexpected error back with the result (the first one per station)."""
        if sid not in result.contained:
            result.contained[sid] = Contained(sid, EVALUATE, exc)
        return result.contained[sid].reason

    def _held(self, sid: str, time: datetime, sample: Sample, reason: str) -> _Derived:
        """A station whose derivations failed: no usable value (its stage holds), in
        gauge_fault with `reason`."""
        st = self.config.stations[sid]
        quality = sample.quality if not sample.quality.usable else Quality.BAD
        state = StationState(station=sid, kind=st.kind, time=time, quality=quality,
                             stage=self.stages[sid], stage_name="", reason=reason,
                             fault=reason, gauges=sample.gauges)
        names = self._names[sid]
        return _Derived(state, False, dict.fromkeys(names), dict.fromkeys(names, False))

    def _fault(self, derived: Mapping[str, _Derived], sid: str, reason: str) -> None:
        """Show a station's contained error as its gauge_fault (its state, when it has one
        this cycle)."""
        d = derived.get(sid)
        if d is not None:
            d.state.fault = d.state.fault or reason
            d.state.reason = reason
            if d.state.quality.usable:
                d.state.quality = Quality.BAD

    def _follow(self, result: CycleResult, time: datetime, ts: float, sid: str,
                leader: str) -> list[BroadcastRequest]:
        """A station in gauge_fault follows its leader's stage upward (never down)."""
        stage = self.stages[leader]
        before = self.stages[sid]
        if stage <= before:
            return []
        self.machines[sid].raise_to(stage, ts)
        after = combined([m.stage for m in self.inputs[sid]], self.config.stations[sid].combine)
        self.stages[sid] = after
        if after == before:
            return []
        value = self.machines[leader].last_value
        return self._record(result, time, sid, StageChange(before, after), "follow",
                            math.nan if value is None else value)

    def _by_zone(self, us: int, requests: list[BroadcastRequest]) -> tuple[
            list[BroadcastRequest], list[Merged]]:
        """What each zone plays of what its stations asked this cycle."""
        order = request_order(self.config)
        out: list[BroadcastRequest] = []
        merged: list[Merged] = []
        for zone, zone_requests in _group(sorted(requests, key=order)).items():
            played, held = self.zones[zone].filter(us, zone_requests, self.in_episode)
            out += played
            merged += held
        out.sort(key=order)
        merged.sort(key=lambda m: order(m.request))
        return out, merged

    def in_episode(self, sid: str) -> bool:
        return self.announcers[sid].episode

    def _derive(self, sid: str, time: datetime, ts: float, sample: Sample) -> _Derived:
        st = self.config.stations[sid]
        state = StationState(station=sid, kind=st.kind, time=time, quality=sample.quality,
                             stage=self.stages[sid], stage_name="", reason=sample.reason,
                             fault=sample.fault, gauges=sample.gauges)
        if st.kind == "level":
            assert st.crest_m is not None  # cross_check guarantees it
            good = sample.quality.usable and sample.value is not None
            trend = self.trends[sid]
            if sample.value is not None:
                state.level_m = sample.value
                state.freeboard_m = round(freeboard(st.crest_m, sample.value), 6)
                if good:
                    trend.add(ts, sample.value)
            state.rise_m_per_h = trend.rate(ts)
            values: dict[str, float | None] = {"freeboard": state.freeboard_m}
            return _Derived(state, good, values, {"freeboard": False}, state.rise_m_per_h)
        figures = self.rain[sid].update(ts, sample.value, sample.quality)
        t = figures.totals
        state.rain_increment_mm = sample.value
        state.rain_total_mm, state.rain_10m_mm, state.rain_60m_mm = \
            t["total"], t["10m"], t["60m"]
        state.rain_hour_mm, state.rain_24h_mm, state.rain_event_mm = \
            t["hour"], t["24h"], t["event"]
        state.rain_eff_short_mm = round(t["effective_short"], 3)
        state.rain_eff_long_mm = round(t["effective_long"], 3)
        state.rain_span_s = figures.span_s
        state.rain_event_start = None if figures.event_start is None else \
            datetime.fromtimestamp(figures.event_start, UTC)
        state.rain_partial = figures.partial[st.stage_quantity]
        # the first reading of a counter has no increment yet, but the totals are known
        return _Derived(state, sample.quality.usable, dict(t), figures.partial)

    def _finish(self, d: _Derived, st: StationConfig, stage: int) -> None:
        state = d.state
        state.stage, state.stage_name = stage, self.machines[state.station].rule.names[stage]
        state.stage_value = d.values[st.stage_quantity]
        if st.kind == "level" and stage < len(st.stages) and state.freeboard_m is not None \
                and d.good:
            state.minutes_to_next = minutes_to(state.freeboard_m, st.stages[stage].threshold,
                                               state.rise_m_per_h)

    def _record(self, result: CycleResult, time: datetime, sid: str, change: StageChange,
                kind: str, value: float) -> list[BroadcastRequest]:
        names = self.machines[sid].rule.names
        result.transitions.append(Transition(
            time=time, station=sid, kind=kind, from_stage=change.from_stage,
            to_stage=change.to_stage, from_name=names[change.from_stage],
            to_name=names[change.to_stage], value=value))
        return self.announcers[sid].changed(time, change)


def broadcasts(config: Config, st: StationConfig, sid: str, time: datetime,
               change: StageChange) -> list[BroadcastRequest]:
    """What a station transition sounds: on the way up only, the sequence of the highest
    stage entered that has one (a skipped stage broadcasts only the highest), on every zone
    of the station."""
    if not change.upward:
        return []
    names = ("normal", *(s.name for s in st.stages))
    for stage in range(change.to_stage, change.from_stage, -1):
        seq_id = st.stages[stage - 1].sequence
        if seq_id is None:
            continue
        seq = config.sequences[seq_id]
        return [BroadcastRequest(time=time, zone=zone, station=sid, stage=stage,
                                 stage_name=names[stage], sequence=seq_id,
                                 siren_s=seq.siren_s, clips=tuple(seq.clips))
                for zone in st.zones]
    return []


class Announcer:
    """When one station sounds, beyond its upward transitions (the same rules live and in
    replay): a stage with `repeat_min` broadcasts its sequence again while the station stays
    at it, `repeat_min` after the station last sounded (a transition's broadcast or a
    repeat); a station with `all_clear` plays that sequence when it returns to normal after
    a stage that broadcast. Times are whole microseconds, as replay counts them.

    After a restart the repeat clock starts again at the first cycle (a restored stage never
    sounds at once), and an all-clear follows if the restored stage is one that broadcasts.
    """

    def __init__(self, config: Config, sid: str) -> None:
        self.config = config
        self.sid = sid
        self.station = st = config.stations[sid]
        self.names = ("normal", *(s.name for s in st.stages))
        self.repeat_us = tuple(None if s.repeat_min is None else round(s.repeat_min * 60e6)
                               for s in st.stages)
        self.sounded_us: int | None = None  # when the station last sounded (this episode)
        self.episode = False  # a stage broadcast since the station was last normal

    def shift(self, us: int) -> None:
        """Re-date when the station last sounded by `us` microseconds."""
        if self.sounded_us is not None:
            self.sounded_us += us

    def restored(self, stage: int) -> None:
        self.sounded_us = None
        self.episode = any(s.sequence for s in self.station.stages[:stage])

    def changed(self, time: datetime, change: StageChange) -> list[BroadcastRequest]:
        """What a transition sounds: its broadcast, or the all-clear."""
        requests = broadcasts(self.config, self.station, self.sid, time, change)
        if requests:
            self.sounded_us, self.episode = _us(time), True
        elif change.to_stage == 0:
            if self.episode and self.station.all_clear is not None:
                requests = self._requests(time, 0, self.station.all_clear, "all_clear")
            self.sounded_us, self.episode = None, False
        return requests

    def next_repeat_us(self, stage: int) -> int | None:
        """When a repeat of `stage` falls due (None: never, or not known yet)."""
        every = self.repeat_us[stage - 1] if stage > 0 else None
        if every is None or self.sounded_us is None:
            return None
        return self.sounded_us + every

    def held(self, time: datetime, stage: int) -> list[BroadcastRequest]:
        """A cycle in which the station stayed at `stage`: a repeat when one is due."""
        if stage == 0 or self.repeat_us[stage - 1] is None:
            return []
        us = _us(time)
        due = self.next_repeat_us(stage)
        if due is None:  # restored: the clock starts now
            self.sounded_us = us
            return []
        if us < due:
            return []
        self.sounded_us = us
        seq = self.station.stages[stage - 1].sequence
        assert seq is not None  # cross_check: repeat_min needs a sequence
        return self._requests(time, stage, seq, "repeat")

    def _requests(self, time: datetime, stage: int, seq_id: str,
                  kind: str) -> list[BroadcastRequest]:
        seq = self.config.sequences[seq_id]
        name = "all-clear" if kind == "all_clear" else self.names[stage]
        return [BroadcastRequest(time=time, zone=zone, station=self.sid, stage=stage,
                                 stage_name=name, sequence=seq_id, siren_s=seq.siren_s,
                                 clips=tuple(seq.clips), kind=kind)
                for zone in self.station.zones]


class ZoneAnnouncer:
    """What a zone plays of what its stations ask (DESIGN §1, "Zones hear an escalation
    once"; the same rules live and in replay):

    - requests of one stage in one cycle are one broadcast naming every station;
    - a stage request is merged into the zone's broadcast of that stage or a higher one heard
      less than `min_gap_min` ago (a higher stage is always heard); a repeat likewise within
      the station's `repeat_min`;
    - an all-clear is held while another station of the zone is still in its episode (a
      stage that broadcast); the zone's gap starts again after an all-clear.
    """

    def __init__(self, config: Config, zone: str) -> None:
        self.gap_us = round(config.zones[zone].min_gap_min * 60e6)
        self.stations = [sid for sid, st in config.stations.items() if zone in st.zones]
        self.repeat_us = {sid: tuple(None if s.repeat_min is None else round(s.repeat_min * 60e6)
                                     for s in config.stations[sid].stages)
                          for sid in self.stations}
        self.heard: dict[int, tuple[int, BroadcastRequest]] = {}  # stage: (when, broadcast)

    def shift(self, us: int) -> None:
        """Re-date what the zone heard by `us` microseconds."""
        self.heard = {stage: (when + us, b) for stage, (when, b) in self.heard.items()}

    def filter(self, us: int, requests: list[BroadcastRequest],
               in_episode: Callable[[str], bool]) -> tuple[list[BroadcastRequest],
                                                           list[Merged]]:
        out: list[BroadcastRequest] = []
        merged: list[Merged] = []
        for request in requests:
            if request.kind == "all_clear" and any(
                    s != request.station and in_episode(s) for s in self.stations):
                merged.append(Merged(request, None))  # the zone still stands at a stage
                continue
            same = next((i for i, r in enumerate(out)
                         if r.stage == request.stage and (r.kind == "all_clear") ==
                         (request.kind == "all_clear")), None)
            if same is not None:
                leader = out[same]
                out[same] = replace(leader, stations=(*leader.named, request.station))
                merged.append(Merged(request, out[same]))
                continue
            prior = self._heard(us, request)
            if prior is not None:
                merged.append(Merged(request, prior))
                continue
            out.append(request)
        for request in out:
            if request.kind == "all_clear":
                self.heard.clear()
            else:
                self.heard[request.stage] = (us, request)
        # the merged requests name the broadcast that speaks for them as it was sent
        final = {r.stage: r for r in out}
        merged = [Merged(m.request, final.get(m.into.stage, m.into))
                  if m.into is not None and m.into.time == m.request.time else m
                  for m in merged]
        return out, merged

    def _heard(self, us: int, request: BroadcastRequest) -> BroadcastRequest | None:
        """The broadcast of this stage or a higher one that still speaks for `request`."""
        if request.kind == "all_clear":
            return None
        if request.kind == "repeat":
            window = self.repeat_us[request.station][request.stage - 1]
        else:
            window = self.gap_us
        if not window:
            return None
        best = None
        for stage, (when, broadcast) in self.heard.items():
            if stage >= request.stage and us - when < window and (
                    best is None or when > best[0]):
                best = (when, broadcast)
        return None if best is None else best[1]


def request_order(config: Config) -> Callable[[BroadcastRequest], tuple[int, int]]:
    """The order of a cycle's broadcasts: by station (config order), then zone."""
    pos = {sid: i for i, sid in enumerate(config.stations)}

    def key(request: BroadcastRequest) -> tuple[int, int]:
        return pos[request.station], config.stations[request.station].zones.index(request.zone)

    return key


def _group(requests: list[BroadcastRequest]) -> dict[str, list[BroadcastRequest]]:
    by_zone: dict[str, list[BroadcastRequest]] = {}
    for request in requests:
        by_zone.setdefault(request.zone, []).append(request)
    return by_zone


def _us(time: datetime) -> int:
    """Whole microseconds since the epoch (as replay keeps times)."""
    return (time - _EPOCH) // timedelta(microseconds=1)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
