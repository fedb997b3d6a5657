"""The alarm's value types: what flows from the gauges through the engine to the outputs.

Plain data, no behaviour beyond small derived properties: the engine produces them, the
field layer plays them, the uplinks and ops render them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from gauged.alarm.quality import GaugeReading, Quality
from gauged.barrier import Contained


@dataclass(frozen=True)
class Sample:
    """One station's input for a cycle.

    `value` is the water level (m above datum) for a level station, or the rain increment
    (mm since the previous reading; None when there is no previous reading) for a rain one.
    """

    value: float | None
    quality: Quality
    reason: str = ""  # why the reading is not good (or, from two gauges, a note)
    fault: str = ""  # the gauge_fault of the station's gauge, "" when none
    # a station with two gauges: each gauge's judged reading (`value` is their combination)
    gauges: tuple[GaugeReading, ...] = ()


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
    rise_m_per_h: float | None = None  # rate of rise of the level (falling: negative)
    minutes_to_next: float | None = None  # to the next stage's freeboard at that rate
    rain_increment_mm: float | None = None
    rain_total_mm: float | None = None  # the stage window (defaults.rain_window_min)
    rain_10m_mm: float | None = None
    rain_60m_mm: float | None = None
    rain_hour_mm: float | None = None  # the current clock hour (local time)
    rain_24h_mm: float | None = None
    rain_event_mm: float | None = None  # the current storm event (0 between events)
    rain_event_start: datetime | None = None
    rain_eff_short_mm: float | None = None  # effective rainfall, short half-life
    rain_eff_long_mm: float | None = None  # effective rainfall, long half-life
    rain_span_s: float | None = None  # the time the increment covers (a gap: > a cycle)
    rain_partial: bool = False  # the stage total misses rain (a gap or a bad reading)
    stage_value: float | None = None  # the value of the station's own stage quantity
    reason: str = ""
    fault: str = ""
    gauges: tuple[GaugeReading, ...] = ()  # a station with two gauges: each one's reading

    def as_json(self, tz: str) -> dict[str, Any]:
        """The JSON form (MQTT and /status); local times in the gateway's zone `tz`."""
        out: dict[str, Any] = {"time": self.time.isoformat(),
                               "local_time": local_time(self.time, tz),
                               "stage": self.stage, "stage_name": self.stage_name,
                               "quality": self.quality.value, "reason": self.reason,
                               "gauge_fault": self.fault or None}
        if self.kind == "level":
            out |= {"level_m": self.level_m, "freeboard_m": self.freeboard_m,
                    "rise_m_per_h": self.rise_m_per_h, "minutes_to_next": self.minutes_to_next}
            if self.gauges:
                out["gauges"] = {g.gauge: g.as_json() for g in self.gauges}
        else:
            # rain_60m_mm has always been the stage total (60 min unless configured otherwise)
            out |= {"rain_increment_mm": self.rain_increment_mm,
                    "rain_60m_mm": self.rain_total_mm, "rain_10m_mm": self.rain_10m_mm,
                    "rain_24h_mm": self.rain_24h_mm, "rain_event_mm": self.rain_event_mm,
                    "rain_partial": self.rain_partial}
        return out


@dataclass(frozen=True)
class Transition:
    time: datetime
    station: str
    kind: str  # "level" or "rain": the kind of the quantity that moved the station (the
    # field `quantity` of the `transition` event, the `stage_change` point and the log line)
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
    # "stage" (an upward transition), "repeat" (the stage still stands, `repeat_min`) or
    # "all_clear" (back to normal after a stage that broadcast; stage 0, lowest priority)
    kind: str = "stage"
    # every station the broadcast speaks for: several stations of one zone that reach one
    # stage together are heard once (DESIGN §1); empty means just `station`
    stations: tuple[str, ...] = ()

    @property
    def named(self) -> tuple[str, ...]:
        return self.stations or (self.station,)


@dataclass(frozen=True)
class Merged:
    """A broadcast the zone does not play because it already hears the same: `into` is
    the broadcast that speaks for it (None: an all-clear held while another station of the
    zone still stands at a stage)."""

    request: BroadcastRequest
    into: BroadcastRequest | None


@dataclass
class CycleResult:
    states: list[StationState] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    broadcasts: list[BroadcastRequest] = field(default_factory=list)
    merged: list[Merged] = field(default_factory=list)
    withheld: list[BroadcastRequest] = field(default_factory=list)  # by an inhibit
    # stations whose evaluation raised: each in gauge_fault (reason `internal: …`), its stage
    # held (QUALITY SYS-5); the daemon counts and logs them (gauged/barrier.py)
    contained: dict[str, Contained] = field(default_factory=dict)



@dataclass
class BroadcastRecord:
    """What a broadcast did, for the log, storage, MQTT and /status.

    Times ending in `_mono` are monotonic seconds (for latency); the others simulated UNIX
    time (for the record).
    """

    request: BroadcastRequest
    # queued, playing; then done, pre-empted, superseded, dropped, silenced, failed (the
    # player raised), interrupted (cut by the daemon's stop) or not-started (still queued
    # at the stop)
    outcome: str = "queued"
    started: float = 0.0
    finished: float = 0.0
    siren_on_s: float = 0.0
    clips_played: list[str] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    reading_mono: float | None = None  # the gauge answer that triggered it
    decided_mono: float = 0.0  # the engine's decision
    first_relay_mono: float | None = None  # the first relay write issued
    audio_start_mono: float | None = None  # the first clip started
    audio_end_mono: float | None = None  # the last clip ended (played or not)
    audio_s: float | None = None  # how long its clips play, from their decoded durations
    started_mono: float | None = None  # it began to play (its age, whatever the wall clock)
    relay_writes: list[tuple[str, bool, float]] = field(default_factory=list)
    journal: int | None = None  # its row in the broadcast journal (gauged/store/state.py)
    replay: bool = False  # played again after a restart (gauged/daemon/restore.py)

    @property
    def latency_s(self) -> float | None:
        """From the gauge's answer (or the decision) to the first relay write."""
        if self.first_relay_mono is None:
            return None
        return self.first_relay_mono - (self.reading_mono or self.decided_mono)

    def latency(self) -> dict[str, float | None]:
        """The latency record, in milliseconds from the gauge's answer (or the decision)."""
        t0 = self.reading_mono or self.decided_mono

        def ms(t: float | None) -> float | None:
            return None if t is None else round((t - t0) * 1000, 2)

        return {"decision_ms": ms(self.decided_mono),
                "first_relay_write_ms": ms(self.first_relay_mono),
                "audio_start_ms": ms(self.audio_start_mono),
                "audio_end_ms": ms(self.audio_end_mono)}

    def as_json(self) -> dict[str, Any]:
        """The JSON form (MQTT and /status)."""
        req = self.request
        return {"zone": req.zone, "station": req.station, "stations": list(req.named),
                "stage": req.stage,
                "stage_name": req.stage_name, "sequence": req.sequence, "kind": req.kind,
                "started": datetime.fromtimestamp(self.started, UTC).isoformat(),
                "outcome": self.outcome,
                "siren_on_s": round(self.siren_on_s, 3), "clips_played": self.clips_played,
                "faults": self.faults, "latency": self.latency(), "journal": self.journal,
                "replay": self.replay}


def local_time(when: datetime, tz: str) -> str:
    """`when` in the time zone `tz`, as the logs and /status show it."""
    return when.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S%z")
