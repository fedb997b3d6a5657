"""Restarts (QUALITY ALM-4, ALM-5): `gauged run` killed with SIGKILL and started again, against
`gauged simulate` on an accelerated clock. The relay board and the audio sink journal every
coil write and every clip; what the second daemon did is what they journaled after the kill.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hil import Rig

HIROO_SIREN, HIROO_AMP = 1, 1  # unit of the relay board
SIREN_COIL, AMP_COIL = 0, 1  # zone furukawa_hiroo


@pytest.fixture
def rig_factory(tmp_path: Path) -> Iterator[Any]:
    rigs: list[Rig] = []

    def make(speed: float) -> Rig:
        rig = Rig(tmp_path, speed=speed)
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


def test_alm_5_kill_9_mid_siren_relays_off_first_and_no_duplicate(rig_factory: Any) -> None:
    rig: Rig = rig_factory(90.0)  # 60 s of siren last 0.67 s: time to catch it ON
    rig.edit_config(lambda t: t.replace("[sequences.level_overflow]\nsiren_s = 10\n",
                                        "[sequences.level_overflow]\nsiren_s = 60\n"))
    rig.start_simulators(rig.steady_level(4.7))  # freeboard −0.1 m: stage 4, overflow
    rig.start_daemon()

    def siren_on() -> bool:
        writes = [r for r in rig.relay_log() if (r["unit"], r["coil"]) == (1, SIREN_COIL)]
        return bool(writes) and writes[-1]["value"] is True

    from services import wait_until
    wait_until(siren_on, rig.lead_s + 20, "the siren ON", interval=0.005)
    assert rig.kill("daemon") == -9
    before = rig.relay_log()
    board = {(r["unit"], r["coil"]): r["value"] for r in before}
    assert board[(1, SIREN_COIL)] is True, "killed too late: the siren was already OFF"
    assert board[(1, AMP_COIL)] is True
    audio_before, log_before = rig.audio_log(), len(rig.log("daemon"))
    assert not any(a["clip"].startswith("furukawa_overflow") for a in audio_before)

    rig.start_daemon()
    status = rig.wait_for_status(lambda s: s["cycles"] >= 3, 20, "three cycles after restart")
    assert rig.stop("daemon") == 0

    after = rig.relay_log()[len(before):]
    relays = rig.configured_relays()
    # relays forced OFF first: the first write of the new daemon to every relay is OFF
    assert {(r["unit"], r["coil"]) for r in after[:len(relays)]} == relays
    assert all(r["value"] is False for r in after[:len(relays)])
    # policy: the interrupted broadcast is not re-run, and stage 4 is restored
    assert all(r["value"] is False for r in after), after
    assert rig.audio_log() == audio_before  # 0 duplicate announcements (none at all)
    assert status["stations"]["shin_hiroo"]["stage_name"] == "overflow"
    interrupted = status["interrupted_broadcasts"]
    assert [(b["zone"], b["station"], b["stage"], b["status"]) for b in interrupted] == [
        ("furukawa_hiroo", "shin_hiroo", 4, "interrupted")]
    assert status["zones"]["furukawa_hiroo"]["last"]["status"] == "interrupted"
    second = rig.log("daemon")[log_before:]
    warning = second.index("WARNING gauged.daemon.restore: broadcast interrupted by a restart "
                           "zone=furukawa_hiroo station=shin_hiroo stage=overflow")
    assert "not re-run" in second[warning:warning + 400]
    assert "broadcast start" not in second


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
