"""Level: freeboard, rate of rise from a least-squares fit, minutes to the next stage."""

from __future__ import annotations

import numpy as np
import pytest

from gauged.alarm.level import LevelTrend, freeboard, minutes_to, rise_rates, round_like_python

T0 = 1_782_864_000.0


def test_freeboard_is_crest_minus_level() -> None:
    assert freeboard(4.60, 2.60) == pytest.approx(2.0)
    assert freeboard(4.60, 4.70) == pytest.approx(-0.1)  # over the wall


def test_rate_of_rise_is_the_slope_of_the_last_good_readings() -> None:
    trend = LevelTrend(readings=5, window_s=900)
    for k in range(6):
        trend.add(T0 + 180 * k, 1.0 + 0.05 * k)  # 5 cm per 3 minutes
    assert trend.rate(T0 + 900) == pytest.approx(1.0)  # m/h


def test_rate_needs_three_recent_readings() -> None:
    trend = LevelTrend(readings=5, window_s=900)
    trend.add(T0, 1.0)
    trend.add(T0 + 180, 1.1)
    assert trend.rate(T0 + 180) is None
    trend.add(T0 + 360, 1.2)
    assert trend.rate(T0 + 360) == pytest.approx(2.0)
    # 15 minutes on, only the last reading is recent enough
    trend.add(T0 + 1260, 1.2)
    assert trend.rate(T0 + 1260) is None


def test_rate_uses_only_the_last_n_readings_within_the_window() -> None:
    trend = LevelTrend(readings=3, window_s=900)
    for k, level in enumerate([1.0, 5.0, 1.0, 1.1, 1.2]):  # an old step, then a steady rise
        trend.add(T0 + 180 * k, level)
    assert trend.rate(T0 + 720) == pytest.approx(2.0)


def test_falling_gives_a_negative_rate() -> None:
    trend = LevelTrend()
    for k in range(5):
        trend.add(T0 + 180 * k, 3.0 - 0.01 * k)
    assert trend.rate(T0 + 720) == pytest.approx(-0.2)


def test_minutes_to_the_next_stage() -> None:
    assert minutes_to(2.5, 2.0, 1.0) == 30.0  # 0.5 m at 1 m/h
    assert minutes_to(1.9, 2.0, 1.0) == 0.0  # already there (not yet confirmed)
    assert minutes_to(2.5, 2.0, -0.3) is None  # falling
    assert minutes_to(2.5, 2.0, 0.0) is None  # flat
    assert minutes_to(2.5, 2.0, 0.0005) is None  # flat within 1 mm/h
    assert minutes_to(2.5, 2.0, None) is None


def test_rates_over_a_record_equal_the_daemon_s() -> None:
    rng = np.random.default_rng(3)
    n = 5000
    t = T0 + np.cumsum(rng.choice([180.0, 360.0, 7.0, 1000.0], size=n, p=[.85, .05, .05, .05]))
    level = np.cumsum(rng.normal(0, 0.02, n)) + 2.0
    good = rng.random(n) < 0.9
    for readings, window in ((5, 900.0), (3, 600.0), (8, 1800.0)):
        rates = rise_rates(t, level, good, readings, window)
        trend = LevelTrend(readings, window)
        for j in range(n):
            if good[j]:
                trend.add(float(t[j]), float(level[j]))
            live = trend.rate(float(t[j]))
            assert (np.isnan(rates[j]) if live is None else rates[j] == live), j


def test_round_like_python_is_python_s_round() -> None:
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(0, 3, 20000), np.round(rng.normal(0, 3, 20000), 7),
                        4.6 - np.round(rng.uniform(-1, 8, 20000), 3),
                        np.arange(-1, 1, 5e-7)[:20000] + 2.5e-7, [np.nan, 0.0, -1e-9]])
    got = round_like_python(x, 6)
    want = np.array([round(v, 6) for v in x.tolist()])
    assert np.array_equal(got, want, equal_nan=True)
    assert np.array_equal(np.signbit(got), np.signbit(want))
