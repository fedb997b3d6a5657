"""Data quality: every reading is judged before anything acts on it.

Grades: `good` (usable), `suspect` (plausible but doubtful: a flat line), `bad` (read but
implausible: NaN, outside the physical range, a spike, a device status bit), `missing` (no
value: the read failed or was skipped). Only good readings move a stage; the others are
stored and shown, never acted on.

A gauge is in `gauge_fault` when it has given no good reading for `stale_cycles` cycles, when
its device reports a failure (Modbus exception 04, a status bit), when it answers that the
configured address does not exist (exception 02), or while its value is flat-lined. The fault
clears with the next good reading.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from gauged.config.models import QualityRules


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


class QualityTracker:
    """Judges the successive readings of one gauge and keeps its fault state.

    For a level gauge the value judged is the level; for a rain counter it is the increment
    since the previous reading (mm), with the raw counter as what must not flat-line.
    """

    def __init__(self, rules: QualityRules, valid_range: tuple[float, float] | None, *,
                 counter: bool = False) -> None:
        self.rules = rules
        self.range = valid_range
        self.counter = counter
        self.last_good: float | None = None
        self.cycles_since_good = 0
        self.flat_value: float | None = None
        self.flat_cycles = 0  # consecutive identical readings
        self.candidate: float | None = None  # last cycle's spike, which this one may confirm
        self.device_fault = ""  # a failure the device reported, until the next good reading
        self.fault = ""  # the current gauge_fault reason, "" when none

    def judge(self, value: float | None, status: int | None = None, *,
              others_moving: bool = False, flat_key: float | None = None) -> Judgement:
        """Judge one reading (None: nothing to judge yet, such as a counter's baseline).

        `status` holds the fault bits the device reported (its status word under the
        configured fault mask): any bit set makes the reading bad.
        """
        candidate, self.candidate = self.candidate, None
        judgement = self._judge(value, status, others_moving,
                                value if flat_key is None else flat_key, candidate)
        if judgement.quality is Quality.GOOD:
            if value is not None:
                self.last_good = value
            self.cycles_since_good = 0
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
        if self.device_fault:
            self.fault = self.device_fault
        elif judgement.reason.startswith(("flatline", "status")):
            self.fault = judgement.reason
        elif self.cycles_since_good >= self.rules.stale_cycles:
            self.fault = f"stale: no good reading for {self.cycles_since_good} cycles"

    def _judge(self, value: float | None, status: int | None, others_moving: bool,
               flat_key: float | None, candidate: float | None) -> Judgement:
        if status:  # the fault bits of the device's status word (already masked)
            return Judgement(Quality.BAD, f"status 0x{status:X}: the device reports a fault")
        if value is None:
            return Judgement(Quality.GOOD) if self.counter else \
                Judgement(Quality.MISSING, "no reading")
        if not math.isfinite(value):
            return Judgement(Quality.BAD, "not a number")
        if not self.counter and self.range is not None and \
                not self.range[0] <= value <= self.range[1]:
            return Judgement(Quality.BAD, f"out of range [{self.range[0]:g}, {self.range[1]:g}]")
        spike = self._spike(value, candidate)
        if spike is not None:
            return spike
        return self._flatline(flat_key, others_moving)

    def _spike(self, value: float, candidate: float | None) -> Judgement | None:
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

    def _flatline(self, key: float | None, others_moving: bool) -> Judgement:
        if key is not None and key == self.flat_value:
            self.flat_cycles += 1
        else:
            self.flat_value, self.flat_cycles = key, 1
        n, rules = self.flat_cycles, self.rules
        if rules.flatline_max_cycles is not None and n >= rules.flatline_max_cycles:
            return Judgement(Quality.SUSPECT, f"flatline: {n} identical readings")
        if rules.flatline_cycles is not None and n >= rules.flatline_cycles and others_moving:
            return Judgement(Quality.SUSPECT,
                             f"flatline: {n} identical readings while other gauges move")
        return Judgement(Quality.GOOD)
