"""SCH-4 through the daemon process: the gateway boots 3 h behind, then NTP steps its clock.

Stepping the machine's clock needs root and would disturb every other process, so the daemon
runs with the test-only hook `[test_hooks] wall_offset_file` (gauged/clock.py `OffsetWall`):
its wall clock is the system clock plus the seconds in that file, which the test rewrites as
NTP would step the clock. Everything else is the real thing: `gauged run` as a process, the
gauge and relay simulators on loopback, a command signed and posted by `gauged command`
(stamped with the machine's true time, as a control room's would be), and the state store the
daemon writes every cycle. The daemon's clock runs at speed 1 (no acceleration: commands are
judged against it), with a 2-second poll interval.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hil import ROOT, Rig

INTERVAL = 2.0
BEHIND = 3 * 3600.0
SECRET = "s3cret-shared-by-the-control-room"
TOKEN = "status-token-for-the-control-room"


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path, speed=1.0)
    try:
        yield rig
    finally:
        rig.close()


def set_offset(path: Path, seconds: float) -> None:
    """What NTP does to the daemon's clock: replace the file in one rename."""
    tmp = path.with_suffix(".new")
    tmp.write_text(f"{seconds}\n", encoding="utf-8")
    tmp.replace(path)


def command(rig: Rig, cid_hint: str) -> tuple[int, dict[str, Any]]:
    """`gauged command inhibit …`: signed with the config's secret, stamped with the
    machine's true time, posted to the daemon's /command."""
    proc = subprocess.run(
        [sys.executable, "-m", "gauged", "command", "inhibit", "--config", str(rig.config),
         "--scope", "zone", "--target", "furukawa_hiroo", "--minutes", "30", "--reason",
         f"speaker repair ({cid_hint})", "--sender", "control-room"],
        capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.stdout, proc.stderr
    reply: dict[str, Any] = json.loads(proc.stdout)
    return proc.returncode, reply


def daemon_time(status: dict[str, Any]) -> float:
    return datetime.fromisoformat(status["time"]).timestamp()


def cycle_stamps(rig: Rig) -> list[float]:
    """Every cycle's time, as the daemon stored it (one rain reading per station a cycle)."""
    with sqlite3.connect(f"file:{rig.state_path}?mode=ro", uri=True) as db:
        return [t for (t,) in db.execute("SELECT DISTINCT time FROM rain_readings "
                                         "ORDER BY time")]


def test_sch_4_boots_3_h_behind_ntp_steps_it_cycles_stamps_and_commands_follow(
        rig: Rig, tmp_path: Path) -> None:
    offset = tmp_path / "wall-offset"
    set_offset(offset, -BEHIND)  # no battery clock: it boots three hours behind

    def edit(text: str) -> str:
        text = re.sub(r"(?m)^\[clock\]\nspeed = 1\.0\n(start = .*\nanchor_unix = .*\n)",
                      "[clock]\nspeed = 1.0\n", text)  # the daemon's clock is the wall clock
        text = re.sub(r"(?m)^poll_interval_s = 180\b", f"poll_interval_s = {INTERVAL}", text)
        text = text.replace("timeout_s = 1.0", "timeout_s = 0.3")  # < the poll interval
        text = text.replace("[status]\n", f'[status]\ntoken = "{TOKEN}"\n')
        return text + f'\n[commands]\nenabled = true\nsecret = "{SECRET}"\n'

    rig.edit_config(edit)
    rig.start_simulators(rig.steady_level(1.0))
    t0 = time.monotonic()
    rig.start_daemon(env={"GAUGED_TEST_HOOKS__WALL_OFFSET_FILE": str(offset)})
    status = rig.wait_for_status(lambda s: s["cycles"] >= 3, 30, "three cycles behind")
    assert daemon_time(status) == pytest.approx(time.time() - BEHIND, abs=10)

    # a command from the control room, whose clock is right: "issued in the future"
    code, reply = command(rig, "before the step")
    assert code == 1
    assert (reply["status"], reply["reason"]) == ("refused", "issued in the future")

    cycles_before = rig.status()["cycles"]  # type: ignore[index]
    set_offset(offset, 0.0)  # NTP steps the clock
    t_step = time.time()
    status = rig.wait_for_status(lambda s: s["cycles"] >= cycles_before + 3 and
                                 daemon_time(s) > t_step - 60, 30, "three cycles after")
    assert daemon_time(status) == pytest.approx(time.time(), abs=10)
    last_cycle = datetime.fromisoformat(status["last_cycle"]).timestamp()
    assert last_cycle == pytest.approx(time.time(), abs=10)  # stamps follow the clock

    # the same command now: accepted
    code, reply = command(rig, "after the step")
    assert code == 0, reply
    assert reply["status"] == "done"
    status = rig.status()
    assert status is not None
    [inhibit] = status["inhibits"]
    assert inhibit["target"] == "zone:furukawa_hiroo"
    assert datetime.fromisoformat(inhibit["until"]).timestamp() == pytest.approx(
        time.time() + 30 * 60, abs=30)
    assert rig.stop("daemon") == 0
    print(f"sch_4 daemon run {time.monotonic() - t0:.1f} s")

    # every cycle, none twice, none lost: one interval apart, the step added once
    stamps = cycle_stamps(rig)
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(stamps)]
    assert gaps.count(INTERVAL + BEHIND) == 1, gaps
    assert all(g == INTERVAL for g in gaps if g != INTERVAL + BEHIND), gaps
    k = gaps.index(INTERVAL + BEHIND)
    assert k + 1 >= 3  # cycles ran behind …
    assert len(stamps) - (k + 1) >= 3  # … and after the step
    assert stamps[0] < t_step - BEHIND + 60
    assert stamps[-1] > t_step

    log = rig.log("daemon")
    assert log.count("wall clock stepped by +10800 s") == 1, log[-3000:]
    assert log.count("alarm history re-dated by +10800 s") == 1
    assert log.count("test hook set: the wall clock is the system clock plus") == 1
    assert "cycle skipped" not in log
    assert "Traceback" not in log
    # the command audit: refused before the step, done after
    with sqlite3.connect(f"file:{rig.state_path}?mode=ro", uri=True) as db:
        audit = list(db.execute("SELECT status, reason FROM command_audit ORDER BY seq"))
    assert audit == [("refused", "issued in the future"), ("done", "")]
    assert os.path.exists(offset)
