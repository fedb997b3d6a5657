"""gauged as a systemd service (QUALITY SYS-1 … SYS-4).

systemd is not PID 1 here, so the tests play its part: `Manager` binds the datagram socket
that `$NOTIFY_SOCKET` names and reads what the daemon sends (READY=1, WATCHDOG=1, STATUS=,
STOPPING=1), and for SYS-4 does what systemd does when pings stop (SIGABRT, then a restart).
The daemon and the simulators are real processes (tests/hil.py); the relay board's journal
(`t_real`: CLOCK_MONOTONIC, shared by every process of the machine) is compared with when
READY arrived.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hil import ROOT, Rig

UNIT = ROOT / "systemd" / "gauged.service"
SYSTEMD_ANALYZE = "/usr/bin/systemd-analyze"


@dataclass
class Message:
    at: float  # time.monotonic() when it arrived
    fields: dict[str, str]


@dataclass
class Manager:
    """The service manager's end of `$NOTIFY_SOCKET`."""

    path: Path
    messages: list[Message] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))

    def env(self, watchdog_s: float | None = None) -> dict[str, str]:
        env = {"NOTIFY_SOCKET": str(self.path)}
        if watchdog_s is not None:
            env["WATCHDOG_USEC"] = str(int(watchdog_s * 1e6))
        return env

    def receive(self, until: float) -> Message | None:
        """The next datagram, or None at monotonic time `until`."""
        remaining = until - time.monotonic()
        if remaining <= 0:
            return None
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return None
        msg = Message(time.monotonic(), dict(
            line.split("=", 1) for line in data.decode().splitlines() if "=" in line))
        self.messages.append(msg)
        return msg

    def wait_for(self, key: str, timeout: float, proc: subprocess.Popen[str] | None = None,
                 log: str = "") -> Message:
        deadline = time.monotonic() + timeout
        while True:
            msg = self.receive(min(deadline, time.monotonic() + 0.2))
            if msg is not None and key in msg.fields:
                return msg
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"daemon exited {proc.returncode} before {key}: {log}")
            if time.monotonic() >= deadline:
                raise AssertionError(f"no {key} within {timeout} s")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[Manager]:
    m = Manager(tmp_path / "notify.sock")
    try:
        yield m
    finally:
        m.close()




# ---- SYS-1: the unit ---------------------------------------------------------------------

def test_sys_1_unit_exposure_at_most_2_5_with_the_required_directives() -> None:
    proc = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=yes", "--no-pager",
                           str(UNIT)], capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    found = re.search(r"Overall exposure level for gauged\.service: (\d+\.\d+)", out)
    assert found, out
    exposure = float(found.group(1))
    print(f"sys_1 exposure {exposure}")
    assert exposure <= 2.5, out
    unit = UNIT.read_text(encoding="utf-8")
    directives = {}
    for line in unit.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            directives.setdefault(key.strip(), []).append(value.strip())
    for key, value in {"Type": "notify", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
                       "ProtectHome": "yes", "PrivateTmp": "yes", "User": "gauged",
                       "StateDirectory": "gauged", "ConfigurationDirectory": "gauged",
                       "DevicePolicy": "closed", "Restart": "always", "NotifyAccess": "main",
                       "StartLimitIntervalSec": "0"}.items():
        assert directives.get(key) == [value], (key, directives.get(key))
    assert float(directives["WatchdogSec"][0]) > 0
    # SCH-4: started after the clock is set (ordering only: systemd.special(7)); SYS-6: reload
    assert "time-sync.target" in " ".join(directives["After"]).split()
    assert "Wants" not in directives
    assert "Requires" not in directives
    assert directives["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    allowed = {v.split()[0] for v in directives["DeviceAllow"]}
    assert {"char-ttyUSB", "char-ttyS", "char-alsa"} <= allowed  # explicit serial and audio
    assert "DeviceAllow=" in out
    assert "char-alsa:rw" in out
    # the unit parses: the only complaint is the missing binary (nothing is installed here)
    verify = subprocess.run([SYSTEMD_ANALYZE, "verify", str(UNIT)], capture_output=True,
                            text=True, timeout=60)
    complaints = [line for line in (verify.stdout + verify.stderr).splitlines()
                  if line.strip() and "is not executable" not in line]
    assert complaints == []


# ---- SYS-2: invalid config, no READY -----------------------------------------------------

def test_sys_2_invalid_config_exits_2_and_sends_no_ready(tmp_path: Path,
                                                         manager: Manager) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text((ROOT / "config" / "minato-furukawa.toml").read_text(encoding="utf-8")
                   .replace('zones = ["furukawa_shirokane"]', 'zones = ["nowhere"]'),
                   encoding="utf-8")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "gauged", "run", "--config", str(bad)],
                          capture_output=True, text=True, timeout=30, cwd=ROOT,
                          env=os.environ | manager.env(watchdog_s=2.0))
    print(f"sys_2 exit after {time.monotonic() - t0:.2f} s")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"{bad}: station shirokane: zones: unknown zone 'nowhere'"]
    assert manager.receive(time.monotonic() + 0.3) is None  # nothing at all: no READY


# ---- SYS-3: READY only after config, state restore and relays OFF (read back) ------------

def test_sys_3_ready_after_state_restore_and_relays_off_read_back(
        rig: Rig, manager: Manager, tmp_path: Path) -> None:
    delay = 0.15  # every request to the relay board answers this late: a read-back shows
    faults = tmp_path / "faults.toml"
    faults.write_text(f'[[fault]]\nbus = "relays"\nunit = 1\ndelay_s = {delay}\n',
                      encoding="utf-8")
    rig.start_simulators(rig.steady_level(1.0), faults=faults)
    # the daemon's stderr is "the journal": journald priorities on every line
    log_path = rig.workdir / "daemon.log"
    log_path.touch()
    st = log_path.stat()
    proc = rig.start_daemon(env=manager.env(watchdog_s=5.0) | {
        "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    t_start = time.monotonic()
    ready = manager.wait_for("READY", 30, proc, rig.log("daemon")[-2000:])
    log_at_ready = rig.log("daemon")  # the log is written (and flushed) before READY is sent
    writes = rig.relay_log()
    relays = rig.configured_relays()

    before = [w for w in writes if w["t_real"] < ready.at]
    assert {(w["unit"], w["coil"]) for w in before} == relays  # every relay written …
    assert all(w["value"] is False for w in before)  # … OFF
    # each OFF write is followed by its read-back (another delayed request) before the next
    # relay is written, and READY waits for the last read-back
    times = sorted(w["t_real"] for w in before)
    assert all(b - a >= 2 * delay * 0.9 for a, b in itertools.pairwise(times)), times
    assert ready.at - times[-1] >= delay * 0.9, (ready.at - times[-1])
    assert ready.at - t_start >= len(relays) * 2 * delay * 0.9
    assert "nothing to restore" in log_at_ready  # the state store was opened and read
    assert "STATUS" in ready.fields
    assert "cycles=0" in ready.fields["STATUS"]
    # nothing was sent before READY (no early ping, no second READY)
    assert manager.messages[0] is ready
    assert [m for m in manager.messages if "READY" in m.fields] == [ready]

    manager.wait_for("WATCHDOG", 10, proc)  # the watchdog pings once up and cycling
    rig.wait_for_status(lambda s: s["cycles"] >= 2, 20, "two cycles")
    assert rig.stop("daemon") == 0
    while manager.receive(time.monotonic() + 0.2) is not None:
        pass  # drain what the stop sent
    assert len([m for m in manager.messages if "STOPPING" in m.fields]) == 1
    lines = [line for line in rig.log("daemon").splitlines() if line.strip()]
    assert lines
    assert all(re.match(r"<[2-7]>", line) for line in lines), lines[:5]
    assert any(line.startswith("<6>INFO gauged.daemon.recorder: stage station=") or
               line.startswith("<6>INFO gauged.daemon.recorder: cycle time=") for line in lines)


# ---- SYS-4: a stalled cycle stops the pings; "systemd" aborts and restarts it ------------

@pytest.mark.parametrize("stall_in", ["poll", "evaluate"])
def test_sys_4_stalled_cycle_stops_pings_sigabrt_restart_ready_with_relays_off(
        rig: Rig, manager: Manager, stall_in: str) -> None:
    watchdog_s = 2.0
    # short bus timeouts keep the cycle budget (notify.cycle_budget) short in the test
    rig.edit_config(lambda t: t.replace("timeout_s = 1.0", "timeout_s = 0.3"))
    rig.start_simulators(rig.steady_level(1.0))
    # the test-only hook (config [test_hooks]): the 4th cycle hangs before reading its gauges
    # (poll) or after, before the stage engine (evaluate), with the event loop alive
    proc = rig.start_daemon(env=manager.env(watchdog_s) | {
        "GAUGED_TEST_HOOKS__STALL_IN": stall_in, "GAUGED_TEST_HOOKS__STALL_AFTER_CYCLES": "3"})
    ready = manager.wait_for("READY", 30, proc, rig.log("daemon")[-2000:])

    # play systemd: note every ping; when none came for WatchdogSec, SIGABRT
    last_ping = ready.at
    pings = 0
    deadline = time.monotonic() + 90
    while time.monotonic() - last_ping < watchdog_s:
        assert time.monotonic() < deadline, "the pings never stopped"
        msg = manager.receive(last_ping + watchdog_s)
        if msg is not None and "WATCHDOG" in msg.fields:
            last_ping, pings = msg.at, pings + 1
        assert proc.poll() is None, rig.log("daemon")[-2000:]
    assert pings >= 3  # it pinged while it made progress
    status = rig.status()
    assert status is not None, "the event loop must still be alive (status server answers)"
    assert status["cycles"] == 3
    proc.send_signal(signal.SIGABRT)
    assert proc.wait(20) == -signal.SIGABRT
    first_log = rig.log("daemon")
    assert f"test hook: the cycle stalls in {stall_in} after 3 cycles" in first_log
    assert re.search(r"watchdog pings stopped: poll: cycle under way for \d+ s, budget \d+ s",
                     first_log), first_log[-2000:]
    statuses = [m.fields["STATUS"] for m in manager.messages if "STATUS" in m.fields]
    assert statuses[-1].startswith("STALLED: poll: cycle under way")
    relays_before = len(rig.relay_log())

    # the restart (Restart=always), without the hook
    manager.messages.clear()
    proc = rig.start_daemon(env=manager.env(watchdog_s))
    ready = manager.wait_for("READY", 30, proc, rig.log("daemon")[-2000:])
    after = rig.relay_log()[relays_before:]
    before_ready = [w for w in after if w["t_real"] < ready.at]
    assert {(w["unit"], w["coil"]) for w in before_ready} == rig.configured_relays()
    assert all(w["value"] is False for w in after)
    manager.wait_for("WATCHDOG", 10, proc)
    status = rig.wait_for_status(lambda s: s["cycles"] >= 5, 20, "five cycles after restart")
    assert all(st["stage_name"] == "normal" for st in status["stations"].values())
    assert rig.stop("daemon") == 0
    assert json.dumps(status)  # the restarted daemon serves a full status
