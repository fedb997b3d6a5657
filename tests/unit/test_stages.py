"""The stage machine: escalate, skip a stage, hysteresis on the way down, bad data."""

from __future__ import annotations

from gauged.stages import StageChange, StageMachine, StageRule

LEVEL = StageRule(names=("normal", "watch", "notice", "warning", "overflow"),
                  thresholds=(2.58, 2.0, 1.0, 0.0), direction="falling", margin=0.10)
RAIN = StageRule(names=("normal", "watch", "notice", "warning"),
                 thresholds=(25.0, 30.0, 50.0), direction="rising", margin=5.0)


def feed(machine: StageMachine, values: list[float | None]) -> list[StageChange | None]:
    return [machine.update(v, v is not None) for v in values]


def test_escalates_on_the_first_sample_past_each_threshold() -> None:
    m = StageMachine(LEVEL)
    changes = feed(m, [3.5, 2.6, 2.58, 2.3, 2.0, 1.5, 1.0, 0.5, 0.0])
    assert [c for c in changes if c] == [StageChange(0, 1), StageChange(1, 2),
                                         StageChange(2, 3), StageChange(3, 4)]
    assert m.name == "overflow"


def test_a_skipped_stage_is_one_transition_to_the_highest() -> None:
    m = StageMachine(LEVEL)
    assert m.update(2.9, True) is None
    assert m.update(0.8, True) == StageChange(0, 3)
    assert m.stage == 3


def test_de_escalation_needs_the_margin_for_two_samples() -> None:
    m = StageMachine(LEVEL, stage=3)  # warning: freeboard ≤ 1.0
    # back above 1.0 but within the 0.10 margin: stays in warning
    assert feed(m, [1.05, 1.09, 1.10]) == [None, None, None]
    assert m.stage == 3
    # past the margin once, then a dip: the count restarts
    assert feed(m, [1.2, 1.05, 1.2]) == [None, None, None]
    assert m.stage == 3
    # two consecutive samples past the margin: down to the stage the value holds
    assert m.update(1.3, True) == StageChange(3, 2)


def test_de_escalation_drops_to_the_highest_stage_held_over_the_samples() -> None:
    m = StageMachine(LEVEL, stage=4)
    assert m.update(3.0, True) is None  # holds nothing
    assert m.update(1.5, True) == StageChange(4, 2)  # but this sample still holds notice


def test_rain_rises_and_clears_with_its_own_margin() -> None:
    m = StageMachine(RAIN)
    assert m.update(51.0, True) == StageChange(0, 3)
    assert feed(m, [47.0, 46.0]) == [None, None]  # within 5 mm of 50
    assert feed(m, [44.0, 44.5]) == [None, StageChange(3, 2)]
    assert feed(m, [10.0, 0.0]) == [None, StageChange(2, 0)]


def test_bad_or_missing_data_never_moves_the_stage() -> None:
    m = StageMachine(LEVEL, stage=2)
    assert m.update(-5.0, False) is None  # over the wall, but the reading is bad
    assert m.update(None, False) is None
    assert m.stage == 2
    # a bad sample between two clearing samples restarts the count
    assert m.update(3.0, True) is None
    assert m.update(3.0, False) is None
    assert m.update(3.0, True) is None
    assert m.stage == 2
    assert m.update(3.0, True) == StageChange(2, 0)


def test_oscillation_around_a_threshold_changes_the_stage_once() -> None:
    m = StageMachine(LEVEL, stage=1)
    values = [2.0 + (0.05 if i % 2 else -0.05) for i in range(20)]  # ±5 cm around 2.0 m
    changes = [c for c in feed(m, values) if c]
    assert changes == [StageChange(1, 2)]


def test_confirmation_samples_delay_escalation() -> None:
    rule = StageRule(names=LEVEL.names, thresholds=LEVEL.thresholds, direction="falling",
                     margin=0.1, confirm_samples=2)
    m = StageMachine(rule)
    assert m.update(1.9, True) is None
    assert m.update(0.9, True) == StageChange(0, 2)  # lowest stage reached over the two
