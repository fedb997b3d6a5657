"""The stage engine: a pure state machine per station and quantity.

Stage 0 is "normal"; stages 1..N have thresholds. For a level station the quantity is the
freeboard and a stage is reached when freeboard ≤ threshold (`falling` direction); for a rain
quantity it is a total and a stage is reached when total ≥ threshold (`rising`). A stage with
a rate-of-rise trigger (`rise`, m/h) is also reached when the river rises at least that fast.

- Escalation: the value is past a higher threshold for `confirm_samples` consecutive good
  samples; the stage jumps straight to the lowest stage reached over those samples (a
  skipped stage is skipped).
- De-escalation: the value is back past the current stage's threshold by `margin` (and the
  rate below half its trigger) for `clear_samples` consecutive good samples, and the stage
  has been held for at least `dwell_s`; the stage drops to the highest stage that the value
  still holds (with the margin) over the last `clear_samples` samples.
- A sample that is not good neither raises nor lowers the stage, and restarts both counts.
  A *partial* sample (a total that is only a lower bound) may raise the stage but never
  lowers it: for de-escalation it counts as not good.

`StageMachine` takes one sample at a time (the daemon); `run_machine` runs the same machine
over a whole record held in arrays (replay), jumping from one transition to the next.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

Direction = Literal["falling", "rising"]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
StageArray = npt.NDArray[np.int8]


@dataclass(frozen=True)
class StageRule:
    """Thresholds and hysteresis of one station quantity."""

    names: tuple[str, ...]  # names of stages 0..N, "normal" first
    thresholds: tuple[float, ...]  # thresholds of stages 1..N
    direction: Direction
    margin: float
    clear_samples: int = 2
    confirm_samples: int = 1
    dwell_s: float = 0.0  # minimum time in a stage before it may be left
    rise: tuple[float | None, ...] = ()  # rate-of-rise trigger of stages 1..N (m/h)

    def __post_init__(self) -> None:
        if len(self.names) != len(self.thresholds) + 1:
            raise ValueError("names must hold 'normal' plus one name per threshold")
        if self.rise and len(self.rise) != len(self.thresholds):
            raise ValueError("rise must hold one trigger (or None) per threshold")

    def _past(self, value: float, threshold: float) -> bool:
        return value <= threshold if self.direction == "falling" else value >= threshold

    def _triggers(self) -> tuple[float | None, ...]:
        return self.rise or (None,) * len(self.thresholds)

    def reached(self, value: float, rate: float | None = None) -> int:
        """The highest stage whose threshold (or rate trigger) `value` has reached."""
        stage = 0
        for i, (threshold, rise) in enumerate(zip(self.thresholds, self._triggers(),
                                                  strict=True), start=1):
            if self._past(value, threshold) or (
                    rise is not None and rate is not None and rate >= rise):
                stage = i
        return stage

    def held(self, value: float, rate: float | None = None) -> int:
        """The highest stage `value` still holds when leaving needs the margin (and a rate
        below half the trigger)."""
        shift = self.margin if self.direction == "falling" else -self.margin
        stage = 0
        for i, (threshold, rise) in enumerate(zip(self.thresholds, self._triggers(),
                                                  strict=True), start=1):
            if self._past(value, threshold + shift) or (
                    rise is not None and rate is not None and rate >= rise / 2):
                stage = i
        return stage

    # ---- the same over arrays (NaN: no value, no rate) ---------------------------------

    def _past_array(self, value: FloatArray, threshold: float) -> BoolArray:
        return value <= threshold if self.direction == "falling" else value >= threshold

    def reached_array(self, value: FloatArray, rate: FloatArray | None = None) -> StageArray:
        out = np.zeros(value.size, dtype=np.int8)
        for i, (threshold, rise) in enumerate(zip(self.thresholds, self._triggers(),
                                                  strict=True), start=1):
            mask = self._past_array(value, threshold)
            if rise is not None and rate is not None:
                mask |= rate >= rise
            out[mask] = i
        return out

    def held_array(self, value: FloatArray, rate: FloatArray | None = None) -> StageArray:
        shift = self.margin if self.direction == "falling" else -self.margin
        out = np.zeros(value.size, dtype=np.int8)
        for i, (threshold, rise) in enumerate(zip(self.thresholds, self._triggers(),
                                                  strict=True), start=1):
            mask = self._past_array(value, threshold + shift)
            if rise is not None and rate is not None:
                mask |= rate >= rise / 2
            out[mask] = i
        return out


@dataclass(frozen=True)
class StageChange:
    """A stage transition (from_stage → to_stage) decided on one sample."""

    from_stage: int
    to_stage: int

    @property
    def upward(self) -> bool:
        return self.to_stage > self.from_stage


class StageMachine:
    """Tracks the stage of one station quantity across samples.

    `entered` is when the current stage was entered (for the dwell); None means unknown
    (a restored stage), and the dwell then counts from the next sample.
    """

    def __init__(self, rule: StageRule, stage: int = 0, entered: float | None = None) -> None:
        self.rule = rule
        self.stage = stage
        self.entered = entered
        self._up: list[int] = []  # stages reached over the current confirming run
        self._down: deque[int] = deque(maxlen=rule.clear_samples)  # stages held, clearing
        self.last_value: float | None = None  # the last good value

    @property
    def name(self) -> str:
        return self.rule.names[self.stage]

    def update(self, value: float | None, good: bool, *, rate: float | None = None,
               partial: bool = False, ts: float = 0.0) -> StageChange | None:
        """Feed one sample taken at `ts`; return the transition it completes, if any."""
        if self.entered is None:
            self.entered = ts
        if value is None or not good:
            self._up.clear()
            self._down.clear()
            return None
        self.last_value = value
        reached = self.rule.reached(value, rate)
        if reached > self.stage:
            self._down.clear()
            self._up.append(reached)
            if len(self._up) >= self.rule.confirm_samples:
                # over the confirming samples, the stage confirmed is the lowest one reached
                return self._move(min(self._up), ts)
            return None
        self._up.clear()
        held = self.rule.held(value, rate)
        if held < self.stage and not partial:
            self._down.append(held)
            if len(self._down) >= self.rule.clear_samples and \
                    ts - self.entered >= self.rule.dwell_s:
                # over the clearing samples, the stage kept is the highest one still held
                return self._move(max(self._down), ts)
            return None
        self._down.clear()
        return None

    def raise_to(self, stage: int, ts: float) -> None:
        """Hold at least `stage` from `ts` (a faulty station following another upward)."""
        if stage > self.stage:
            self._move(stage, ts)

    def shift(self, seconds: float) -> None:
        """Re-date the past by `seconds`: the wall clock was stepped (gauged/clock.py), and
        the dwell goes on counting from the same moment."""
        if self.entered is not None:
            self.entered += seconds

    def _move(self, stage: int, ts: float) -> StageChange:
        change = StageChange(self.stage, stage)
        self.stage = stage
        self.entered = ts
        self._up.clear()
        self._down.clear()
        return change


def _run_lengths(cond: BoolArray, carry: int) -> npt.NDArray[np.int64]:
    """Length of the run of True ending at each index; `carry` True before index 0."""
    idx = np.arange(cond.size)
    last_false = np.maximum.accumulate(np.where(cond, -1, idx))
    return np.where(last_false >= 0, idx - last_false, idx + 1 + carry)


def run_machine(rule: StageRule, t: FloatArray, good: BoolArray, reached: StageArray,
                held: StageArray, partial: BoolArray, stage: int = 0,
                entered: float | None = None) -> list[tuple[int, int, int]]:
    """`StageMachine.update` over a whole record: the transitions as (index, from, to).

    `reached` and `held` are `rule.reached_array` and `rule.held_array` of the values and
    rates; `good` says which samples are usable (others reset the counts). Between
    transitions nothing depends on the past but the two run lengths, so the record is
    searched in growing blocks for the next sample that completes a run.
    """
    n = t.size
    events: list[tuple[int, int, int]] = []
    if n == 0:
        return events
    if entered is None:
        entered = float(t[0])
    confirm, clear = rule.confirm_samples, rule.clear_samples
    lowerable = good & ~partial
    i, up_run, down_run, block = 0, 0, 0, 64
    while i < n:
        end = min(n, i + block)
        r, h = reached[i:end], held[i:end]
        up = good[i:end] & (r > stage)
        down = lowerable[i:end] & (r <= stage) & (h < stage)
        up_len = _run_lengths(up, up_run)
        down_len = _run_lengths(down, down_run)
        fire_up = np.flatnonzero(up & (up_len >= confirm))
        fire_down = np.flatnonzero(down & (down_len >= clear) &
                                   (t[i:end] - entered >= rule.dwell_s))
        k_up = int(fire_up[0]) if fire_up.size else n
        k_down = int(fire_down[0]) if fire_down.size else n
        if k_up == n and k_down == n:
            up_run, down_run = int(up_len[-1]) if up[-1] else 0, \
                int(down_len[-1]) if down[-1] else 0
            i, block = end, min(block * 4, 1 << 16)
            continue
        j = i + min(k_up, k_down)
        if k_up < k_down:
            target = int(reached[j - confirm + 1:j + 1].min())
        else:
            target = int(held[j - clear + 1:j + 1].max())
        events.append((j, stage, target))
        stage, entered = target, float(t[j])
        i, up_run, down_run, block = j + 1, 0, 0, 64
    return events
