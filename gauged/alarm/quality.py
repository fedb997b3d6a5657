"""Data quality: every reading is judged before anything acts on it.

Grades: `good` (usable), `suspect` (plausible but doubtful: a flat line), `bad` (read but
implausible: NaN, outside the physical range, a spike, a device status bit), `missing` (no
value: the read failed or was skipped). Only good readings move a stage; the others are
stored and shown, never acted on.

Uncertainty resolves toward safety (DESIGN §1, "Fail-safe data"): doubtful data may raise or
hold a stage, never lower it.

- A change larger than `max_step` in one cycle is a spike (bad) unless the next reading
  confirms it: no siren from one absurd sample, but a real step is believed.
- A move toward safety faster than the river can recede (`max_fall_m_per_h` from the last good
  reading, the allowance growing with the time since) is suspect, and repetition does not
  confirm it: the gauge must come back to a plausible path. Two in a row are a gauge_fault (a
  gauge that failed to a constant inside its range, 0.0 m say); a gauge that stays where it
  fell (within the noise, `related_move`, from one reading to the next) stays suspect
  however long it waits. A fall the river could have made (after a
  gap) but larger than `max_step` is a spike like any other: the next reading confirms it.
- A gauge that repeats one value while a related gauge (the station's `related`) moves by
  `related_move` is frozen: suspect and gauge_fault after `related_cycles` identical readings.

A gauge is in `gauge_fault` when it has given no good reading for `stale_cycles` cycles, when
its device reports a failure (Modbus exception 04, a status bit), when it answers that the
configured address does not exist (exception 02), while its value is flat-lined or frozen, or
after two implausible falls in a row. The fault clears with the next good reading.

`Judge` judges one cycle of every gauge at once (the related gauges watch each other); the
live poller and `gauged replay` both use it, so replay sees exactly what the daemon sees
(`gauged/alarm/quality_arrays.py` does the same over whole records). An unexpected error
while judging one gauge or combining one station's gauges is contained to it (QUALITY SYS-5,
gauged/barrier.py): that gauge is in gauge_fault at once, reason `internal: …`, and the error
is handed back in `Judge.contained` for the daemon to count and log.

Redundant gauges (DESIGN §1: "the more dangerous may raise, both must agree to lower"). A level
station may read a second gauge. Each gauge is a *channel* with its own history (channel id:
the station's id for its first gauge, `station:gauge` for the second; `Config.channels`); the
two gauges of a station watch each other as related gauges do. `combine` then makes the
station's reading of the two judged ones:

- both good and within the station's `tolerance_m`: their mean, good;
- both good but further apart: the higher level (the more dangerous), good, with the reason
  `disagree: a 3.10 m, b 2.40 m` — a stage rises on either gauge and falls only when both
  have fallen;
- one good: that one alone, good, the reason naming the other and who is in charge;
- neither good: not good (the worse grade, the higher value shown), and the station is in
  `gauge_fault` only when both gauges are: a station that one healthy gauge still carries is
  measured, not held.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gauged.barrier import JUDGE, Contained, internal_reason
from gauged.config.models import (
    DEFAULT_MAX_FALL_M_PER_H,
    DEFAULT_RELATED_MOVE,
    QualityRules,
)
from gauged.config.settings import Config

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


class Quality(enum.StrEnum):
    GOOD = "good"
    SUSPECT = "suspect"
    BAD = "bad"
    MISSING = "missing"

    @property
    def code(self) -> int:
        """A number for time-series storage: 0 good, 1 suspect, 2 bad, 3 missing."""
        return _CODES[self]

    @property
    def usable(self) -> bool:
        return self is Quality.GOOD


_CODES = {Quality.GOOD: 0, Quality.SUSPECT: 1, Quality.BAD: 2, Quality.MISSING: 3}


@dataclass(frozen=True)
class Judgement:
    quality: Quality
    reason: str = ""  # why the reading is not good ("" when good)


def assess(value: float | None, valid_range: tuple[float, float] | None) -> Quality:
    """The quality of one value against a physical range (no history)."""
    if value is None or not math.isfinite(value):
        return Quality.MISSING
    if valid_range is not None and not valid_range[0] <= value <= valid_range[1]:
        return Quality.BAD
    return Quality.GOOD


def in_range(value: float, valid_range: tuple[float, float] | None) -> bool:
    """`value` is a number inside the physical range (when there is one)."""
    return math.isfinite(value) and (valid_range is None or
                                     valid_range[0] <= value <= valid_range[1])


class QualityTracker:
    """Judges the successive readings of one gauge and keeps its fault state.

    For a level gauge the value judged is the level; for a rain counter it is the increment
    since the previous reading (mm), with the raw counter as what must not flat-line (the
    `key` of a reading).
    """

    def __init__(self, rules: QualityRules, valid_range: tuple[float, float] | None, *,
                 counter: bool = False) -> None:
        self.rules = rules
        self.range = valid_range
        self.counter = counter
        fall = rules.max_fall_m_per_h
        self.max_fall = None if counter else (DEFAULT_MAX_FALL_M_PER_H if fall is None
                                              else fall or None)
        self.related_move = rules.related_move if rules.related_move is not None else \
            DEFAULT_RELATED_MOVE["rain_counter" if counter else "level_m"]
        self.last_good: float | None = None
        self.last_good_t: float | None = None
        self.cycles_since_good = 0
        self.falls = 0  # consecutive implausible falls
        self.fell_to: float | None = None  # the fault's path: its last implausible reading
        self.fell_at: float | None = None  # when the first of them came
        self.flat_value: float | None = None
        self.flat_cycles = 0  # consecutive identical readings
        self.candidate: float | None = None  # last cycle's spike, which this one may confirm
        self.device_fault = ""  # a failure the device reported, until the next good reading
        self.fault = ""  # the current gauge_fault reason, "" when none

    def shift(self, seconds: float) -> None:
        """Re-date the last good reading and the fault's path by `seconds` (the wall clock
        was stepped): a fall is judged against the time that really passed."""
        if self.last_good_t is not None:
            self.last_good_t += seconds
        if self.fell_at is not None:
            self.fell_at += seconds

    def run_length(self, key: float | None) -> int:
        """The identical readings so far if `key` is read next (without reading it)."""
        if key is None or not math.isfinite(key):
            return self.flat_cycles
        return self.flat_cycles + 1 if key == self.flat_value else 1

    def judge(self, value: float | None, status: int | None = None, *, t: float = 0.0,
              others_moving: bool = False, related: tuple[str, float] | None = None,
              flat_key: float | None = None) -> Judgement:
        """Judge one reading taken at `t` (Unix seconds; None: nothing to judge yet, such as
        a counter's baseline).

        `status` holds the fault bits the device reported (its status word under the
        configured fault mask): any bit set makes the reading bad. `flat_key` is what must
        not flat-line (default: the value); `related` the related gauge that moved most
        since this gauge's value last changed, and by how much.
        """
        key = value if flat_key is None else flat_key
        if key is not None and math.isfinite(key):
            self.flat_cycles = self.run_length(key)
            self.flat_value = key
        candidate, self.candidate = self.candidate, None
        judgement = self._judge(value, status, t, others_moving, related, candidate)
        if judgement.quality is Quality.GOOD:
            if value is not None:
                self.last_good, self.last_good_t = value, t
            self.cycles_since_good = 0
            self.falls = 0
            self.fell_to = self.fell_at = None
            self.device_fault = ""
            self.fault = ""
        else:
            self._not_good(judgement)
        return judgement

    def judge_error(self, reason: str, *, device_fault: bool = False) -> Judgement:
        """A read that failed; `device_fault` when the device itself reported the failure."""
        if device_fault:
            self.device_fault = reason
        self.candidate = None
        judgement = Judgement(Quality.MISSING, reason)
        self._not_good(judgement)
        return judgement

    def _not_good(self, judgement: Judgement) -> None:
        self.cycles_since_good += 1
        # a missing or bad reading interrupts the count, not the fault's path: only a good
        # reading shows that the gauge came back
        self.falls = self.falls + 1 if judgement.reason.startswith("implausible fall") else 0
        if self.device_fault:
            self.fault = self.device_fault
        elif judgement.reason.startswith(("flatline", "status", "frozen")) or self.falls >= 2:
            self.fault = judgement.reason
        elif self.cycles_since_good >= self.rules.stale_cycles:
            self.fault = f"stale: no good reading for {self.cycles_since_good} cycles"

    def _judge(self, value: float | None, status: int | None, t: float, others_moving: bool,
               related: tuple[str, float] | None, candidate: float | None) -> Judgement:
        if status:  # the fault bits of the device's status word (already masked)
            return Judgement(Quality.BAD, f"status 0x{status:X}: the device reports a fault")
        if value is None:
            return Judgement(Quality.GOOD) if self.counter else \
                Judgement(Quality.MISSING, "no reading")
        if not math.isfinite(value):
            return Judgement(Quality.BAD, "not a number")
        if self.counter and value < 0:
            return Judgement(Quality.BAD, "negative rain")
        if not self.counter and self.range is not None and \
                not self.range[0] <= value <= self.range[1]:
            return Judgement(Quality.BAD, f"out of range [{self.range[0]:g}, {self.range[1]:g}]")
        fall = self._fall(value, t)
        if fall is not None:
            return fall
        spike = self._spike(value, candidate)
        if spike is not None:
            return spike
        return self._flatline(others_moving, related)

    def _spike(self, value: float, candidate: float | None) -> Judgement | None:
        """A change too large for one cycle, unless the next reading confirms it (a fall is
        judged by `_fall` first: only a plausible one, after a gap, gets here)."""
        step = self.rules.max_step
        if step is None:
            return None
        if self.counter:
            # an increment covers every cycle since the last good reading
            if value > step * (self.cycles_since_good + 1):
                return Judgement(Quality.BAD, f"spike: {value:g} in one reading")
            return None
        if self.last_good is None or abs(value - self.last_good) <= step:
            return None
        if candidate is not None and abs(value - candidate) <= step:
            return None  # seen twice in a row: a real step (after a gap, say), not a spike
        self.candidate = value
        return Judgement(Quality.BAD, f"spike: {value - self.last_good:+g} from the last good "
                                      f"reading")

    def _fall(self, value: float, t: float) -> Judgement | None:
        """A move toward safety faster than the river can recede: never confirmed by
        repetition, only by a plausible path back.

        After such a fall the readings that stay on the fault's path (each within the noise,
        `related_move`, of the previous one there, and still further down than the river
        could have gone by the time of the fall) are part of the fault, however long it
        lasts: a gauge that failed to a constant, or to a noisy or slowly drifting one,
        never makes itself plausible by waiting. A reading that leaves that path is judged
        afresh (a large step then still needs the next reading to confirm it, and a next
        reading back on the path is suspect again)."""
        if self.max_fall is None or self.last_good is None or self.last_good_t is None:
            return None
        fall = self.last_good - value
        minutes = (t - self.last_good_t) / 60.0
        if self.fell_to is not None and self.fell_at is not None and \
                fall > self.max_fall * (self.fell_at - self.last_good_t) / 3600.0 and \
                abs(value - self.fell_to) <= self.related_move:
            self.fell_to = value
            return Judgement(Quality.SUSPECT, f"implausible fall: stays near {value:g} m, "
                                              f"{minutes:.0f} min after the last good reading")
        if fall <= self.max_fall * (t - self.last_good_t) / 3600.0:
            return None
        self.fell_to = value
        if self.fell_at is None:
            self.fell_at = t
        return Judgement(Quality.SUSPECT, f"implausible fall: {-fall:+.2f} m in "
                                          f"{minutes:.0f} min (max {self.max_fall:g} m/h)")

    def _flatline(self, others_moving: bool, related: tuple[str, float] | None) -> Judgement:
        n, rules = self.flat_cycles, self.rules
        if related is not None and n >= rules.related_cycles and \
                related[1] >= self.related_move:
            return Judgement(Quality.SUSPECT, f"frozen: {n} identical readings while "
                                              f"{related[0]} moved {related[1]:.3g}")
        if rules.flatline_max_cycles is not None and n >= rules.flatline_max_cycles:
            return Judgement(Quality.SUSPECT, f"flatline: {n} identical readings")
        if rules.flatline_cycles is not None and n >= rules.flatline_cycles and others_moving:
            return Judgement(Quality.SUSPECT,
                             f"flatline: {n} identical readings while other gauges move")
        return Judgement(Quality.GOOD)


@dataclass(frozen=True)
class GaugeReading:
    """One gauge's judged reading, as a station with two gauges combines and shows it."""

    gauge: str
    value: float | None
    judgement: Judgement
    fault: str = ""  # the gauge's gauge_fault, "" when none

    @property
    def good(self) -> bool:
        return self.judgement.quality is Quality.GOOD and self.value is not None

    @property
    def why(self) -> str:
        """Why this gauge does not count (its fault, else its reason, else its grade)."""
        return self.fault or self.judgement.reason or self.judgement.quality.value

    def as_json(self) -> dict[str, object]:
        return {"value": self.value, "quality": self.judgement.quality.value,
                "reason": self.judgement.reason, "gauge_fault": self.fault or None}


@dataclass(frozen=True)
class Combined:
    """A station's reading made of its gauges' (`combine`)."""

    value: float | None
    judgement: Judgement  # good with a reason: a note (disagreement, a gauge left out)
    fault: str  # the station's gauge_fault: every gauge in gauge_fault ("" otherwise)
    gauges: tuple[GaugeReading, ...] = ()  # each gauge's reading (two gauges only)


def combine(a: GaugeReading, b: GaugeReading, tolerance: float) -> Combined:
    """The station's reading of its two gauges (the rule is in the module docstring).

    Levels: the higher is the more dangerous (freeboard = crest − level).
    """
    if a.good and b.good:
        assert a.value is not None
        assert b.value is not None
        if abs(a.value - b.value) <= tolerance:
            return Combined((a.value + b.value) / 2, Judgement(Quality.GOOD), "")
        return Combined(max(a.value, b.value), Judgement(Quality.GOOD, disagreement(
            a.gauge, a.value, b.gauge, b.value)), "")
    if a.good or b.good:
        ok, other = (a, b) if a.good else (b, a)
        return Combined(ok.value, Judgement(Quality.GOOD, f"{other.gauge}: {other.why}; "
                                                          f"{ok.gauge} in charge"), "")
    worse = a if a.judgement.quality.code >= b.judgement.quality.code else b
    values = [r.value for r in (a, b) if r.value is not None and math.isfinite(r.value)]
    fault = f"{a.gauge}: {a.fault}; {b.gauge}: {b.fault}" if a.fault and b.fault else ""
    return Combined(max(values) if values else None,
                    Judgement(worse.judgement.quality, f"{a.gauge}: {a.why}; {b.gauge}: {b.why}"),
                    fault)


def disagreement(a: str, a_value: float, b: str, b_value: float) -> str:
    return f"disagree: {a} {a_value:.2f} m, {b} {b_value:.2f} m"


@dataclass(frozen=True)
class Observation:
    """What one cycle read of one station's gauge, before judging.

    `value`: the level (m) or the counter's increment (mm; None for its first reading or a
    jump that is neither rain nor a reset); `key`: what must not flat-line (the level, the
    raw counter); `watch`: what a related gauge compares (the level, or the rain counted so
    far); `error`: why the read failed ("" when it did not); `device_fault`: the failure is a
    gauge_fault at once (the device reported it, or reading it failed inside gauged: an
    internal error), until the next good reading.
    """

    value: float | None = None
    key: float | None = None
    watch: float | None = None
    status: int | None = None
    error: str = ""
    device_fault: bool = False


def related_map(config: Config) -> dict[str, tuple[str, ...]]:
    """Each channel's related channels, in config order: the other gauge of its station and
    the gauges of its related stations (`related` in either direction)."""
    linked: dict[str, set[str]] = {sid: set(st.related) for sid, st in config.stations.items()}
    for sid, st in config.stations.items():
        for other in st.related:
            if other in linked:
                linked[other].add(sid)
    channels = config.channels()
    return {c: tuple(o for o, (s2, _) in channels.items()
                     if o != c and (s2 == sid or s2 in linked[sid]))
            for c, (sid, _) in channels.items()}


def tracker_for(config: Config, channel: str) -> QualityTracker:
    """A fresh tracker for one channel's gauge."""
    g = config.gauges[config.channels()[channel][1]]
    return QualityTracker(g.quality, g.range, counter=g.quantity == "rain_counter")


class Judge:
    """Judges one cycle of readings of every gauge (keyed by channel, `Config.channels`):
    each against its own history, and against the gauges that watch it (the station's other
    gauge, its related stations', the others of its kind)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.channels = config.channels()
        self.trackers: dict[str, QualityTracker] = {}
        self.kinds: dict[str, str] = {}
        for c, (sid, _) in self.channels.items():
            self.trackers[c] = tracker_for(config, c)
            self.kinds[c] = config.stations[sid].kind
        # the unexpected errors of the last `judge` and `stations` calls, per channel (a
        # station's own id for an error combining its two gauges): each was contained to its
        # gauge or station (SYS-5)
        self.contained: dict[str, Contained] = {}
        self.related = related_map(config)
        self.keys: dict[str, float] = {}  # each station's last key read
        self.watch: dict[str, float] = {}  # each station's last watch value
        # per station: its related stations' watch values when its own value last changed
        self.anchors: dict[str, dict[str, float]] = {}

    def shift(self, seconds: float) -> None:
        """Re-date every gauge's history by `seconds` (the wall clock was stepped)."""
        for tracker in self.trackers.values():
            tracker.shift(seconds)

    def judge(self, t: float, observations: Mapping[str, Observation]) -> dict[str, Judgement]:
        """Judge the channels read at `t` (Unix seconds); others are left as they are.

        An unexpected error judging one channel makes that channel's judgement a gauge_fault
        (`internal: …`, kept in `contained`); the other channels are judged as usual."""
        self.contained = {}
        moving: dict[str, int] = {"level": 0, "rain": 0}
        moved: set[str] = set()
        for sid, obs in observations.items():
            try:
                key = obs.key
                if key is None or not math.isfinite(key):
                    continue
                previous = self.keys.get(sid)
                if previous is not None and key != previous:
                    moved.add(sid)
                    moving[self.kinds[sid]] += 1
                self.keys[sid] = key
            except Exception as exc:  # contained to this channel (SYS-5)
                self._contain(sid, exc)
        for sid, obs in observations.items():
            try:
                if obs.watch is not None and math.isfinite(obs.watch):
                    self.watch[sid] = obs.watch
            except Exception as exc:
                self._contain(sid, exc)
        out = {}
        for sid, obs in observations.items():
            tracker = self.trackers[sid]
            if obs.error:
                out[sid] = tracker.judge_error(obs.error, device_fault=obs.device_fault)
                continue
            if sid not in self.contained:
                try:
                    related = self._related(sid, tracker, obs.key)
                    others = moving[self.kinds[sid]] - (sid in moved) > 0
                    out[sid] = tracker.judge(obs.value, obs.status, t=t, others_moving=others,
                                             related=related, flat_key=obs.key)
                    continue
                except Exception as exc:
                    self._contain(sid, exc)
            out[sid] = tracker.judge_error(self.contained[sid].reason, device_fault=True)
        return out

    def _contain(self, channel: str, exc: Exception) -> None:
        if channel in self.contained:
            return
        sid, gauge = self.channels[channel]
        two = self.config.stations[sid].second_gauge is not None
        self.contained[channel] = Contained(sid, JUDGE, exc, gauge if two else "")

    def stations(self, observations: Mapping[str, Observation],
                 judgements: Mapping[str, Judgement]) -> dict[str, Combined]:
        """The readings of the stations judged (in config order): a station's own gauge's, or
        its two gauges' combined (`combine`; both must have been judged)."""
        out = {}
        for sid, st in self.config.stations.items():
            if sid not in judgements:
                continue
            if st.second_gauge is None:
                out[sid] = Combined(observations[sid].value, judgements[sid],
                                    self.trackers[sid].fault)
                continue
            try:
                a, b = (GaugeReading(gauge, observations[c].value, judgements[c],
                                     self.trackers[c].fault)
                        for c, gauge in ((sid, st.gauge),
                                         (f"{sid}:{st.second_gauge}", st.second_gauge)))
                both = combine(a, b, st.tolerance)
                out[sid] = Combined(both.value, both.judgement, both.fault, (a, b))
            except Exception as exc:  # contained to this station (SYS-5)
                self.contained.setdefault(sid, Contained(sid, JUDGE, exc))
                reason = internal_reason(exc)
                out[sid] = Combined(None, Judgement(Quality.MISSING, reason), reason)
        return out

    def _related(self, sid: str, tracker: QualityTracker,
                 key: float | None) -> tuple[str, float] | None:
        """The related station that moved most since this one's value last changed."""
        names = self.related[sid]
        if not names:
            return None
        if tracker.run_length(key) == 1 and key is not None and math.isfinite(key):
            self.anchors[sid] = {r: self.watch[r] for r in names if r in self.watch}
            return None
        anchor = self.anchors.get(sid, {})
        best: tuple[str, float] | None = None
        for r in names:
            if r in anchor and r in self.watch:
                amount = abs(self.watch[r] - anchor[r])
                if best is None or amount > best[1]:
                    best = (r, amount)
        return best
