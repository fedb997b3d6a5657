"""The stage engine: a pure state machine per station and quantity.

Stage 0 is "normal"; stages 1..N have thresholds. For a level station the quantity is the
freeboard and a stage is reached when freeboard ≤ threshold (`falling` direction); for a rain
station it is the rolling total and a stage is reached when total ≥ threshold (`rising`).

- Escalation: the value is past a higher threshold for `confirm_samples` consecutive good
  samples; the stage jumps straight to the highest one reached (a skipped stage is skipped).
- De-escalation: the value is back past the current stage's threshold by `margin` for
  `clear_samples` consecutive good samples; the stage drops to the highest stage that the
  value still holds (with the margin) over those samples.
- A sample that is not good neither raises nor lowers the stage, and restarts both counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Direction = Literal["falling", "rising"]


@dataclass(frozen=True)
class StageRule:
    """Thresholds and hysteresis of one station quantity."""

    names: tuple[str, ...]  # names of stages 0..N, "normal" first
    thresholds: tuple[float, ...]  # thresholds of stages 1..N
    direction: Direction
    margin: float
    clear_samples: int = 2
    confirm_samples: int = 1

    def __post_init__(self) -> None:
        if len(self.names) != len(self.thresholds) + 1:
            raise ValueError("names must hold 'normal' plus one name per threshold")

    def _past(self, value: float, threshold: float) -> bool:
        return value <= threshold if self.direction == "falling" else value >= threshold

    def reached(self, value: float) -> int:
        """The highest stage whose threshold `value` has reached (0 if none)."""
        stage = 0
        for i, threshold in enumerate(self.thresholds, start=1):
            if self._past(value, threshold):
                stage = i
        return stage

    def held(self, value: float) -> int:
        """The highest stage `value` still holds when leaving needs the margin."""
        shift = self.margin if self.direction == "falling" else -self.margin
        stage = 0
        for i, threshold in enumerate(self.thresholds, start=1):
            if self._past(value, threshold + shift):
                stage = i
        return stage


@dataclass(frozen=True)
class StageChange:
    """A stage transition (from_stage → to_stage) decided on one sample."""

    from_stage: int
    to_stage: int

    @property
    def upward(self) -> bool:
        return self.to_stage > self.from_stage


class StageMachine:
    """Tracks the stage of one station quantity across samples."""

    def __init__(self, rule: StageRule, stage: int = 0) -> None:
        self.rule = rule
        self.stage = stage
        self._up_count = 0
        self._up_target = 0
        self._down_count = 0
        self._down_target = 0

    @property
    def name(self) -> str:
        return self.rule.names[self.stage]

    def update(self, value: float | None, good: bool) -> StageChange | None:
        """Feed one sample; return the transition it completes, if any."""
        if value is None or not good:
            self._up_count = self._down_count = 0
            return None
        reached = self.rule.reached(value)
        if reached > self.stage:
            self._down_count = 0
            # over the confirming samples, the stage confirmed is the lowest one reached
            self._up_target = reached if self._up_count == 0 else min(self._up_target,
                                                                      reached)
            self._up_count += 1
            if self._up_count >= self.rule.confirm_samples:
                return self._move(self._up_target)
            return None
        self._up_count = 0
        held = self.rule.held(value)
        if held < self.stage:
            # over the clearing samples, the stage kept is the highest one still held
            self._down_target = held if self._down_count == 0 else max(self._down_target,
                                                                       held)
            self._down_count += 1
            if self._down_count >= self.rule.clear_samples:
                return self._move(self._down_target)
            return None
        self._down_count = 0
        return None

    def _move(self, stage: int) -> StageChange:
        change = StageChange(self.stage, stage)
        self.stage = stage
        self._up_count = self._down_count = 0
        return change
