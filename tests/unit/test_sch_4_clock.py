"""The daemon's clock follows steps of the wall clock (QUALITY SCH-4): gauged/clock.py reads
the wall clock every time and notices a step; gauged/daemon/timeline.py keeps the cycles'
real pace across it.

The clock is injected: a wall clock the test steps, and for the timer an accelerated clock
(a 3-minute cycle in 0.3 s), so nothing waits on real minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gauged.clock import Clock, OffsetWall, nearest_boundary, next_boundary
from gauged.daemon.timeline import CycleTimer

T0 = datetime(2026, 7, 6, 1, 0, tzinfo=UTC)  # a cycle boundary
HOUR = 3600.0
INTERVAL = 180.0


class Hands:
    """A wall clock and a monotonic clock the test moves by hand."""

    def __init__(self, wall: float) -> None:
        self.wall_now, self.mono_now = wall, 1000.0

    def wall(self) -> float:
        return self.wall_now

    def mono(self) -> float:
        return self.mono_now

    def tick(self, seconds: float) -> None:
        self.wall_now += seconds
        self.mono_now += seconds


def test_sch_4_the_clock_reads_the_wall_clock_each_time_and_notices_a_step_once(
        caplog: pytest.LogCaptureFixture) -> None:
    hands = Hands(T0.timestamp() - 3 * HOUR)  # booted three hours behind
    clock = Clock(wall=hands.wall, monotonic=hands.mono)
    assert clock.timestamp() == T0.timestamp() - 3 * HOUR
    hands.tick(60.0)
    assert clock.timestamp() == T0.timestamp() - 3 * HOUR + 60.0
    with caplog.at_level(logging.WARNING, "gauged.clock"):
        hands.wall_now += 3 * HOUR  # NTP steps it
        assert clock.now() == datetime.fromtimestamp(T0.timestamp() + 60.0, UTC)
        for _ in range(5):
            hands.tick(1.0)
            clock.timestamp()
    [step] = clock.steps
    assert step.seconds == pytest.approx(3 * HOUR)
    assert step.after - step.before == pytest.approx(3 * HOUR)
    assert step.after == pytest.approx(T0.timestamp() + 60.0)
    assert clock.skew() == pytest.approx(3 * HOUR)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once, at WARNING
    assert warnings[0].startswith("wall clock stepped by +10800 s")
    # durations are measured on the monotonic clock: the step is no part of them
    assert clock.monotonic() == pytest.approx(65.0)


def test_sch_4_slewing_is_not_a_step() -> None:
    hands = Hands(T0.timestamp())
    clock = Clock(wall=hands.wall, monotonic=hands.mono)
    for _ in range(600):  # ten minutes slewed at 500 ppm (NTP's limit): 0.3 s in all
        hands.tick(1.0)
        hands.wall_now += 0.0005
        clock.timestamp()
    assert clock.steps == []
    hands.wall_now -= 0.6  # a step of 0.6 s back is one
    clock.timestamp()
    assert [round(s.seconds, 3) for s in clock.steps] == [-0.6]


def test_sch_4_an_accelerated_clock_steps_by_simulated_seconds() -> None:
    hands = Hands(5000.0)
    clock = Clock(600.0, T0, anchor_unix=5000.0, wall=hands.wall, monotonic=hands.mono)
    hands.tick(1.0)
    assert clock.timestamp() == T0.timestamp() + 600.0
    hands.wall_now += 6.0  # an hour of the simulated world
    assert clock.timestamp() == T0.timestamp() + 600.0 + HOUR
    assert [s.seconds for s in clock.steps] == [HOUR]


async def test_sch_4_sleep_until_returns_early_when_the_clock_steps_back() -> None:
    offset = [0.0]
    clock = Clock(600.0, T0, wall=lambda: time.time() + offset[0])
    target = T0.timestamp() + INTERVAL  # 0.3 s away
    stepper = asyncio.get_running_loop().call_later(0.1, offset.__setitem__, 0, -HOUR / 600)
    t0 = time.monotonic()
    async with asyncio.timeout(5):  # without the early return: an hour (6 real seconds)
        assert await clock.sleep_until(target) is False
    stepper.cancel()
    assert time.monotonic() - t0 < 1.0
    assert clock.timestamp() < target - HOUR + INTERVAL
    assert await clock.sleep_until(clock.timestamp() + 30.0) is True  # no step: True


def test_sch_4_the_test_hook_reads_the_offset_when_the_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "offset"
    path.write_text("-10800\n", encoding="utf-8")
    wall = OffsetWall(path, wall=lambda: 50_000.0)
    assert wall() == 50_000.0 - 10800
    tmp = tmp_path / "offset.new"
    tmp.write_text("0", encoding="utf-8")
    tmp.replace(path)
    assert wall() == 50_000.0
    path.unlink()  # unreadable: the last offset stays
    assert wall() == 50_000.0


def test_boundaries() -> None:
    assert next_boundary(360.0, INTERVAL) == 360.0
    assert next_boundary(360.5, INTERVAL) == 540.0
    assert nearest_boundary(449.0, INTERVAL) == 360.0
    assert nearest_boundary(450.0, INTERVAL) == 540.0
    assert nearest_boundary(-10620.0 + 360.0, INTERVAL) == -10260.0


# ---- the cycle timer on an accelerated clock ------------------------------------------

SPEED = 600.0  # a cycle every 0.3 s


@contextlib.asynccontextmanager
async def cycles(offset: list[float], n: int, step_after: int, step: float, *,
                 while_waiting: bool) -> AsyncIterator[tuple[list[float], list[float],
                                                             list[float]]]:
    """Runs `n` cycles of a CycleTimer on a clock starting at T0; after cycle `step_after`
    the wall clock steps by `step` simulated seconds, at once or while the timer waits.
    Yields (cycle stamps, monotonic simulated seconds of each cycle, steps followed)."""
    clock = Clock(SPEED, T0, time.time(), wall=lambda: time.time() + offset[0])
    followed: list[float] = []
    timer = CycleTimer(clock, INTERVAL, followed.append)
    stamps: list[float] = []
    mono: list[float] = []
    async with asyncio.timeout(30):
        for i in range(n):
            when = await timer.wait()
            stamps.append(when.timestamp())
            mono.append(clock.monotonic())
            if i == step_after:
                if while_waiting:  # a third into the wait for the next cycle
                    asyncio.get_running_loop().call_later(
                        INTERVAL / 3 / SPEED, offset.__setitem__, 0, offset[0] + step / SPEED)
                else:
                    offset[0] += step / SPEED
            timer.ran(when)
    yield stamps, mono, followed


@pytest.mark.parametrize("while_waiting", [False, True])
# (at 600 × real time a step must be 300 simulated seconds to be 0.5 real ones: STEP_MIN_S)
@pytest.mark.parametrize("step", [3 * HOUR, -3 * HOUR, 1000.0, -700.0, 7 * HOUR + 17.0])
async def test_sch_4_cycles_follow_a_step_with_none_repeated_or_skipped(
        step: float, while_waiting: bool) -> None:
    offset = [0.0]
    async with cycles(offset, 7, 2, step, while_waiting=while_waiting) as (stamps, mono,
                                                                           followed):
        pass
    assert followed == [pytest.approx(step)]  # the history re-dated once, by the step
    assert all(s % INTERVAL == 0 for s in stamps)  # boundaries of the clock as it reads
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    # before and after the step, one interval; across it, the step plus the real pace
    assert gaps[:2] == [INTERVAL, INTERVAL]
    assert gaps[3:] == [INTERVAL] * 3
    real_gap = gaps[2] - step
    if step % INTERVAL == 0:
        assert real_gap == INTERVAL
    else:
        assert INTERVAL / 2 <= real_gap <= 1.5 * INTERVAL
        assert gaps[2] == nearest_boundary(stamps[2] + step + INTERVAL, INTERVAL) - stamps[2]
    # the real pace: nothing read twice in quick succession, no interval without a reading
    # (monotonic time, with room for a loaded machine's scheduling)
    real = [b - a for a, b in itertools.pairwise(mono)]
    assert min(real) >= INTERVAL / 2 - 30
    assert max(real) <= 1.5 * INTERVAL + 60


async def test_sch_4_booted_three_hours_behind_then_ntp_steps_it(
        caplog: pytest.LogCaptureFixture) -> None:
    offset = [-3 * HOUR / SPEED]  # the wall clock reads three hours behind T0
    with caplog.at_level(logging.INFO, "gauged"):
        async with cycles(offset, 5, 1, 3 * HOUR, while_waiting=True) as (stamps, _, _):
            pass
    behind = T0.timestamp() - 3 * HOUR
    assert stamps == [behind + INTERVAL, behind + 2 * INTERVAL, T0.timestamp() + 3 * INTERVAL,
                      T0.timestamp() + 4 * INTERVAL, T0.timestamp() + 5 * INTERVAL]
    assert "cycle skipped" not in caplog.text
    assert "cycle late" not in caplog.text
    assert caplog.text.count("wall clock stepped by +10800 s") == 1


# ---- what else a step re-dates, and a start on a clock behind the state store ------------

def test_sch_4_an_inhibit_lasts_as_long_as_it_was_given_across_a_step(tmp_path: Path) -> None:
    from gauged.config.load import load_config
    from gauged.ops.inhibits import Inhibits
    from gauged.store.state import StateStore

    config = load_config(Path(__file__).resolve().parents[2] / "config" /
                         "minato-furukawa.toml")
    now = [T0.timestamp() - 3 * HOUR]  # booted behind
    with StateStore.open(tmp_path / "state.sqlite3") as store:
        inhibits = Inhibits(config, store, lambda: now[0])
        inhibits.add("zone", "furukawa_hiroo", minutes=120, reason="speaker repair")
        now[0] += 10 * 60 + 3 * HOUR  # ten minutes later NTP steps the clock forward
        inhibits.shift(3 * HOUR)
        assert inhibits.expire() == []  # not cut short by the step
        assert inhibits.zone_inhibited("furukawa_hiroo")
        now[0] += 109 * 60
        assert inhibits.expire() == []
        now[0] += 61
        assert [i.target for i in inhibits.expire()] == ["furukawa_hiroo"]


def test_sch_4_a_start_on_a_clock_behind_the_state_store_restores_stages_not_rain(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from gauged.alarm.quality import Quality
    from gauged.config.load import load_config
    from gauged.daemon.daemon import Daemon
    from gauged.store.state import StateStore

    config = load_config(Path(__file__).resolve().parents[2] / "config" /
                         "minato-furukawa.toml")
    rain = next(sid for sid, st in config.stations.items() if st.kind == "rain")
    last = T0.timestamp()
    with StateStore.open(tmp_path / "state.sqlite3") as store:  # the last run, clock right
        for k in range(10):
            store.save_cycle(last - (9 - k) * INTERVAL, stages={} if k < 9 else {
                "shin_hiroo": (3, last - 5 * INTERVAL)}, counters={},
                rain=[(rain, 4.0, Quality.GOOD)])
    daemon = Daemon(config, Clock(start=datetime.fromtimestamp(last + 60 - 3 * HOUR, UTC)))
    with StateStore.open(tmp_path / "state.sqlite3") as store, \
            caplog.at_level(logging.WARNING, "gauged.daemon.restore"):
        daemon.keeper.restore(store, last + 60 - 3 * HOUR)  # rebooted, three hours behind
    assert daemon.engine.stages["shin_hiroo"] == 3  # restored without re-sounding …
    assert daemon.engine.machines["shin_hiroo"].entered is None  # … its entry time unknown
    figures = daemon.engine.rain[rain].update(last + 240 - 3 * HOUR, 0.0, Quality.GOOD)
    assert figures.totals["60m"] == 0.0  # no rain from "the future" counted …
    assert figures.partial["60m"]  # … and the total is a lower bound: it cannot lower a stage
    assert "is 10740 s ahead of the clock" in caplog.text
