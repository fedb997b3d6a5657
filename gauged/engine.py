"""The alarm engine: samples in, station states, stage transitions and broadcasts out.

One `Engine.evaluate` call per cycle. The live daemon and `gauged replay` both go through
here, so a recorded series replays exactly as it would have run. The engine is pure logic:
no I/O, no clock (the cycle time is an argument).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from gauged.config import Config, StationConfig
from gauged.level import freeboard
from gauged.quality import Quality
from gauged.rain import RainWindow
from gauged.stages import StageChange, StageMachine, StageRule


@dataclass(frozen=True)
class Sample:
    """One station's input for a cycle.

    `value` is the water level (m above datum) for a level station, or the rain increment
    (mm since the previous reading; None when there is no previous reading) for a rain one.
    """

    value: float | None
    quality: Quality
    reason: str = ""  # why the reading is not good
    fault: str = ""  # the gauge_fault of the station's gauge, "" when none


@dataclass
class StationState:
    """What an operator sees of a station after a cycle."""

    station: str
    kind: str
    time: datetime
    quality: Quality
    stage: int
    stage_name: str
    level_m: float | None = None
    freeboard_m: float | None = None
    rain_increment_mm: float | None = None
    rain_total_mm: float | None = None
    reason: str = ""
    fault: str = ""

    @property
    def quantity(self) -> float | None:
        """The value compared with the thresholds."""
        return self.freeboard_m if self.kind == "level" else self.rain_total_mm


@dataclass(frozen=True)
class Transition:
    time: datetime
    station: str
    quantity: str  # "level" or "rain"
    from_stage: int
    to_stage: int
    from_name: str
    to_name: str
    value: float


@dataclass(frozen=True)
class BroadcastRequest:
    """A broadcast the engine decided: the sequence of `stage` on `zone`."""

    time: datetime
    zone: str
    station: str
    stage: int
    stage_name: str
    sequence: str
    siren_s: float
    clips: tuple[str, ...]


@dataclass
class CycleResult:
    states: list[StationState] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    broadcasts: list[BroadcastRequest] = field(default_factory=list)


def stage_rule(config: Config, station: StationConfig) -> StageRule:
    """The stage rule of a station, with the config's defaults filled in."""
    d = config.defaults
    return StageRule(
        names=("normal", *(s.name for s in station.stages)),
        thresholds=tuple(s.threshold for s in station.stages),
        direction="falling" if station.kind == "level" else "rising",
        margin=config.station_margin(station),
        clear_samples=station.clear_samples or d.clear_samples,
        confirm_samples=station.confirm_samples or d.confirm_samples,
    )


class Engine:
    """Derivations, stages and broadcast decisions for every station of a config."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.machines = {sid: StageMachine(stage_rule(config, st))
                         for sid, st in config.stations.items()}
        window_s = config.defaults.rain_window_min * 60.0
        self.rain = {sid: RainWindow(window_s)
                     for sid, st in config.stations.items() if st.kind == "rain"}

    def evaluate(self, time: datetime, samples: Mapping[str, Sample]) -> CycleResult:
        """Process one cycle's samples (stations absent from `samples` are left as they are)."""
        result = CycleResult()
        ts = time.timestamp()
        for sid, sample in samples.items():
            st = self.config.stations[sid]
            machine = self.machines[sid]
            state = StationState(station=sid, kind=st.kind, time=time, quality=sample.quality,
                                 stage=machine.stage, stage_name=machine.name,
                                 reason=sample.reason, fault=sample.fault)
            good = sample.quality.usable and sample.value is not None
            if st.kind == "level":
                assert st.crest_m is not None  # cross_check guarantees it
                if sample.value is not None:
                    state.level_m = sample.value
                    state.freeboard_m = round(freeboard(st.crest_m, sample.value), 6)
                value = state.freeboard_m
            else:
                window = self.rain[sid]
                if sample.quality.usable and sample.value is not None:
                    window.add(ts, sample.value)
                state.rain_increment_mm = sample.value
                state.rain_total_mm = window.total(ts)
                # the first reading of a counter has no increment yet, but the total is known
                good = sample.quality.usable
                value = state.rain_total_mm
            change = machine.update(value, good)
            state.stage, state.stage_name = machine.stage, machine.name
            result.states.append(state)
            if change is not None and value is not None:
                self._record(result, time, sid, st, change, value)
        return result

    def _record(self, result: CycleResult, time: datetime, sid: str, st: StationConfig,
                change: StageChange, value: float) -> None:
        names = self.machines[sid].rule.names
        result.transitions.append(Transition(
            time=time, station=sid, quantity=st.kind, from_stage=change.from_stage,
            to_stage=change.to_stage, from_name=names[change.from_stage],
            to_name=names[change.to_stage], value=value))
        if not change.upward:
            return  # broadcasts on upward transitions only
        # A skipped stage broadcasts only the highest stage entered that has a sequence.
        for stage in range(change.to_stage, change.from_stage, -1):
            seq_id = st.stages[stage - 1].sequence
            if seq_id is None:
                continue
            seq = self.config.sequences[seq_id]
            for zone in st.zones:
                result.broadcasts.append(BroadcastRequest(
                    time=time, zone=zone, station=sid, stage=stage, stage_name=names[stage],
                    sequence=seq_id, siren_s=seq.siren_s, clips=tuple(seq.clips)))
            return
