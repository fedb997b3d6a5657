"""sd_notify and the watchdog rule (gauged/ops/notify.py): datagrams to a real socket, and the
rule as pure logic (QUALITY SYS-4)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from gauged.ops.notify import MARGIN_S, Notifier, stalled


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    try:
        yield path, sock
    finally:
        sock.close()


def test_sys_3_notifier_sends_ready_status_ping_stopping(
        listener: tuple[str, socket.socket]) -> None:
    path, sock = listener
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000"})
    assert n.enabled
    assert n.watchdog_s == 4.0
    assert n.ready("cycles=0\nstages=all-normal")
    assert sock.recv(4096) == b"READY=1\nSTATUS=cycles=0 stages=all-normal"
    assert n.ping()
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert n.status("x")
    assert sock.recv(4096) == b"STATUS=x"
    assert n.stopping()
    assert sock.recv(4096) == b"STOPPING=1\nSTATUS=stopping"
    n.close()


def test_sys_3_abstract_socket() -> None:
    name = f"gauged-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2)
    try:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready("ok")
        assert sock.recv(4096).startswith(b"READY=1")
    finally:
        sock.close()


def test_without_a_service_manager_nothing_is_sent() -> None:
    n = Notifier({})
    assert not n.enabled
    assert n.watchdog_s is None
    assert not n.ready("ok")
    assert not n.ping()


def test_watchdog_for_another_pid_is_not_ours(listener: tuple[str, socket.socket]) -> None:
    path, _ = listener
    other = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000",
                      "WATCHDOG_PID": str(os.getpid() + 1)})
    assert other.enabled
    assert other.watchdog_s is None
    mine = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000",
                     "WATCHDOG_PID": str(os.getpid())})
    assert mine.watchdog_s == 1.0


def test_a_vanished_manager_never_raises(tmp_path: Path) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert not n.ping()
    assert not n.ping()


# ---- the rule: each component against its own budget --------------------------------------

def rule(now: float, **kw: object) -> list[str]:
    args: dict[str, object] = dict(interval_s=180.0, cycle_budget_s=190.0, cycle_started=None,
                                   last_cycle_end=None, loop_started=0.0, zones={})
    args.update(kw)
    return stalled(now, **args)  # type: ignore[arg-type]


def test_sys_4_a_180_s_cycle_keeps_pinging_through_a_30_s_watchdog() -> None:
    # between cycles for 170 s, longer than WatchdogSec=30: still progress
    assert rule(1000.0, last_cycle_end=830.0) == []
    assert rule(1000.0, cycle_started=900.0, last_cycle_end=820.0) == []  # 100 s into a cycle
    assert rule(100.0) == []  # before the first cycle, within one interval of the start


def test_sys_4_a_cycle_over_its_budget_stops_the_pings() -> None:
    assert rule(1000.0, cycle_started=800.0, last_cycle_end=790.0) == [
        "poll: cycle under way for 200 s, budget 190 s"]


def test_sys_4_no_cycle_for_an_interval_and_a_margin_stops_the_pings() -> None:
    assert rule(180.0 + MARGIN_S - 0.1) == []
    assert rule(180.0 + MARGIN_S + 1) != []
    assert rule(1000.0, last_cycle_end=1000.0 - 180.0 - MARGIN_S - 1) != []


def test_sys_4_a_wedged_zone_stops_the_pings_a_playing_one_does_not() -> None:
    assert rule(10.0, zones={"a": (30.0, 60.0), "b": None}) == []
    assert rule(10.0, zones={"a": (61.0, 60.0)}) == ["zone a: one broadcast for 61 s, budget 60 s"]


def test_sys_4_budgets_of_the_reference_system() -> None:
    from gauged.alarm.types import BroadcastRecord, BroadcastRequest
    from gauged.config.load import load_config
    from gauged.daemon.daemon import Daemon
    from gauged.daemon.watchdog import broadcast_budget, cycle_budget, progress

    root = Path(__file__).resolve().parents[2]
    daemon = Daemon(load_config(root / "config" / "minato-furukawa.toml"))
    rain_gauges = len(daemon.poller.by_bus["rain"])
    # 180 s, then the rain bus (the most gauges) timing out on a connect and every gauge
    assert cycle_budget(daemon) == 180.0 + (1 + rain_gauges) * 1.0 + MARGIN_S
    zone = daemon.zones["furukawa_hiroo"]
    req = BroadcastRequest(time=daemon.clock.now(), zone="furukawa_hiroo", station="shin_hiroo",
                           stage=4, stage_name="overflow", sequence="level_overflow",
                           siren_s=10.0, clips=())
    record = BroadcastRecord(request=req, started=daemon.clock.timestamp(), started_mono=0.0)
    seq = daemon.config.sequences["level_overflow"]
    budget = broadcast_budget(daemon, zone, record)
    clips = seq.repeats * len(seq.clips)
    assert budget > seq.siren_on_s + clips * 5.0  # the siren and each clip to its timeout
    assert budget < 3600  # and bounded: a wedged zone is noticed
    assert progress(daemon, daemon.last_cycle_mono or 0.0, 0.0) == []
    zone.current = record
    assert progress(daemon, 0.0, 0.0) == []  # just started
    record.started_mono = -(budget + 1)  # playing for longer than it can last (monotonic:
    record.started += 10 * budget  # whatever the wall clock says)
    assert progress(daemon, 0.0, 0.0)[0].startswith("zone furukawa_hiroo: one broadcast")
