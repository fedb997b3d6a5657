"""Quality checks: range, spike, flat-line, stale, device status, and the gauge_fault state."""

from __future__ import annotations

import math

from gauged.alarm.quality import Quality, QualityTracker, assess
from gauged.config.models import QualityRules

GOOD, SUSPECT, BAD, MISSING = Quality.GOOD, Quality.SUSPECT, Quality.BAD, Quality.MISSING


def level(**rules: object) -> QualityTracker:
    return QualityTracker(QualityRules(**rules), (-1.0, 8.0))  # type: ignore[arg-type]


def test_assess_without_history() -> None:
    assert assess(1.0, (0.0, 2.0)) is GOOD
    assert assess(2.5, (0.0, 2.0)) is BAD
    assert assess(None, None) is MISSING
    assert assess(math.nan, None) is MISSING


def test_range_nan_and_status_bits_are_bad() -> None:
    q = level()
    assert q.judge(9.0).quality is BAD
    assert q.judge(math.nan).quality is BAD
    j = q.judge(1.0, status=0x01)  # fault bits, already masked by the poller
    assert (j.quality, j.reason) == (BAD, "status 0x1: the device reports a fault")
    assert q.fault == j.reason  # a device-reported fault is a gauge_fault at once
    assert q.judge(1.0, status=0).quality is GOOD
    assert q.fault == ""


def test_a_spike_is_bad_and_a_step_confirmed_twice_in_a_row_is_real() -> None:
    q = level(max_step=0.5)
    assert q.judge(1.0).quality is GOOD
    assert q.judge(1.4).quality is GOOD
    assert q.judge(4.4).reason == "spike: +3 from the last good reading"
    assert q.judge(1.5).quality is GOOD  # back near the last good value: it was a spike
    # after a gap, a big change is believed once two consecutive readings agree
    q.judge_error("timeout")
    assert q.judge(2.9).quality is BAD
    assert q.judge(3.0).quality is GOOD
    # but two spikes with a fault between them never confirm each other
    assert q.judge(5.0).quality is BAD
    q.judge_error("timeout")
    assert q.judge(5.0).quality is BAD
    assert q.judge(math.nan).quality is BAD
    assert q.judge(5.0).quality is BAD


def test_counter_spike_is_judged_on_the_increment() -> None:
    q = QualityTracker(QualityRules(max_step=15.0), None, counter=True)
    assert q.judge(None, flat_key=100).quality is GOOD  # the baseline
    assert q.judge(3.0, flat_key=106).quality is GOOD
    assert q.judge(250.0, flat_key=606).quality is BAD
    assert q.judge(1.0, flat_key=608).quality is GOOD


def test_flatline_while_others_move_and_beyond_the_limit() -> None:
    q = level(flatline_cycles=3, flatline_max_cycles=6)
    assert [q.judge(1.0, others_moving=False).quality for _ in range(5)] == [GOOD] * 5
    j = q.judge(1.0, others_moving=False)
    assert (j.quality, j.reason) == (SUSPECT, "flatline: 6 identical readings")
    assert q.fault == j.reason
    q2 = level(flatline_cycles=3)
    assert [q2.judge(1.0, others_moving=True).quality for _ in range(3)] == [GOOD, GOOD, SUSPECT]
    assert q2.judge(1.001, others_moving=True).quality is GOOD
    assert q2.fault == ""


def test_stale_after_the_configured_cycles_without_a_good_reading() -> None:
    q = level(stale_cycles=2)
    q.judge(1.0)
    assert q.judge_error("timeout").quality is MISSING
    assert q.fault == ""
    q.judge(9.9)  # bad readings are not good ones either
    assert q.fault == "stale: no good reading for 2 cycles"
    q.judge(1.0)
    assert q.fault == ""


def test_device_failure_is_a_fault_at_once() -> None:
    q = level(stale_cycles=5)
    q.judge_error("exception 04: device failure", device_fault=True)
    assert q.fault == "exception 04: device failure"
    q.judge_error("timeout")
    assert q.fault == "exception 04: device failure"  # until a good reading
    q.judge(1.0)
    assert q.fault == ""
