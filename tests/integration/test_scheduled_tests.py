"""Scheduled siren tests (QUALITY SCH-1, SCH-2, SCH-3) against the relay board and audio sink
simulators, on an accelerated clock. Calendars are written for times a few simulated minutes
after the rig's start; the daemon is a process (`gauged run`), except for SCH-3, where it runs
in the test's event loop so that its wall clock can be stepped (the simulators stay
processes; tests/integration/test_sch_4_clock_step.py steps a daemon process).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import sqlite3
import struct
import time
import wave
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiomqtt
import pytest
import xmlschema
from hil import Rig
from services import Mosquitto, wait_until

from gauged.clock import Clock
from gauged.config.load import load_config
from gauged.daemon.daemon import Daemon

ROOT = Path(__file__).resolve().parents[2]
TOKYO = ZoneInfo("Asia/Tokyo")  # the reference gateway's time zone
GATEWAY = "minato-furukawa"


def crontab_at(*moments: datetime) -> str:
    """A daily crontab line firing at these local times (the minutes × hours it names must
    not add other fire times inside the test; true for moments less than an hour apart)."""
    local = [m.astimezone(TOKYO) for m in moments]
    minutes = ",".join(sorted({str(m.minute) for m in local}, key=int))
    hours = ",".join(sorted({str(m.hour) for m in local}, key=int))
    return f"{minutes} {hours} * * *"


def at(rig: Rig, minutes: float) -> datetime:
    return rig.start + timedelta(minutes=minutes)


def sim_time(status: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(status["time"])


@pytest.fixture
def rigs() -> Iterator[list[Rig]]:
    made: list[Rig] = []
    try:
        yield made
    finally:
        for rig in made:
            rig.close()


def relay_names(rig: Rig) -> dict[tuple[int, int], str]:
    config = load_config(rig.config)
    return {(r.unit, r.coil): f"{zid}.{role}" for zid, z in config.zones.items()
            for role, r in (("siren", z.siren_relay), ("amplifier", z.amplifier_relay))
            if r is not None}


def job_runs(rig: Rig, job: str) -> list[tuple[float, str]]:
    """(fire time, status) of every run of `job` the daemon stored."""
    with sqlite3.connect(f"file:{rig.state_path}?mode=ro", uri=True) as db:
        return list(db.execute("SELECT fire_time, status FROM job_runs WHERE job = ? "
                               "ORDER BY fire_time", (job,)))


def on_writes(rig: Rig, since: int = 0) -> list[tuple[int, int]]:
    return [(r["unit"], r["coil"]) for r in rig.relay_log()[since:] if r["value"]]


async def collect(port: int, topic: str, into: list[dict[str, Any]],
                  ready: asyncio.Event) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier="test-events") as client:
        await client.subscribe(topic, qos=1)
        ready.set()
        async for message in client.messages:
            into.append(json.loads(bytes(message.payload)))  # type: ignore[arg-type]


async def test_sch_1_silent_test_exercises_every_relay_silently_stored_and_published(
        tmp_path: Path, mosquitto: Mosquitto, rigs: list[Rig]) -> None:
    rig = Rig(tmp_path, speed=180.0, mqtt_port=mosquitto.port)
    rigs.append(rig)
    fire = at(rig, 12)  # four real seconds after the clock's start
    rig.edit_config(lambda text: text + f'\n[tests]\nsilent = "{crontab_at(fire)}"\n')
    events: list[dict[str, Any]] = []
    ready = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        listener = tg.create_task(collect(mosquitto.port, f"gauged/{GATEWAY}/event/test",
                                          events, ready))
        await asyncio.wait_for(ready.wait(), 10)
        await asyncio.to_thread(rig.start_simulators, _calm(tmp_path))
        rig.start_daemon()
        status = await asyncio.to_thread(
            rig.wait_for_status, lambda s: (s["tests"]["silent"]["last"] or {}).get(
                "status") is not None, rig.lead_s + 30, "the silent test's result")
        await asyncio.to_thread(wait_until, lambda: bool(events), 10, "the MQTT event")
        listener.cancel()
    assert rig.stop("daemon") == 0

    last = status["tests"]["silent"]["last"]
    assert last["status"] == "ok", last
    assert datetime.fromisoformat(last["fire_time"]) == fire
    names = relay_names(rig)
    entries = last["result"]["relays"]
    assert {e["relay"] for e in entries} == set(names.values())
    assert all(e["on"] and e["off"] and not e["error"] for e in entries)  # read back
    # the journal: each relay ON once, then OFF, one at a time; nothing played
    board: dict[tuple[int, int], bool] = {}
    for r in rig.relay_log():
        board[(r["unit"], r["coil"])] = r["value"]
        assert sum(board.values()) <= 1, f"two relays ON at once: {board}"
    assert sorted(on_writes(rig)) == sorted(names)
    assert rig.audio_log() == []  # nothing audible
    # stored …
    assert job_runs(rig, "silent") == [(fire.timestamp(), "ok")]
    # … and published
    assert [(e["job"], e["status"], e["fire_time"]) for e in events] == [
        ("silent", "ok", fire.isoformat())]
    assert events[0]["gateway"] == GATEWAY


def _calm(folder: Path) -> Path:
    path = folder / "calm.csv"
    path.write_text("time,station,quantity,value\n0,shin_hiroo,level_m,1.0\n"
                    "0,shirokane,level_m,1.0\n", encoding="utf-8")
    return path


def test_sch_2_restart_just_before_and_just_after_a_test_runs_each_once(
        tmp_path: Path, rigs: list[Rig]) -> None:
    rig = Rig(tmp_path, speed=180.0)  # a simulated minute is a third of a second
    rigs.append(rig)
    first, second = at(rig, 9), at(rig, 24)
    rig.edit_config(lambda text: text + f'\n[tests]\nsilent = "{crontab_at(first, second)}"\n')
    rig.start_simulators(_calm(tmp_path))
    rig.start_daemon()
    # just before the first fire time: killed, and back after it
    rig.wait_for_status(lambda s: sim_time(s) >= first - timedelta(minutes=1),
                        rig.lead_s + 20, "a minute before the first test")
    assert rig.kill("daemon") == -9
    assert job_runs(rig, "silent") == []
    rig.start_daemon()
    rig.wait_for_status(lambda s: (s["tests"]["silent"]["last"] or {}).get("status") == "ok",
                        20, "the first test, caught up after the restart")
    # just after the second one: killed as soon as it is recorded, and back
    rig.wait_for_status(lambda s: s["tests"]["silent"]["last"]["fire_time"] ==
                        second.isoformat(), 30, "the second test")
    assert rig.kill("daemon") == -9
    relays_before = len(rig.relay_log())
    rig.start_daemon()
    rig.wait_for_status(lambda s: sim_time(s) >= second + timedelta(minutes=6), 20,
                        "six minutes after the second test")
    assert rig.stop("daemon") == 0

    assert job_runs(rig, "silent") == [(first.timestamp(), "ok"), (second.timestamp(), "ok")]
    with sqlite3.connect(f"file:{rig.state_path}?mode=ro", uri=True) as db:
        started = dict(db.execute("SELECT fire_time, started FROM job_runs"))
    assert started[first.timestamp()] > first.timestamp()  # down at its fire time: caught up
    assert started[second.timestamp()] - second.timestamp() < 60  # on time
    names = relay_names(rig)
    assert sorted(on_writes(rig)) == sorted(list(names) * 2)  # each relay: one ON per test
    assert on_writes(rig, relays_before) == []  # nothing after the last restart
    log = rig.log("daemon")
    assert log.count("test silent start") == 2
    assert "already ran: not run again" not in log  # nothing even tried twice


def write_chime(path: Path, seconds: float = 1.0, rate: int = 8000) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(
            struct.pack("<h", int(8000 * math.sin(2 * math.pi * 880 * i / rate)))
            for i in range(int(seconds * rate))))


def test_audible_test_plays_the_chime_with_the_amplifier_on(tmp_path: Path,
                                                            rigs: list[Rig]) -> None:
    rig = Rig(tmp_path, speed=180.0)
    rigs.append(rig)
    write_chime(tmp_path / "chime.wav")
    fire = at(rig, 9)
    rig.edit_config(lambda text: text + (
        f'\n[clips.chime]\nfile = "{tmp_path / "chime.wav"}"\n'
        f'\n[tests]\naudible = "{crontab_at(fire)}"\naudible_clip = "chime"\n'
        'audible_zones = ["ward"]\n'))
    rig.start_simulators(_calm(tmp_path))
    rig.start_daemon()
    status = rig.wait_for_status(
        lambda s: (s["tests"]["audible"]["last"] or {}).get("status") is not None,
        rig.lead_s + 20, "the audible test's result")
    assert rig.stop("daemon") == 0
    assert status["tests"]["audible"]["last"]["status"] == "ok"
    [played] = rig.audio_log()
    assert (played["zone"], played["clip"]) == ("ward", "chime")
    ward_amp = (1, 5)
    writes = [(r["unit"], r["coil"], r["value"]) for r in rig.relay_log()]
    assert on_writes(rig) == [ward_amp]  # the ward's amplifier only, nothing else
    on = writes.index((*ward_amp, True))
    assert writes[on + 1] == (*ward_amp, False)  # OFF right after the clip
    t_on = next(r["t_real"] for r in rig.relay_log() if r["value"])
    assert t_on < played["t_real"]  # the amplifier was ON before the chime started
    # the public heard it: a CAP Exercise says it was a test (gauged/alarm/cap.py)
    [exercise] = (rig.state_path.parent / "cap").glob("*.test.audible.*.xml")
    document = exercise.read_text(encoding="utf-8")
    xmlschema.validate(document, ROOT / "tests" / "data" / "cap-1.2-structure.xsd")
    assert "<status>Exercise</status>" in document
    assert "<areaDesc>区内全域</areaDesc>" in document  # the ward zone it played on


async def test_sch_3_wall_clock_stepped_an_hour_each_way_cycles_and_tests_follow_it(
        tmp_path: Path, rigs: list[Rig], caplog: pytest.LogCaptureFixture) -> None:
    """±1 h: cycles follow the stepped clock at their real pace (one interval apart, none
    repeated or lost), the scheduled tests run no fire time twice, the steps are logged once
    each (QUALITY SCH-3; gauged/daemon/timeline.py)."""
    rig = Rig(tmp_path, speed=600.0)  # a cycle every 0.3 s, a test every second
    rigs.append(rig)
    rig.edit_config(lambda text: text + '\n[tests]\nsilent = "*/10 * * * *"\n')
    await asyncio.to_thread(rig.start_simulators, _calm(tmp_path))
    config = load_config(rig.config)
    step = [0.0]  # seconds added to the system clock
    clock = Clock(config.clock.speed, config.clock.start, config.clock.anchor_unix,
                  wall=lambda: time.time() + step[0])
    stamps: list[datetime] = []

    class Recording(Daemon):
        async def cycle(self, when: datetime) -> Any:
            stamps.append(when)
            return await super().cycle(when)

    daemon = Recording(config, clock)
    one_hour = 3600.0 / clock.speed  # an hour of the simulated world's wall clock

    async def runs(n: int) -> None:
        deadline = time.monotonic() + 20
        while daemon.tests is None or daemon.tests.status["silent"].runs < n:
            assert time.monotonic() < deadline, f"timed out waiting for {n} tests"
            await asyncio.sleep(0.01)

    with caplog.at_level(logging.INFO, "gauged"):
        async with asyncio.TaskGroup() as tg:
            running = tg.create_task(daemon.run(), name="test[daemon].run")
            await runs(2)
            step[0] = one_hour  # stepped forward an hour …
            await runs(4)
            step[0] = 0.0  # … and back an hour
            await runs(6)
            daemon.stop()
            await running
    with sqlite3.connect(f"file:{rig.state_path}?mode=ro", uri=True) as db:
        stored = list(db.execute("SELECT fire_time, status FROM job_runs WHERE job = ? "
                                 "ORDER BY started", ("silent",)))
    fire_times = [t for t, _ in stored]
    assert len(fire_times) >= 6
    assert all(a < b for a, b in itertools.pairwise(fire_times))  # none twice, in order
    assert {status for _, status in stored} == {"ok"}
    # every cycle one interval after the last at the real pace: across each step the stamps
    # move by the step, once each way; nothing repeated, nothing lost
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(stamps)]
    assert sorted(set(gaps)) == [180.0 - 3600.0, 180.0, 180.0 + 3600.0]
    assert gaps.count(180.0 + 3600.0) == gaps.count(180.0 - 3600.0) == 1
    assert gaps.index(180.0 + 3600.0) < gaps.index(180.0 - 3600.0)
    messages = [r.getMessage() for r in caplog.records]
    steps = [m for m in messages if m.startswith("wall clock stepped")]
    assert [m.split(" s ")[0].split()[-1] for m in steps] == ["+3600", "-3600"]
    assert len([m for m in messages if m.startswith("alarm history re-dated")]) == 2
    assert "cycle skipped" not in caplog.text
    assert "already ran" not in caplog.text
