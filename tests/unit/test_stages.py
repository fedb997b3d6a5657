"""The stage machine: escalate, skip a stage, hysteresis and dwell on the way down, bad data,
rate-of-rise triggers, partial totals; and the same machine over arrays (replay)."""

from __future__ import annotations

import numpy as np
import pytest

from gauged.alarm.stages import StageChange, StageMachine, StageRule, run_machine

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


# ---- dwell, partial totals, rate-of-rise triggers ---------------------------------------

def test_dwell_delays_de_escalation_but_never_escalation() -> None:
    rule = StageRule(names=LEVEL.names, thresholds=LEVEL.thresholds, direction="falling",
                     margin=0.10, dwell_s=1800)
    m = StageMachine(rule)
    assert m.update(1.5, True, ts=0) == StageChange(0, 2)
    assert m.update(0.9, True, ts=180) == StageChange(2, 3)  # up at once, dwell or not
    for k in range(2, 11):  # clear for 27 minutes: still within the dwell
        assert m.update(3.0, True, ts=180 * k) is None
    assert m.update(3.0, True, ts=180 + 1800) == StageChange(3, 0)  # 30 minutes in warning


def test_dwell_of_a_restored_stage_counts_from_the_first_sample() -> None:
    rule = StageRule(names=LEVEL.names, thresholds=LEVEL.thresholds, direction="falling",
                     margin=0.10, dwell_s=600)
    m = StageMachine(rule, stage=3)  # restored: when it was entered is unknown
    assert [m.update(3.0, True, ts=t) for t in (1000, 1180, 1360)] == [None, None, None]
    assert m.update(3.0, True, ts=1600) == StageChange(3, 0)


def test_a_partial_total_may_raise_but_never_lower() -> None:
    m = StageMachine(RAIN, stage=2)
    assert m.update(0.0, True, partial=True) is None
    assert m.update(0.0, True, partial=True) is None
    assert m.stage == 2
    assert m.update(55.0, True, partial=True) == StageChange(2, 3)
    # a partial sample between two clearing samples restarts the count
    assert m.update(10.0, True) is None
    assert m.update(10.0, True, partial=True) is None
    assert m.update(10.0, True) is None
    assert m.update(10.0, True) == StageChange(3, 0)


RISE = StageRule(names=LEVEL.names, thresholds=LEVEL.thresholds, direction="falling",
                 margin=0.10, rise=(None, 0.5, None, None))


def test_a_rate_of_rise_reaches_its_stage() -> None:
    m = StageMachine(RISE)
    assert m.update(3.0, True, rate=0.4) is None
    assert m.update(3.0, True, rate=0.5) == StageChange(0, 2)  # notice: rising ≥ 0.5 m/h
    assert m.update(2.9, True, rate=None) is None  # no rate yet: the freeboard decides …
    assert m.update(0.8, True, rate=0.6) == StageChange(2, 3)  # … and the level goes on


def test_a_stage_reached_by_the_rate_holds_while_rising_at_half_the_trigger() -> None:
    m = StageMachine(RISE)
    m.update(3.0, True, rate=0.6)
    assert feed_rates(m, [(3.0, 0.3), (3.0, 0.25), (3.0, 0.24)]) == [None, None, None]
    assert m.update(3.0, True, rate=0.1) == StageChange(2, 0)


def feed_rates(m: StageMachine, samples: list[tuple[float, float]]) -> list[StageChange | None]:
    return [m.update(v, True, rate=r) for v, r in samples]


def test_alm_2_oscillation_around_every_threshold_changes_the_stage_at_most_once() -> None:
    """ALM-2 for the stage machine: ±5 cm around each level threshold (and ±4 mm around
    each rain threshold, inside the 5 mm margin) for an hour of 3-minute samples."""
    for rule, swing in ((LEVEL, 0.05), (RAIN, 4.0)):
        toward = 1 if rule.direction == "rising" else -1  # the dangerous side
        for stage, threshold in enumerate(rule.thresholds, start=1):
            for first in (-1, 1):  # starting on the safe side, then on the dangerous side
                m = StageMachine(rule, stage=stage - 1)  # from the stage below
                values = [threshold + first * toward * swing * (-1) ** k for k in range(20)]
                changes = [c for c in feed(m, values) if c]
                assert changes == [StageChange(stage - 1, stage)], (threshold, first)


# ---- the same machine over arrays ---------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_run_machine_over_a_record_equals_one_sample_at_a_time(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 3000
    rule = StageRule(names=LEVEL.names, thresholds=LEVEL.thresholds, direction="falling",
                     margin=float(rng.choice([0.0, 0.1, 0.3])),
                     clear_samples=int(rng.integers(1, 4)),
                     confirm_samples=int(rng.integers(1, 4)),
                     dwell_s=float(rng.choice([0.0, 600.0, 3600.0])),
                     rise=(None, 0.5, None, 2.0) if seed % 2 else ())
    t = np.cumsum(rng.choice([180.0, 360.0, 30.0], size=n, p=[0.9, 0.05, 0.05]))
    value = np.clip(np.cumsum(rng.normal(0, 0.12, n)) % 4.0 - 0.5, -1, 3.5)
    value[rng.random(n) < 0.02] = np.nan
    rate = np.where(rng.random(n) < 0.8, rng.normal(0.3, 0.6, n), np.nan)
    good = np.isfinite(value) & (rng.random(n) < 0.95)
    partial = rng.random(n) < 0.03
    events = run_machine(rule, t, good, rule.reached_array(value, rate),
                         rule.held_array(value, rate), partial)
    m = StageMachine(rule)
    live = []
    for j in range(n):
        v = None if np.isnan(value[j]) else float(value[j])
        r = None if np.isnan(rate[j]) else float(rate[j])
        change = m.update(v, bool(good[j]), rate=r, partial=bool(partial[j]), ts=float(t[j]))
        if change is not None:
            live.append((j, change.from_stage, change.to_stage))
    assert len(live) > 20
    assert events == live
