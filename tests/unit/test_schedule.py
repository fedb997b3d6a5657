"""Scheduled tests' calendars (gauged/field/prooftests.py): crontab weekdays, misfire grace,
coalescing, one run per fire time across restarts, and a stepped wall clock.

The calendars run on real `Clock`s, accelerated; the test itself is a stand-in (the tests
against relays and players are in tests/integration/test_scheduled_tests.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gauged.clock import Clock
from gauged.config.cron import cron_trigger, plan
from gauged.config.load import load_config
from gauged.errors import ConfigError
from gauged.field.prooftests import Job, ProofTestNotStarted, ProofTestScheduler
from gauged.store.state import StateStore

TOKYO = ZoneInfo("Asia/Tokyo")
SUNDAY = datetime(2026, 7, 5, 12, 0, tzinfo=TOKYO)  # a Sunday
ROOT = Path(__file__).resolve().parents[2]


def fires(expr: str, n: int, start: datetime = SUNDAY) -> list[datetime]:
    trigger = cron_trigger(expr, "Asia/Tokyo")
    out: list[datetime] = []
    t = trigger.get_next_fire_time(None, start)
    while t is not None and len(out) < n:
        out.append(t)
        t = trigger.get_next_fire_time(None, t + timedelta(microseconds=1))
    return out


def test_weekdays_count_from_sunday_as_in_crontab() -> None:
    # APScheduler 3's from_crontab would make "1" a Tuesday
    assert [t.strftime("%a %H:%M") for t in fires("0 10 * * 1", 2)] == ["Mon 10:00"] * 2
    assert fires("0 10 * * 1", 1)[0] == datetime(2026, 7, 6, 10, 0, tzinfo=TOKYO)
    assert {t.strftime("%a") for t in fires("0 10 * * 0", 3)} == {"Sun"}
    assert {t.strftime("%a") for t in fires("0 10 * * 7", 3)} == {"Sun"}
    assert [t.strftime("%a") for t in fires("30 9 * * 1-5", 5)] == [
        "Mon", "Tue", "Wed", "Thu", "Fri"]
    assert [t.strftime("%a") for t in fires("0 0 * * */2", 4)] == ["Tue", "Thu", "Sat", "Sun"]
    assert [t.strftime("%a") for t in fires("0 0 * * sat,sun", 2)] == ["Sat", "Sun"]
    assert [t.strftime("%a") for t in fires("0 0 * * 5-7", 3)] == ["Fri", "Sat", "Sun"]


def test_calendars_are_in_the_gateway_time_zone() -> None:
    first = fires("0 17 * * *", 1)[0]
    assert first.utcoffset() == timedelta(hours=9)
    assert first.hour == 17


@pytest.mark.parametrize("expr", ["0 10 * *", "0 10 * * 8", "0 25 * * *", "0 10 1 * 1",
                                  "0 10 * * 5-1", "x 10 * * *"])
def test_bad_calendars_are_refused(expr: str) -> None:
    with pytest.raises(ValueError, match=r"0 10|x 10|0 25"):
        cron_trigger(expr, "Asia/Tokyo")


def test_config_refuses_a_bad_calendar_naming_the_field(tmp_path: Path) -> None:
    text = (ROOT / "config" / "minato-furukawa.toml").read_text(encoding="utf-8")
    text = text.replace('file = "clips/', f'file = "{ROOT}/config/clips/')
    path = tmp_path / "g.toml"
    path.write_text(text + '\n[tests]\nsilent = "0 10 * * 9"\naudible = "0 17 * * *"\n'
                    'audible_clip = "chime"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert any("tests: silent: '0 10 * * 9'" in p for p in err.value.problems)
    assert any("tests: audible_clip: unknown clip 'chime'" in p for p in err.value.problems)


def test_plan_splits_fire_times_by_misfire_grace_and_gives_the_next() -> None:
    trigger = cron_trigger("0 * * * *", "Asia/Tokyo")  # hourly
    now = datetime(2026, 7, 6, 10, 30, tzinfo=TOKYO)
    p = plan(trigger, after=now - timedelta(hours=5), now=now, grace_s=2 * 3600 + 1)
    assert [t.hour for t in p.due] == [9, 10]  # 8:30 and older: beyond the grace
    assert p.first_missed is not None
    assert p.first_missed.hour == 6
    assert p.next == datetime(2026, 7, 6, 11, 0, tzinfo=TOKYO)
    p = plan(trigger, after=datetime(2026, 7, 6, 10, 0, tzinfo=TOKYO), now=now, grace_s=1e9)
    assert p.due == []  # 10:00 is dealt with already
    assert p.first_missed is None


# ---- the scheduler on an accelerated clock -------------------------------------------

class Runs:
    """A stand-in test: records when it ran; `hold` makes it wait until released."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.calls: list[tuple[str, datetime]] = []
        self.hold = False
        self.release = asyncio.Event()

    async def __call__(self, job: str) -> dict[str, Any]:
        self.calls.append((job, self.clock.now()))
        if self.hold:
            await self.release.wait()
        return {"ok": True}


async def until(condition: Callable[[], bool], within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within_s:g} s waiting for {what}")
        await asyncio.sleep(0.005)


def clock_at(local: str, speed: float, wall: Callable[[], float] = time.time) -> Clock:
    return Clock(speed, datetime.fromisoformat(local).replace(tzinfo=TOKYO), wall=wall)


@contextlib.asynccontextmanager
async def following(scheduler: ProofTestScheduler) -> AsyncIterator[ProofTestScheduler]:
    task = asyncio.create_task(scheduler.run(), name="test[tests].schedule")
    try:
        yield scheduler
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def scheduler(store: StateStore, clock: Clock, runs: Runs, calendar: str = "0 10 * * *",
              grace_s: float = 6 * 3600, busy: Callable[[], list[str]] = list,
              name: str = "silent") -> ProofTestScheduler:
    job = Job(name, calendar, cron_trigger(calendar, "Asia/Tokyo"), grace_s)
    return ProofTestScheduler([job], clock, store, run=runs, busy=busy)


def next_is(s: ProofTestScheduler, local: str, job: str = "silent") -> Callable[[], bool]:
    want = datetime.fromisoformat(local).replace(tzinfo=TOKYO)
    return lambda: s.status[job].next == want


async def test_sch_2_a_restart_just_after_a_test_does_not_run_it_again(tmp_path: Path) -> None:
    with StateStore.open(tmp_path / "s.sqlite3") as store:
        clock = clock_at("2026-07-06T09:59:50", 100.0)  # 10 s before the fire time
        runs = Runs(clock)
        async with following(scheduler(store, clock, runs)) as s:
            await until(lambda: s.status["silent"].runs == 1, 5.0, "the 10:00 run")
        clock = clock_at("2026-07-06T10:00:30", 100.0)  # restarted 30 s after
        again = Runs(clock)
        async with following(scheduler(store, clock, again)) as s:
            await until(next_is(s, "2026-07-07T10:00"), 5.0, "waiting for tomorrow")
        assert [job for job, _ in runs.calls] == ["silent"]
        assert again.calls == []
        assert [(r.fire_time, r.status) for r in store.job_runs("silent")] == [
            (datetime(2026, 7, 6, 10, 0, tzinfo=TOKYO).timestamp(), "ok")]


async def test_sch_2_a_restart_across_the_fire_time_runs_it_once(tmp_path: Path) -> None:
    with StateStore.open(tmp_path / "s.sqlite3") as store:
        clock = clock_at("2026-07-06T09:59:00", 100.0)
        runs = Runs(clock)
        async with following(scheduler(store, clock, runs)) as s:  # armed, then stopped
            await until(next_is(s, "2026-07-06T10:00"), 5.0, "armed")
        assert runs.calls == []
        clock = clock_at("2026-07-06T10:01:00", 100.0)  # back a minute after 10:00
        runs = Runs(clock)
        async with following(scheduler(store, clock, runs)) as s:
            await until(next_is(s, "2026-07-07T10:00"), 5.0, "the catch-up, then tomorrow")
        assert len(runs.calls) == 1
        assert runs.calls[0][1] < datetime(2026, 7, 6, 10, 2, tzinfo=TOKYO)  # at once
        assert [r.status for r in store.job_runs("silent")] == ["ok"]


async def test_a_first_start_after_the_fire_time_does_not_catch_up(tmp_path: Path) -> None:
    with StateStore.open(tmp_path / "s.sqlite3") as store:
        clock = clock_at("2026-07-06T10:05:00", 100.0)  # never armed before
        runs = Runs(clock)
        async with following(scheduler(store, clock, runs)) as s:
            await until(next_is(s, "2026-07-07T10:00"), 5.0, "tomorrow")
        assert runs.calls == []


async def test_missed_fire_times_are_coalesced_into_one_run(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cal = "*/15 * * * *"
    with StateStore.open(tmp_path / "s.sqlite3") as store, \
            caplog.at_level(logging.INFO, "gauged.field.prooftests"):
        clock = clock_at("2026-07-06T08:59:00", 100.0)
        async with following(scheduler(store, clock, Runs(clock), cal)) as s:
            await until(next_is(s, "2026-07-06T09:00"), 5.0, "armed")
        clock = clock_at("2026-07-06T10:07:00", 100.0)  # 09:00 … 10:00 were missed
        runs = Runs(clock)
        async with following(scheduler(store, clock, runs, cal)) as s:
            await until(next_is(s, "2026-07-06T10:15"), 5.0, "the next quarter")
        assert len(runs.calls) == 1
        assert [datetime.fromtimestamp(r.fire_time, TOKYO).strftime("%H:%M")
                for r in store.job_runs("silent")] == ["10:00"]
        assert "5 missed fire times coalesced into one run" in caplog.text


async def test_a_fire_time_older_than_the_grace_is_missed_not_run(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with StateStore.open(tmp_path / "s.sqlite3") as store, \
            caplog.at_level(logging.WARNING, "gauged.field.prooftests"):
        clock = clock_at("2026-07-06T16:59:00", 100.0)
        async with following(scheduler(store, clock, Runs(clock), "0 17 * * *", 600.0,
                                       name="audible")) as s:
            await until(next_is(s, "2026-07-06T17:00", "audible"), 5.0, "armed")
        clock = clock_at("2026-07-06T17:30:00", 100.0)  # the chime would be 30 min late
        runs = Runs(clock)
        async with following(scheduler(store, clock, runs, "0 17 * * *", 600.0,
                                       name="audible")) as s:
            await until(next_is(s, "2026-07-07T17:00", "audible"), 5.0, "tomorrow")
        assert runs.calls == []
        assert "missed its fire time 2026-07-06T17:00:00+09:00" in caplog.text


async def test_a_test_is_skipped_while_a_zone_broadcasts(tmp_path: Path) -> None:
    with StateStore.open(tmp_path / "s.sqlite3") as store:
        clock = clock_at("2026-07-06T09:59:58", 100.0)
        runs = Runs(clock)
        async with following(scheduler(store, clock, runs, busy=lambda: ["ward"])) as s:
            await until(lambda: s.status["silent"].runs == 1, 5.0, "the 10:00 fire time")
        assert runs.calls == []
        run = store.last_job_run("silent")
        assert run is not None
        assert (run.status, run.result) == ("skipped", {"reason": "broadcasting",
                                                        "zones": ["ward"]})


async def test_a_fire_time_while_a_test_on_command_runs_is_skipped(tmp_path: Path) -> None:
    """The runner refuses a second test (gauged/field/prooftests.py): the fire time is
    recorded `skipped` with the runner's reason, not `failed`."""
    async def refuse(job: str) -> dict[str, Any]:
        raise ProofTestNotStarted("a test is running (audible)")

    with StateStore.open(tmp_path / "s.sqlite3") as store:
        clock = clock_at("2026-07-06T09:59:58", 100.0)
        job = Job("silent", "0 10 * * *", cron_trigger("0 10 * * *", "Asia/Tokyo"), 3600)
        async with following(ProofTestScheduler([job], clock, store, run=refuse,
                                                busy=list)) as s:
            await until(lambda: s.status["silent"].runs == 1, 5.0, "the 10:00 fire time")
        run = store.last_job_run("silent")
        assert run is not None
        assert (run.status, run.result) == ("skipped",
                                            {"reason": "a test is running (audible)"})


async def test_an_alarm_aborts_a_running_test(tmp_path: Path) -> None:
    with StateStore.open(tmp_path / "s.sqlite3") as store:
        clock = clock_at("2026-07-06T09:59:58", 100.0)
        runs = Runs(clock)
        runs.hold = True
        async with following(scheduler(store, clock, runs)) as s:
            await until(lambda: bool(runs.calls), 5.0, "the test to start")
            await s.abort("alarm broadcast")
            await until(lambda: s.status["silent"].runs == 1, 5.0, "the result")
        run = store.last_job_run("silent")
        assert run is not None
        assert (run.status, run.result) == ("aborted", {"reason": "alarm broadcast"})


class Stepping(Runs):
    """A stand-in test that steps the wall clock when the run of a given fire time is under
    way, or two simulated minutes after it ended (while the calendar waits for the next
    fire time): the step lands at a known place in the calendar."""

    def __init__(self, clock: Clock, offset: list[float], steps: dict[str, float], *,
                 between_runs: bool) -> None:
        super().__init__(clock)
        self.offset = offset
        self.steps = steps  # local "HH:MM" of the run → simulated seconds
        self.between_runs = between_runs

    def step(self, seconds: float) -> None:
        self.offset[0] += seconds / self.clock.speed

    async def __call__(self, job: str) -> dict[str, Any]:
        result = await super().__call__(job)
        fired = self.clock.now().astimezone(TOKYO).strftime("%H:%M")
        if fired in self.steps:
            seconds = self.steps.pop(fired)
            if self.between_runs:
                asyncio.get_running_loop().call_later(120.0 / self.clock.speed, self.step,
                                                      seconds)
            else:
                self.step(seconds)
        return result


def local(ts: float) -> str:
    return datetime.fromtimestamp(ts, TOKYO).strftime("%H:%M")


@pytest.mark.parametrize("between_runs", [False, True])
async def test_sch_3_calendar_follows_steps_of_the_wall_clock_and_runs_no_fire_time_twice(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, between_runs: bool) -> None:
    """+65 min over six fire times: they run once, as the latest, late and logged; −65 min
    back over fire times already run: none runs again, the calendar goes on from where it
    was (QUALITY SCH-3, SCH-4). The steps come during a run, or between runs."""
    offset = [0.0]
    clock = clock_at("2026-07-06T09:55:00", 6000.0,  # 10 simulated minutes per 0.1 s
                     wall=lambda: time.time() + offset[0])
    runs = Stepping(clock, offset, {"10:20": 65 * 60.0, "11:40": -65 * 60.0},
                    between_runs=between_runs)
    with StateStore.open(tmp_path / "s.sqlite3") as store, \
            caplog.at_level(logging.INFO, "gauged.field.prooftests"):
        async with following(scheduler(store, clock, runs, "*/10 * * * *")) as s:
            await until(lambda: s.status["silent"].runs >= 9, 10.0, "nine runs")
        runs_stored = sorted(store.job_runs("silent"), key=lambda r: r.started)
    fired = [local(r.fire_time) for r in runs_stored]
    assert fired[:9] == ["10:00", "10:10", "10:20", "11:20", "11:30", "11:40", "11:50",
                         "12:00", "12:10"]  # none twice, in order, 10:30 … 11:10 as 11:20
    assert {r.status for r in runs_stored} == {"ok"}
    assert clock.skew() == pytest.approx(0.0, abs=1.0)
    assert "6 missed fire times coalesced into one run" in caplog.text
    assert re.search(r"test silent for 2026-07-06T11:20:00\+09:00 runs late by \d+ s",
                     caplog.text)
    assert "already ran" not in caplog.text  # nothing was even attempted twice
    assert "dropped" not in caplog.text


async def test_fire_times_that_pass_while_a_test_runs_are_dropped(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # 1 simulated minute per 0.1 s: the release below has half a second before 10:30, so a
    # loaded machine cannot make it late
    clock = clock_at("2026-07-06T09:59:00", 600.0)
    runs = Runs(clock)
    runs.hold = True
    with StateStore.open(tmp_path / "s.sqlite3") as store, \
            caplog.at_level(logging.WARNING, "gauged.field.prooftests"):
        async with following(scheduler(store, clock, runs, "*/10 * * * *")) as s:
            await until(lambda: bool(runs.calls), 5.0, "the 10:00 test")
            await until(lambda: clock.now() >= datetime(2026, 7, 6, 10, 25, tzinfo=TOKYO),
                        10.0, "10:25")  # 10:10 and 10:20 came due meanwhile
            runs.hold = False
            runs.release.set()
            await until(lambda: s.status["silent"].runs == 2, 10.0, "the next test")
        fired = [datetime.fromtimestamp(r.fire_time, TOKYO).strftime("%H:%M")
                 for r in store.job_runs("silent")]
    assert fired == ["10:00", "10:30"]
    assert "2 fire time(s) came due while it ran: dropped (max_instances=1)" in caplog.text
