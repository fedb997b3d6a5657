"""Restarts (QUALITY ALM-4, ALM-5, ALM-15): `gauged run` killed with SIGKILL or stopped with
SIGTERM and started again, against `gauged simulate` on an accelerated clock. The relay board
and the audio sink journal every coil write and every clip; what the second daemon did is
what they journaled after the kill; the daemon's broadcast journal is read from its state
file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from hil import Rig
from services import Mosquitto, wait_until

HIROO_SIREN, HIROO_AMP = 1, 1  # unit of the relay board
SIREN_COIL, AMP_COIL = 0, 1  # zone furukawa_hiroo


@pytest.fixture
def rig_factory(tmp_path: Path) -> Iterator[Any]:
    rigs: list[Rig] = []

    def make(speed: float, mqtt_port: int | None = None) -> Rig:
        rig = Rig(tmp_path, speed=speed, mqtt_port=mqtt_port)
        rigs.append(rig)
        return rig

    try:
        yield make
    finally:
        for rig in rigs:
            rig.close()




def test_alm_4_kill_9_with_stage_3_active_restores_it_without_re_sounding(
        rig_factory: Any) -> None:
    rig: Rig = rig_factory(180.0)
    rig.start_simulators(rig.steady_level(3.7))  # freeboard 0.9 m: stage 3, warning
    rig.start_daemon()

    def warned(s: dict[str, Any]) -> bool:
        last = s["zones"]["furukawa_hiroo"]["last"]
        return s["stations"]["shin_hiroo"]["stage_name"] == "warning" and last is not None \
            and last["outcome"] == "done" and not s["zones"]["furukawa_hiroo"]["busy"]

    rig.wait_for_status(warned, rig.lead_s + 20, "stage 3 and its broadcast finished")
    first_audio = rig.audio_log()
    assert [a["clip"] for a in first_audio] == ["furukawa_warning_ja", "furukawa_warning_en"]
    assert rig.kill("daemon") == -9
    relays_before, log_before = len(rig.relay_log()), len(rig.log("daemon"))

    rig.start_daemon()
    restored = rig.wait_for_status(lambda s: True, 20, "the restarted daemon")
    hiroo = restored["stations"]["shin_hiroo"]
    assert hiroo["restored_stage"] == 3
    assert hiroo["stage_name"] == "warning"  # restored (before or after its first cycle)
    status = rig.wait_for_status(lambda s: s["cycles"] >= 3, 20, "three cycles after restart")
    assert status["stations"]["shin_hiroo"]["stage_name"] == "warning"
    assert status["zones"]["furukawa_hiroo"]["last"]["status"] == "finished"
    assert status["interrupted_broadcasts"] == []
    assert rig.stop("daemon") == 0

    after = rig.relay_log()[relays_before:]
    assert after, "the restarted daemon wrote no relay"
    assert all(r["value"] is False for r in after), after  # 0 relay activations
    assert {(r["unit"], r["coil"]) for r in after[:5]} == rig.configured_relays()
    assert rig.audio_log() == first_audio  # 0 announcement replays
    second = rig.log("daemon")[log_before:]
    assert "stages restored without re-sounding: shin_hiroo=warning" in second
    assert "broadcast start" not in second
    assert "stage station=shin_hiroo" not in second  # no transition at all


def stop_as(rig: Rig, how: str) -> None:
    """End the daemon with SIGKILL (`kill -9`: nothing runs) or SIGTERM (the stop path)."""
    if how == "sigkill":
        assert rig.kill("daemon") == -9
    else:
        assert rig.stop("daemon") == 0


def journal(rig: Rig) -> list[dict[str, Any]]:
    """The broadcast journal the daemon stored (gauged/store/state.py), in order."""
    with contextlib.closing(sqlite3.connect(f"file:{rig.state_path}?mode=ro",
                                            uri=True)) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM journal ORDER BY id")]


def on_writes(writes: list[dict[str, Any]]) -> list[tuple[int, int]]:
    return [(r["unit"], r["coil"]) for r in writes if r["value"]]


def assert_relays_off_first(rig: Rig, after: list[dict[str, Any]]) -> None:
    """The first write of the new daemon to every relay is OFF (QUALITY ALM-5, ALM-6)."""
    relays = rig.configured_relays()
    assert {(r["unit"], r["coil"]) for r in after[:len(relays)]} == relays
    assert all(r["value"] is False for r in after[:len(relays)])


def restart_and_check_nothing_replays(rig: Rig) -> None:
    """Another start finds nothing to replay: each decided broadcast was heard once."""
    relays, audio, log = len(rig.relay_log()), len(rig.audio_log()), len(rig.log("daemon"))
    rig.start_daemon()
    status = rig.wait_for_status(lambda s: s["cycles"] >= 2, 20, "two cycles after restart")
    assert rig.stop("daemon") == 0
    assert on_writes(rig.relay_log()[relays:]) == []
    assert rig.audio_log()[audio:] == []
    assert status["restart_broadcasts"] == []
    assert "broadcast start" not in rig.log("daemon")[log:]


@pytest.mark.parametrize("how", ["sigkill", "sigterm"])
def test_alm_5_cut_mid_siren_relays_off_first_recorded_interrupted_replayed_once(
        rig_factory: Any, how: str) -> None:
    rig: Rig = rig_factory(90.0)  # 60 s of siren last 0.67 s: time to catch it ON
    rig.edit_config(lambda t: t.replace("[sequences.level_overflow]\nsiren_s = 10\n",
                                        "[sequences.level_overflow]\nsiren_s = 60\n"))
    rig.start_simulators(rig.steady_level(4.7))  # freeboard −0.1 m: stage 4, overflow
    rig.start_daemon()

    def siren_on() -> bool:
        writes = [r for r in rig.relay_log() if (r["unit"], r["coil"]) == (1, SIREN_COIL)]
        return bool(writes) and writes[-1]["value"] is True

    wait_until(siren_on, rig.lead_s + 20, "the siren ON", interval=0.005)
    assert not any(a["clip"].startswith("furukawa_overflow") for a in rig.audio_log())
    stop_as(rig, how)
    before = rig.relay_log()
    board = {(r["unit"], r["coil"]): r["value"] for r in before}
    if how == "sigkill":  # nothing ran: the siren is left ON
        assert board[(1, SIREN_COIL)] is True, "killed too late: the siren was already OFF"
        assert board[(1, AMP_COIL)] is True
        assert [(e["fate"], e["restart"]) for e in journal(rig)] == [("playing", None)]
    else:  # the stop path drove every relay OFF and journaled the broadcast as cut
        assert not any(board.values()), board
        assert [(e["fate"], e["restart"]) for e in journal(rig)] == [("interrupted", None)]
        assert "broadcast interrupted zone=furukawa_hiroo station=shin_hiroo stage=overflow: " \
               "the daemon stops" in rig.log("daemon")
    audio_before, log_before = rig.audio_log(), len(rig.log("daemon"))
    assert not any(a["clip"].startswith("furukawa_overflow") for a in audio_before)

    rig.start_daemon()
    status = rig.wait_for_status(
        lambda s: s["cycles"] >= 2 and not s["zones"]["furukawa_hiroo"]["busy"] and
        len(rig.audio_log()) >= len(audio_before) + 2, 30, "the replay and two cycles")
    assert rig.stop("daemon") == 0

    after = rig.relay_log()[len(before):]
    assert_relays_off_first(rig, after)
    # policy: the cut broadcast is played again, once, from its start (its stage stands and
    # it is a few minutes old); the stage itself is restored without a second broadcast
    assert on_writes(after) == [(1, AMP_COIL), (1, SIREN_COIL)]
    assert [a["clip"] for a in rig.audio_log()[len(audio_before):]] == [
        "furukawa_overflow_ja", "furukawa_overflow_en"]  # 0 duplicate announcements
    assert status["stations"]["shin_hiroo"]["stage_name"] == "overflow"
    interrupted = status["interrupted_broadcasts"]
    assert [(b["zone"], b["station"], b["stage"], b["status"], b["restart"])
            for b in interrupted] == [
        ("furukawa_hiroo", "shin_hiroo", 4, "interrupted", "replayed")]
    rows = journal(rig)
    assert [(e["id"], e["fate"], e["restart"], e["replay"], e["replay_of"]) for e in rows] == [
        (1, "interrupted", "replayed", 2, None), (2, "played", None, None, 1)]
    second = rig.log("daemon")[log_before:]
    warning = second.index("WARNING gauged.daemon.restore: broadcast interrupted by a restart "
                           "zone=furukawa_hiroo station=shin_hiroo stage=overflow")
    assert "replayed now" in second[warning:warning + 400]
    assert second.count("broadcast start ") == 1
    assert "stage station=shin_hiroo" not in second  # no transition: restored

    restart_and_check_nothing_replays(rig)


# ---- ALM-15: one broadcast playing and one queued on the same zone ----------------------

# Shirokane drives the zone of Shin-Hiroo too, and the zone hears every escalation (no gap):
# Shin-Hiroo's overflow (cycle 0) plays a long siren pattern (10 s on, 1000 s off, 50 s on,
# then its clips), and Shirokane's warning, decided two or three cycles later (its jump is a
# spike until the next reading confirms it), waits behind it: a lower stage does not
# pre-empt, and it was decided after the overflow started, so it plays once the overflow is
# over.
ALM_15_SCENARIO = ("time,station,quantity,value\n0,shin_hiroo,level_m,4.7\n"
                   "0,shirokane,level_m,1.0\n90,shirokane,level_m,3.5\n")


def alm_15_rig(rig_factory: Any, replay_max_age_min: float,
               mqtt_port: int | None = None) -> Rig:
    rig: Rig = rig_factory(90.0, mqtt_port)
    rig.edit_config(lambda t: t.replace(
        "[sequences.level_overflow]\nsiren_s = 10\n",
        "[sequences.level_overflow]\nsiren_pattern = [10, 1000, 50]\n").replace(
        'zones = ["furukawa_shirokane"]', 'zones = ["furukawa_hiroo"]').replace(
        'amplifier_relay = { bus = "relays", unit = 1, coil = 1 }\nplayer = "speakers"\n',
        'amplifier_relay = { bus = "relays", unit = 1, coil = 1 }\nplayer = "speakers"\n'
        'min_gap_min = 0\n').replace(
        "replay_max_age_min = 15 ", f"replay_max_age_min = {replay_max_age_min} "))
    scenario = rig.workdir / "alm15.csv"
    scenario.write_text(ALM_15_SCENARIO, encoding="utf-8")
    rig.start_simulators(scenario)
    return rig


def cut_with_one_queued(rig: Rig, how: str) -> None:
    """Start the daemon; end it (`how`) once Shirokane's warning waits behind the overflow,
    before the overflow's clips."""
    rig.start_daemon()
    wait_until(lambda: "broadcast queued zone=furukawa_hiroo station=shirokane stage=warning"
               in rig.log("daemon"), rig.lead_s + 30, "the warning queued", interval=0.005)
    stop_as(rig, how)
    assert rig.audio_log() == [], "ended too late: the overflow's clips had begun"
    rows = journal(rig)
    assert [(e["station"], e["stage_name"]) for e in rows] == [
        ("shin_hiroo", "overflow"), ("shirokane", "warning")]
    expected = ("playing", "queued") if how == "sigkill" else ("interrupted", "not-started")
    assert tuple(e["fate"] for e in rows) == expected  # journaled before and at the stop
    if how == "sigterm":
        log = rig.log("daemon")
        assert "broadcast not started zone=furukawa_hiroo station=shirokane stage=warning" \
            in log


@pytest.mark.parametrize("how", ["sigkill", "sigterm"])
def test_alm_15_playing_and_queued_on_one_zone_each_played_once_after_restart(
        rig_factory: Any, how: str) -> None:
    rig = alm_15_rig(rig_factory, replay_max_age_min=15)
    cut_with_one_queued(rig, how)
    relays, log = len(rig.relay_log()), len(rig.log("daemon"))

    rig.start_daemon()
    status = rig.wait_for_status(
        lambda s: len(rig.audio_log()) >= 4 and not s["zones"]["furukawa_hiroo"]["busy"],
        40, "both broadcasts replayed")
    assert rig.stop("daemon") == 0

    after = rig.relay_log()[relays:]
    assert_relays_off_first(rig, after)
    # each played once, in the order the zone would have played them: the overflow (amplifier,
    # siren twice), then the warning (amplifier)
    assert on_writes(after) == [(1, AMP_COIL), (1, SIREN_COIL), (1, SIREN_COIL), (1, AMP_COIL)]
    assert [(a["zone"], a["clip"]) for a in rig.audio_log()] == [
        ("furukawa_hiroo", "furukawa_overflow_ja"), ("furukawa_hiroo", "furukawa_overflow_en"),
        ("furukawa_hiroo", "furukawa_warning_ja"), ("furukawa_hiroo", "furukawa_warning_en")]
    assert [(b["station"], b["fate"], b["restart"]) for b in status["restart_broadcasts"]] == [
        ("shin_hiroo", "interrupted", "replayed"), ("shirokane", "not-started", "replayed")]
    rows = journal(rig)
    assert [(e["id"], e["fate"], e["restart"], e["replay"], e["replay_of"]) for e in rows] == [
        (1, "interrupted", "replayed", 3, None), (2, "not-started", "replayed", 4, None),
        (3, "played", None, None, 1), (4, "played", None, None, 2)]
    second = rig.log("daemon")[log:]
    assert second.count("broadcast start ") == 2
    assert "stage station=" not in second  # the restored stages stand: no new broadcast

    restart_and_check_nothing_replays(rig)


@contextlib.contextmanager
def mqtt_events(port: int, topic: str) -> Iterator[list[dict[str, Any]]]:
    """Collect the JSON messages on `topic` while the block runs (a client in a thread)."""
    got: list[dict[str, Any]] = []
    ready = threading.Event()
    loop = asyncio.new_event_loop()

    async def listen() -> None:
        async with aiomqtt.Client("127.0.0.1", port, identifier="test-alm15") as client:
            await client.subscribe(topic, qos=1)
            ready.set()
            async for message in client.messages:
                got.append(json.loads(bytes(message.payload)))  # type: ignore[arg-type]

    task = loop.create_task(listen())

    def run() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(task)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        assert ready.wait(10), "the MQTT listener did not subscribe"
        yield got
    finally:
        loop.call_soon_threadsafe(task.cancel)
        thread.join(10)
        loop.close()


@pytest.mark.parametrize("how", ["sigkill", "sigterm"])
def test_alm_15_too_old_is_reported_not_played_the_young_one_played_once(
        rig_factory: Any, mosquitto: Mosquitto, how: str) -> None:
    # the overflow was decided 10 to 12 minutes before the restart, the warning 1 to 3
    rig = alm_15_rig(rig_factory, replay_max_age_min=6, mqtt_port=mosquitto.port)
    cut_with_one_queued(rig, how)
    relays, log = len(rig.relay_log()), len(rig.log("daemon"))

    with mqtt_events(mosquitto.port, "gauged/minato-furukawa/event/broadcast_missed") as got:
        rig.start_daemon()
        status = rig.wait_for_status(
            lambda s: len(rig.audio_log()) >= 2 and not s["zones"]["furukawa_hiroo"]["busy"],
            30, "the young broadcast replayed")
        wait_until(lambda: bool(got), 10, "the broadcast_missed event")
        assert rig.stop("daemon") == 0

    after = rig.relay_log()[relays:]
    assert_relays_off_first(rig, after)
    assert on_writes(after) == [(1, AMP_COIL)]  # the warning only: no siren
    assert [a["clip"] for a in rig.audio_log()] == ["furukawa_warning_ja", "furukawa_warning_en"]
    # the overflow: reported on MQTT, in /status and the log, not played
    assert len(got) == 1
    event = got[0]
    assert (event["zone"], event["station"], event["stage"], event["fate"]) == (
        "furukawa_hiroo", "shin_hiroo", 4, "interrupted")
    assert "more than [state] replay_max_age_min = 6" in event["note"]
    assert [(b["station"], b["restart"]) for b in status["restart_broadcasts"]] == [
        ("shin_hiroo", "reported"), ("shirokane", "replayed")]
    second = rig.log("daemon")[log:]
    assert "broadcast interrupted by a restart zone=furukawa_hiroo station=shin_hiroo " \
           "stage=overflow" in second
    assert "not replayed: reported: decided" in second
    rows = journal(rig)
    assert [(e["fate"], e["restart"]) for e in rows] == [
        ("interrupted", "reported"), ("not-started", "replayed"), ("played", None)]

    restart_and_check_nothing_replays(rig)


def test_an_unusable_state_file_is_set_aside_and_the_daemon_runs(rig_factory: Any) -> None:
    rig: Rig = rig_factory(180.0)
    rig.state_path.parent.mkdir(parents=True)
    rig.state_path.write_bytes(b"\x00garbage, not SQLite\n" * 500)
    rig.start_simulators(rig.steady_level(1.0))
    proc = rig.start_daemon("--once")
    assert proc.wait(timeout=30) == 0, rig.log("daemon")[-2000:]
    log = rig.log("daemon")
    assert "ERROR   gauged.store.state: state file unusable" in log
    assert " cycle time=" in log  # and the cycle ran
    aside = [p for p in rig.state_path.parent.iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 1
    assert aside[0].read_bytes().startswith(b"\x00garbage")
    assert rig.state_path.read_bytes().startswith(b"SQLite format 3")
