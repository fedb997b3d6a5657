"""Rain: counters to increments (rollover, reset), totals, gaps, events, effective rainfall."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gauged.alarm.quality import Quality
from gauged.alarm.rain import (
    QUANTITIES,
    CounterTracker,
    RainFigures,
    RainParams,
    RainState,
    RainWindow,
    clock_start,
    counter_increments,
    rain_history,
)


def test_counter_increments_in_millimetres() -> None:
    c = CounterTracker(bits=16, mm_per_tip=0.5)
    assert c.update(100) is None  # the first reading is only a baseline
    assert c.update(100) == 0.0
    assert c.update(104) == 2.0
    assert c.update(124) == 10.0


def test_counter_rollover_16_and_32_bit() -> None:
    c16 = CounterTracker(bits=16, mm_per_tip=0.5)
    c16.update(65530)
    assert c16.update(4) == 5.0  # 6 tips to the wrap, 4 after it
    c32 = CounterTracker(bits=32, mm_per_tip=0.5)
    c32.update(2**32 - 2)
    assert c32.update(3) == 2.5


def test_counter_reset_counts_from_zero() -> None:
    c = CounterTracker(bits=16, mm_per_tip=0.5)
    c.update(30000)
    assert c.update(6) == 3.0  # the device restarted: 6 tips since


def test_rolling_window_keeps_sixty_minutes() -> None:
    w = RainWindow(3600)
    t0 = 1_000_000.0
    for i in range(25):  # 2 mm every 3 minutes
        w.add(t0 + 180 * i, 2.0)
    now = t0 + 180 * 24
    assert w.total(now) == pytest.approx(40.0)  # the last 20 increments
    assert w.total(now + 180 * 19) == pytest.approx(2.0)
    assert w.total(now + 180 * 20) == 0.0


def test_totals_from_counter_readings() -> None:
    counter, window = CounterTracker(bits=16, mm_per_tip=0.5), RainWindow(3600)
    t0 = 0.0
    raw = 65500
    totals = []
    for i in range(30):
        inc = counter.update(raw % 65536)
        if inc is not None:
            window.add(t0 + 180 * i, inc)
        totals.append(window.total(t0 + 180 * i))
        raw += 6  # 3 mm per 3 minutes: 60 mm/h, wrapping the 16-bit counter on the way
    assert totals[20] == pytest.approx(60.0)
    assert totals[29] == pytest.approx(60.0)


# ---- counters over a record -----------------------------------------------------------

def test_counter_increments_over_a_record_match_the_tracker() -> None:
    raw = np.array([65500, 65530, np.nan, 4, 4, 30000, 6, np.nan, np.nan, 10])
    tracker = CounterTracker(bits=16, mm_per_tip=0.5)
    live = [None if math.isnan(r) else tracker.update(int(r)) for r in raw]
    got = counter_increments(raw, bits=16, mm_per_tip=0.5)
    assert np.array_equal(got, np.array([math.nan if v is None else v for v in live]),
                          equal_nan=True)
    # baseline; 30 tips; none; 10 across the wrap (a missing reading between); 0; a jump of
    # 29996 tips is not believable (no rain invented); a reset to 6 tips; 4 tips
    assert np.array_equal(got, [math.nan, 15.0, math.nan, 5.0, 0.0, math.nan, 3.0, math.nan,
                                math.nan, 2.0], equal_nan=True)


def test_an_unbelievable_jump_rebases_the_counter() -> None:
    c = CounterTracker(bits=16, mm_per_tip=0.5)
    c.update(100)
    assert c.update(40000) is None  # 39900 tips in one reading: neither rain nor a restart
    assert c.update(40004) == 2.0  # counted again from the new base


# ---- attribution to time: a gap is a gap ------------------------------------------------

T0 = 1_782_864_000.0  # 2026-07-01T00:00Z, on a clock hour
GOOD, MISSING, BAD = Quality.GOOD, Quality.MISSING, Quality.BAD


def feed(state: RainState, readings: list[tuple[float, float | None, Quality]]) -> RainFigures:
    figures = None
    for ts, mm, q in readings:
        figures = state.update(ts, mm, q)
    assert figures is not None
    return figures


def test_the_first_reading_is_only_a_baseline() -> None:
    state = RainState(RainParams())
    first = state.update(T0, 5.0, GOOD)  # what it reports covers an unknown time
    assert first.span_s is None
    assert first.totals["60m"] == 0.0
    assert first.partial["60m"]  # the hour before it is unknown: a lower bound
    then = state.update(T0 + 180, 2.0, GOOD)
    assert then.span_s == 180
    assert then.totals["60m"] == 2.0
    assert state.update(T0 + 3420, 0.0, GOOD).partial["60m"]
    assert not state.update(T0 + 3600, 0.0, GOOD).partial["60m"]  # (T0, T0 + 1 h] is known


def test_a_short_gap_is_counted_where_it_is_reported() -> None:
    state = RainState(RainParams())
    calm = [(T0 - 900 + 180 * k, None if k == 0 else 0.0, GOOD) for k in range(6)]
    f = feed(state, [*calm, (T0 + 180, 2.0, GOOD), (T0 + 360, None, MISSING),
                     (T0 + 540, 4.5, GOOD)])  # one missed cycle: 4.5 mm over 6 minutes
    assert f.span_s == 360
    assert f.totals["10m"] == 6.5
    assert f.totals["60m"] == 6.5
    assert not f.partial["10m"]


def test_a_long_gap_is_never_spread_as_invented_rain() -> None:
    state = RainState(RainParams())
    feed(state, [(T0 + 180 * k, None if k == 0 else 2.0, GOOD) for k in range(11)])
    # the gauge is gone for 90 minutes, then reports 45 mm for the whole gap
    for k in range(11, 41):
        state.update(T0 + 180 * k, None, MISSING)
    f = state.update(T0 + 180 * 41, 45.0, GOOD)
    assert f.span_s == 31 * 180
    assert f.totals["10m"] == 0.0  # not 45 mm in 10 minutes …
    assert f.totals["60m"] == 0.0  # … nor in the hour: it fell somewhere in 93 minutes
    assert f.partial["60m"]  # flagged: a lower bound
    assert f.partial["10m"]
    assert f.totals["24h"] == 65.0  # 93 minutes fit in 24 hours
    assert f.totals["event"] == 65.0
    later = state.update(T0 + 180 * 41 + 3600, 0.0, GOOD)
    assert not later.partial["60m"]  # the hole has left the window


def test_no_rain_after_a_gap_is_complete_information() -> None:
    state = RainState(RainParams())
    feed(state, [(T0, None, GOOD), (T0 + 180, 1.0, GOOD)])
    for k in range(2, 40):
        state.update(T0 + 180 * k, None, MISSING)
    f = state.update(T0 + 180 * 40, 0.0, GOOD)  # the counter did not move: it did not rain
    assert not f.partial["60m"]
    assert f.totals["60m"] == 0.0


def test_a_bad_reading_is_a_hole() -> None:
    state = RainState(RainParams())
    f = feed(state, [(T0, None, GOOD), (T0 + 180, 2.0, GOOD), (T0 + 360, 99.0, BAD),
                     (T0 + 540, 1.0, GOOD)])
    assert f.totals["60m"] == 3.0
    assert f.partial["60m"]


def test_clock_hour_totals_follow_the_local_clock() -> None:
    # India is UTC+5:30: local hours start at hh:30 UTC
    state = RainState(RainParams(timezone="Asia/Kolkata"))
    start = T0 + 3600 + 1800 - 540  # 07:21 local (01:51 UTC)
    f = feed(state, [(start + 180 * k, None if k == 0 else 1.0, GOOD) for k in range(4)])
    assert f.totals["hour"] == 3.0  # 07:30 local closes the hour 06:30-07:30
    f = state.update(start + 180 * 4, 2.0, GOOD)  # 07:33 local: a new hour
    assert f.totals["hour"] == 2.0
    assert f.totals["60m"] == 5.0


def test_clock_start_closes_the_period_on_its_boundary() -> None:
    assert clock_start(T0, 3600, 0) == T0 - 3600  # at 10:00 the hour is 9-10
    assert clock_start(T0 + 1, 3600, 0) == T0
    assert clock_start(T0 + 1, 3600, 5.5 * 3600) == T0 - 1800


def test_a_storm_event_starts_after_the_dry_spell_and_ends_after_it() -> None:
    state = RainState(RainParams(dry_s=6 * 3600))
    f = feed(state, [(T0, None, GOOD), (T0 + 180, 0.0, GOOD), (T0 + 360, 3.0, GOOD)])
    assert f.totals["event"] == 3.0
    assert f.event_start == T0 + 360
    f = state.update(T0 + 360 + 5 * 3600, 2.0, GOOD)  # 5 h later: the same event
    assert f.totals["event"] == 5.0
    assert f.event_start == T0 + 360
    f = state.update(T0 + 360 + 11 * 3600 - 1, 0.0, GOOD)
    assert f.totals["event"] == 5.0  # not yet 6 h dry
    f = state.update(T0 + 360 + 11 * 3600, 0.0, GOOD)
    assert f.totals["event"] == 0.0  # 6 h without rain: the event is over
    assert f.event_start is None
    f = state.update(T0 + 360 + 12 * 3600, 1.0, GOOD)
    assert (f.totals["event"], f.event_start) == (1.0, T0 + 360 + 12 * 3600)


def test_effective_rainfall_halves_every_half_life() -> None:
    half = 1.5 * 3600
    state = RainState(RainParams(half_lives_s=(half, 72 * 3600)))
    feed(state, [(T0, None, GOOD), (T0 + 180, 10.0, GOOD)])
    f = state.update(T0 + 180 + half, 0.0, GOOD)
    assert f.totals["effective_short"] == pytest.approx(5.0)
    assert f.totals["effective_long"] == pytest.approx(10 * 0.5 ** (1.5 / 72))
    f = state.update(T0 + 180 + 10 * half, 0.0, GOOD)  # across a block boundary
    assert f.totals["effective_short"] == pytest.approx(10 * 0.5 ** 10)


def test_effective_rainfall_dates_a_long_gap_at_its_start() -> None:
    half = 1.5 * 3600
    state = RainState(RainParams(half_lives_s=(half, 72 * 3600)))
    state.update(T0, None, GOOD)
    f = state.update(T0 + 3 * 3600, 8.0, GOOD)  # 3 h of gap: at least that old
    assert f.totals["effective_short"] == pytest.approx(2.0)
    assert f.partial["effective_short"]
    assert f.totals["effective_long"] == pytest.approx(8.0)  # within the long half-life


@pytest.mark.parametrize(("timezone", "clock"), [("UTC", False), ("Asia/Tokyo", True),
                                                 ("Europe/Berlin", True),
                                                 ("Asia/Kolkata", True)])
def test_history_equals_reading_by_reading(timezone: str, clock: bool) -> None:
    """`rain_history` (replay) gives the bits `RainState.update` (the daemon) gives."""
    rng = np.random.default_rng(7)
    n = 4000
    step = rng.choice([180.0, 360.0, 3600.0, 7.5, 5400.0, 30000.0], size=n,
                      p=[.8, .06, .04, .04, .03, .03])
    t = T0 + 86400 * 90 + np.cumsum(step)  # through the end of March (Berlin's clock change)
    increment = np.round(rng.exponential(1.0, n) * (rng.random(n) < 0.3), 1)
    quality = rng.choice([0, 0, 0, 0, 1, 2, 3], size=n).astype(np.int8)
    increment[quality == 3] = np.nan
    increment[rng.random(n) < 0.01] = np.nan
    params = RainParams(window_s=1800.0 if clock else 3600.0, clock=clock, timezone=timezone)
    history = rain_history(t, increment, quality, params)
    state = RainState(params)
    by_code = {q.code: q for q in Quality}
    for j in range(n):
        mm = None if math.isnan(increment[j]) else float(increment[j])
        f = state.update(float(t[j]), mm, by_code[int(quality[j])])
        for name in QUANTITIES:
            assert f.totals[name] == history.totals[name][j], (j, name)
            assert f.partial[name] == history.partial[name][j], (j, name)
