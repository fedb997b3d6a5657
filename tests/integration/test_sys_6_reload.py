"""SYS-6: SIGHUP reloads the configuration; no catchable signal ends the daemon without its
relays OFF (gauged/daemon/reload.py, gauged/daemon/signals.py).

The daemon and the simulators are processes (tests/hil.py); the test plays systemd's part on
`$NOTIFY_SOCKET` (`Manager`, tests/integration/test_sys_service.py) and sends the signals
`systemctl reload` and `kill` would. What the relays did is read from the relay board's
journal, what played from the audio sink's.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hil import Rig
from services import wait_until
from test_sys_service import Manager

SIREN, AMP = (1, 0), (1, 1)  # zone furukawa_hiroo on the relay board
WARNING_LEVEL = 3.8  # Shin-Hiroo: freeboard 0.8 m, stage 3 (warning)
OVERFLOW_LEVEL = 4.7  # freeboard −0.1 m, stage 4 (overflow): siren and announcement


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[Manager]:
    m = Manager(tmp_path / "notify.sock")
    try:
        yield m
    finally:
        m.close()


@pytest.fixture
def rigs() -> Iterator[list[Rig]]:
    made: list[Rig] = []
    try:
        yield made
    finally:
        for rig in made:
            rig.close()


def hiroo_stages(text: str, *, notice: str = "2.0", overflow: str = "0.0") -> str:
    """The reference config with Shin-Hiroo's notice and overflow thresholds set."""
    old = ('    { name = "notice", threshold = 2.0, sequence = "level_notice" },\n'
           '    { name = "warning", threshold = 1.0, sequence = "level_warning" },\n'
           '    { name = "overflow", threshold = 0.0, sequence = "level_overflow" },\n')
    assert text.index(old) < text.index("[stations.shirokane]")  # the same lines follow there
    return text.replace(old, old.replace("threshold = 2.0", f"threshold = {notice}")
                        .replace("threshold = 0.0", f"threshold = {overflow}"), 1)


def reload(rig: Rig, manager: Manager, edit: Callable[[str], str]) -> tuple[str, dict[str,
                                                                                  str]]:
    """Rewrite the config, send SIGHUP (what `systemctl reload` does), wait for RELOADING=1
    then READY=1; the daemon's log written since, and the READY message."""
    text = rig.config.read_text(encoding="utf-8")
    rig.config.write_text(edit(text), encoding="utf-8")
    manager.messages.clear()
    log_before = len(rig.log("daemon"))
    proc = rig.procs["daemon"]
    proc.send_signal(signal.SIGHUP)
    reloading = manager.wait_for("RELOADING", 20, proc, rig.log("daemon")[-2000:])
    assert int(reloading.fields["MONOTONIC_USEC"]) == pytest.approx(
        time.clock_gettime_ns(time.CLOCK_MONOTONIC) / 1000, abs=20e6)
    ready = manager.wait_for("READY", 20, proc, rig.log("daemon")[-2000:])
    assert manager.messages.index(reloading) < manager.messages.index(ready)
    assert proc.poll() is None
    return rig.log("daemon")[log_before:], ready.fields


def thresholds(status: dict[str, Any], station: str) -> list[float]:
    return [s["threshold"] for s in status["stations"][station]["stages"]]


def hiroo_broadcasts(rig: Rig) -> list[str]:
    """The clips the zone played, in order."""
    return [a["clip"] for a in rig.audio_log() if a["zone"] == "furukawa_hiroo"]


def test_sys_6_sighup_applies_a_valid_config_logs_it_and_re_sounds_nothing(
        tmp_path: Path, rigs: list[Rig], manager: Manager) -> None:
    t0 = time.monotonic()
    rig = Rig(tmp_path, speed=180.0)
    rigs.append(rig)
    rig.start_simulators(rig.steady_level(WARNING_LEVEL))
    proc = rig.start_daemon(env=manager.env())
    manager.wait_for("READY", 30, proc, rig.log("daemon")[-2000:])
    status = rig.wait_for_status(
        lambda s: s["stations"]["shin_hiroo"]["stage_name"] == "warning" and
        (s["zones"]["furukawa_hiroo"]["last"] or {}).get("outcome") == "done", 30,
        "the warning broadcast played")
    heard = hiroo_broadcasts(rig)
    assert heard == ["furukawa_warning_ja", "furukawa_warning_en"]
    good = rig.config.read_text(encoding="utf-8")

    # a threshold below the stage the station stands at: applied, logged, nothing sounds
    log, ready = reload(rig, manager, lambda t: hiroo_stages(good, notice="2.1"))
    assert "reload: stations.shin_hiroo.stages[1].threshold: 2.0 → 2.1" in log, log
    assert "reload applied" in log
    assert "STATUS" in ready
    cycles = rig.status()["cycles"]  # type: ignore[index]
    status = rig.wait_for_status(lambda s: s["cycles"] >= cycles + 3, 20, "three cycles")
    assert thresholds(status, "shin_hiroo") == [2.58, 2.1, 1.0, 0.0]
    assert status["stations"]["shin_hiroo"]["stage_name"] == "warning"  # kept …
    assert hiroo_broadcasts(rig) == heard  # … and not re-sounded

    # a threshold the river now reaches: the next cycles escalate and sound it
    log, _ = reload(rig, manager, lambda t: hiroo_stages(good, notice="2.1", overflow="0.9"))
    assert "reload: stations.shin_hiroo.stages[3].threshold: 0.0 → 0.9" in log, log
    status = rig.wait_for_status(
        lambda s: s["stations"]["shin_hiroo"]["stage_name"] == "overflow" and
        (s["zones"]["furukawa_hiroo"]["last"] or {}).get("stage_name") == "overflow" and
        s["zones"]["furukawa_hiroo"]["last"]["outcome"] == "done", 30, "the overflow broadcast")
    assert hiroo_broadcasts(rig) == [*heard, "furukawa_overflow_ja", "furukawa_overflow_en"]
    siren = [r["value"] for r in rig.relay_log() if (r["unit"], r["coil"]) == SIREN]
    assert siren.count(True) == 1  # the overflow siren, once …
    assert siren[-1] is False  # … and OFF after it
    assert rig.stop("daemon") == 0
    assert "Traceback" not in rig.log("daemon")
    print(f"sys_6 valid reload {time.monotonic() - t0:.1f} s")


def test_sys_6_sighup_with_an_invalid_config_or_one_needing_a_restart_is_refused(
        tmp_path: Path, rigs: list[Rig], manager: Manager) -> None:
    t0 = time.monotonic()
    rig = Rig(tmp_path, speed=180.0)
    rigs.append(rig)
    rig.start_simulators(rig.steady_level(1.0))
    proc = rig.start_daemon(env=manager.env())
    manager.wait_for("READY", 30, proc, rig.log("daemon")[-2000:])
    rig.wait_for_status(lambda s: s["cycles"] >= 2, 20, "two cycles")
    good = rig.config.read_text(encoding="utf-8")

    # a problem as at start: one line naming file, station and field
    log, ready = reload(rig, manager, lambda t: hiroo_stages(t, notice="2.1").replace(
        'zones = ["furukawa_shirokane"]', 'zones = ["nowhere"]'))
    assert f"reload refused: {rig.config}: station shirokane: zones: unknown zone " \
           f"'nowhere'" in log, log
    assert "nothing applied; the daemon runs on unchanged" in log
    assert ready["STATUS"].startswith("reload refused")

    # not TOML at all
    log, _ = reload(rig, manager, lambda t: good + "\n[stations.oops\n")
    assert f"reload refused: {rig.config}: (file): TOML syntax" in log, log

    # a valid file, with a bus port and a threshold changed: the port needs a restart, so
    # nothing is applied (not even the threshold)
    log, _ = reload(rig, manager, lambda t: hiroo_stages(good, notice="2.1").replace(
        f"port = {rig.ports['15020']}\n", f"port = {rig.ports['15020'] + 1}\n"))
    assert re.search(r"reload refused: buses\.river\.port: \d+ → \d+ needs a restart "
                     r"\(the bus and device layout\)", log), log
    assert "stations.shin_hiroo.stages[1].threshold" not in log  # not even listed as applied
    assert "reload applied" not in rig.log("daemon")

    cycles = rig.status()["cycles"]  # type: ignore[index]
    status = rig.wait_for_status(lambda s: s["cycles"] >= cycles + 3, 20,
                                 "cycles go on after the refused reloads")
    assert thresholds(status, "shin_hiroo") == [2.58, 2.0, 1.0, 0.0]  # unchanged
    assert all(b["connected"] for b in status["buses"].values())  # still on the old port
    assert status["health"] == ["ok"]
    # back to the file it runs on: a reload with no changes
    log, _ = reload(rig, manager, lambda t: good)
    assert "reload: " in log
    assert "no changes" in log
    assert rig.stop("daemon") == 0
    print(f"sys_6 refused reloads {time.monotonic() - t0:.1f} s")


def siren_on(rig: Rig) -> bool:
    writes = [r for r in rig.relay_log() if (r["unit"], r["coil"]) == SIREN]
    return bool(writes) and writes[-1]["value"] is True


def long_siren(rig: Rig, seconds: int) -> None:
    rig.edit_config(lambda t: t.replace("[sequences.level_overflow]\nsiren_s = 10\n",
                                        f"[sequences.level_overflow]\nsiren_s = {seconds}\n"))


def test_sys_6_sighup_and_stray_signals_during_a_broadcast_do_not_cut_it(
        tmp_path: Path, rigs: list[Rig], manager: Manager) -> None:
    t0 = time.monotonic()
    rig = Rig(tmp_path, speed=30.0)  # the 60 s siren lasts 2 s
    rigs.append(rig)
    long_siren(rig, 60)
    rig.start_simulators(rig.steady_level(OVERFLOW_LEVEL))
    proc = rig.start_daemon(env=manager.env())
    manager.wait_for("READY", 30, proc, rig.log("daemon")[-2000:])
    wait_until(lambda: siren_on(rig), rig.lead_s + 20, "the siren ON", interval=0.005)
    on_at = time.monotonic()

    # while it sounds: a reload that changes the sequence playing (and its clips), and
    # signals whose default would end the process
    def edit(text: str) -> str:
        return text.replace("[sequences.level_overflow]\nsiren_s = 60\n",
                            "[sequences.level_overflow]\nsiren_s = 5\n")

    log, _ = reload(rig, manager, edit)
    assert "reload: sequences.level_overflow.siren_s: 60.0 → 5.0" in log, log
    stray = [signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM, signal.SIGPWR, signal.SIGTSTP,
             signal.SIGXCPU, signal.SIGRTMIN]
    for sig in stray:
        proc.send_signal(sig)
    assert siren_on(rig), "the reload cut the siren"
    status = rig.wait_for_status(
        lambda s: (s["zones"]["furukawa_hiroo"]["last"] or {}).get("stage_name") == "overflow",
        20, "the overflow broadcast over")
    last = status["zones"]["furukawa_hiroo"]["last"]
    assert last["outcome"] == "done"
    assert last["siren_on_s"] == pytest.approx(60.0, abs=1.0)  # as it started: not cut
    writes = [r for r in rig.relay_log() if (r["unit"], r["coil"]) == SIREN]
    values = [w["value"] for w in writes]
    assert values[:3] == [False, True, False]  # OFF at start, the siren, OFF at its end …
    assert True not in values[3:]  # … (and again with the amplifier at the broadcast's end)
    assert writes[2]["t_real"] - writes[1]["t_real"] >= 60 / 30 * 0.95
    assert time.monotonic() - on_at >= 60 / 30 * 0.95
    assert hiroo_broadcasts(rig) == ["furukawa_overflow_ja", "furukawa_overflow_en"]
    assert proc.poll() is None  # every stray signal left it running
    log = rig.log("daemon")
    for sig in stray:
        name = signal.Signals(sig).name if sig != signal.SIGRTMIN else "SIGRTMIN"
        assert f"{name} ignored: the daemon goes on" in log, name
    assert rig.stop("daemon") == 0
    print(f"sys_6 reload during a broadcast {time.monotonic() - t0:.1f} s")


@pytest.mark.parametrize("sig", [signal.SIGQUIT, signal.SIGINT, signal.SIGABRT],
                         ids=lambda s: signal.Signals(s).name)
def test_sys_6_a_stopping_signal_mid_siren_drives_every_relay_off_first(
        tmp_path: Path, rigs: list[Rig], sig: signal.Signals) -> None:
    rig = Rig(tmp_path, speed=30.0)
    rigs.append(rig)
    long_siren(rig, 60)
    rig.start_simulators(rig.steady_level(OVERFLOW_LEVEL))
    proc = rig.start_daemon()
    wait_until(lambda: siren_on(rig), rig.lead_s + 20, "the siren ON", interval=0.005)
    before = len(rig.relay_log())
    proc.send_signal(sig)
    code = proc.wait(30)
    assert code == (-signal.SIGABRT if sig == signal.SIGABRT else 0), rig.log("daemon")[-2000:]
    board = {(r["unit"], r["coil"]): r["value"] for r in rig.relay_log()}
    assert board[SIREN] is False
    assert board[AMP] is False
    after = rig.relay_log()[before:]
    assert {(r["unit"], r["coil"]) for r in after} >= rig.configured_relays()  # all, OFF
    assert all(r["value"] is False for r in after)
    log = rig.log("daemon")
    if sig == signal.SIGABRT:
        assert "SIGABRT (the watchdog?): stopping with every relay OFF, then aborting" in log
        assert "aborting: stopped after SIGABRT" in log
    else:
        assert f"{signal.Signals(sig).name}: stopping" in log
