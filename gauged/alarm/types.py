"""The alarm's value types: what flows from the gauges through the engine to the outputs.

Plain data, no behaviour beyond small derived properties: the engine produces them, the
field layer plays them, the uplinks and ops render them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from gauged.alarm.quality import Quality


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

    @property
    def quantity(self) -> float | None:
        """The value compared with the station's own thresholds."""
        return self.stage_value


@dataclass(frozen=True)
class Transition:
    time: datetime
    station: str
    quantity: str  # "level" or "rain": the kind of the quantity that moved the station
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


@dataclass
class CycleResult:
    states: list[StationState] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    broadcasts: list[BroadcastRequest] = field(default_factory=list)



@dataclass
class BroadcastRecord:
    """What a broadcast did, for the log, storage, MQTT and /status.

    Times ending in `_mono` are monotonic seconds (for latency); the others simulated UNIX
    time (for the record).
    """

    request: BroadcastRequest
    outcome: str = "queued"  # queued, playing, done, pre-empted, superseded, dropped
    started: float = 0.0
    finished: float = 0.0
    siren_on_s: float = 0.0
    clips_played: list[str] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    reading_mono: float | None = None  # the gauge answer that triggered it
    decided_mono: float = 0.0  # the engine's decision
    first_relay_mono: float | None = None  # the first relay write issued
    audio_start_mono: float | None = None  # the first clip started
    relay_writes: list[tuple[str, bool, float]] = field(default_factory=list)

    @property
    def latency_s(self) -> float | None:
        """From the gauge's answer (or the decision) to the first relay write."""
        if self.first_relay_mono is None:
            return None
        return self.first_relay_mono - (self.reading_mono or self.decided_mono)
