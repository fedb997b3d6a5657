"""The simulators' clock: simulated time = start + (wall time − anchor) × speed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import pytest

from simulators.clock import SimClock

START = datetime(2024, 6, 1, 9, 0, tzinfo=UTC)


class Wall:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_formula_with_speed_start_and_anchor() -> None:
    wall = Wall(1_000.0)
    clock = SimClock(speed=60.0, start=START, anchor_unix=990.0, wall_time=wall)
    assert clock.elapsed() == pytest.approx(600.0)  # 10 wall seconds × 60
    assert clock.now() == START + timedelta(seconds=600)
    assert clock.timestamp() == pytest.approx(START.timestamp() + 600.0)
    wall.now = 1_003.0
    assert clock.elapsed() == pytest.approx(780.0)


def test_before_the_anchor_elapsed_is_negative() -> None:
    clock = SimClock(speed=2.0, start=START, anchor_unix=500.0, wall_time=Wall(490.0))
    assert clock.elapsed() == pytest.approx(-20.0)
    assert clock.now() == START - timedelta(seconds=20)


def test_defaults_start_now_and_anchor_now() -> None:
    wall = Wall(1_717_232_400.0)  # 2024-06-01T09:00:00Z
    clock = SimClock(speed=10.0, wall_time=wall)
    assert clock.start == START
    assert clock.anchor_unix == wall.now
    assert clock.elapsed() == 0.0
    wall.now += 1.5
    assert clock.elapsed() == pytest.approx(15.0)


def test_now_is_utc_aware_even_from_an_offset_start() -> None:
    tokyo = timezone(timedelta(hours=9))
    clock = SimClock(start=datetime(2024, 6, 1, 18, 0, tzinfo=tokyo), wall_time=Wall(0.0))
    assert clock.now().utcoffset() == timedelta(0)
    assert clock.now() == START + timedelta(hours=0)  # 18:00+09:00 is 09:00Z


def test_rejects_naive_start_and_bad_speed() -> None:
    with pytest.raises(ValueError, match="offset"):
        SimClock(start=datetime(2024, 6, 1, 9, 0))
    for speed in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="speed"):
            SimClock(speed=speed)


async def test_sleep_takes_simulated_seconds_divided_by_speed() -> None:
    clock = SimClock(speed=100.0)
    loop = asyncio.get_running_loop()
    before_wall, before_sim = loop.time(), clock.elapsed()
    await clock.sleep(5.0)  # 0.05 s of wall time
    assert loop.time() - before_wall >= 0.049
    assert clock.elapsed() - before_sim >= 4.9
    assert loop.time() - before_wall < 1.0
