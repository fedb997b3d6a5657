"""Rain: counters to increments (rollover, reset), rolling 60-minute totals."""

from __future__ import annotations

import pytest

from gauged.rain import CounterTracker, RainWindow


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
