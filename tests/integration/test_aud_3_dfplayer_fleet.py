"""AUD-3 through the processes: a zone plays through a serial MP3 module (`dfplayer`) that
`gauged simulate` serves on the device side of a socat pty pair (`--serial mp3=PATH`), and
`gauged run` drives on the other side. The tracks arrive in order in the simulators' audio
log (`audio.jsonl`), each after the one before has ended; a module made silent through the
faults file is an `audio_fault` and the siren still sounds. The module's knobs also go
through the fleet's control channel."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hil import REFERENCE, Rig
from services import PtyPair, PtyPairFactory

from simulators.clock import SimClock
from simulators.control import handle
from simulators.fleet import Fleet

SPEED = 180.0
ZONE = "furukawa_hiroo"
SIREN_COIL = 0
CLIPS = sorted(tomllib.loads(REFERENCE.read_text(encoding="utf-8"))["clips"])
TRACKS = {clip: n for n, clip in enumerate(CLIPS, start=11)}  # not 1, 2, …: the map is used


def module_config(pair: PtyPair, timeout_s: float = 0.5) -> Any:
    """The edit: zone furukawa_hiroo plays through player `mp3`, a module on `pair`."""
    tracks = ", ".join(f"{clip} = {n}" for clip, n in TRACKS.items())

    def edit(text: str) -> str:
        zone = f'[zones.{ZONE}]\n'
        head, _, tail = text.partition(zone)
        tail = tail.replace('player = "speakers"\n', 'player = "mp3"\n', 1)
        return (f"{head}{zone}{tail}\n[players.mp3]\nkind = \"dfplayer\"\n"
                f"port = \"{pair.gateway}\"\ntimeout_s = {timeout_s}\npoll_s = 0.02\n"
                f"tracks = {{ {tracks} }}\n")
    return edit


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path, speed=SPEED)
    try:
        yield rig
    finally:
        rig.close()


def finished(s: dict[str, Any]) -> bool:
    last = s["zones"][ZONE]["last"]
    return last is not None and not s["zones"][ZONE]["busy"]


def test_aud_3_a_zone_plays_its_clips_through_the_simulated_module_in_order(
        rig: Rig, pty_pair: PtyPairFactory) -> None:
    pair = pty_pair("mp3")
    rig.edit_config(module_config(pair))
    rig.start_simulators(rig.steady_level(3.7), serial={"mp3": pair.device})  # stage 3
    rig.start_daemon()
    status = rig.wait_for_status(finished, rig.lead_s + 30, "the warning broadcast")
    assert status["stations"]["shin_hiroo"]["stage_name"] == "warning"
    assert status["zones"][ZONE]["last"]["outcome"] == "done"
    assert rig.stop("daemon") == 0

    module = [a for a in rig.audio_log() if a["player"] == "mp3"]
    wanted = ["furukawa_warning_ja", "furukawa_warning_en"]
    assert [(a["zone"], a["track"], a["clip"]) for a in module] == [
        (ZONE, TRACKS[clip], clip) for clip in wanted]
    assert all(a["path"] == str(pair.device) for a in module)
    # the second track starts only once the module has said the first has ended
    first, second = module
    assert (second["t_real"] - first["t_real"]) * SPEED >= first["duration_s"]
    assert datetime.fromisoformat(second["t_sim"]) > datetime.fromisoformat(first["t_sim"])
    assert first["duration_s"] > 1.0  # the clip's length, from its WAV file
    # nothing of this zone went to the sink
    assert not [a for a in rig.audio_log() if a["zone"] == ZONE and a["player"] != "mp3"]


def test_aud_3_a_module_made_silent_by_the_faults_file_is_an_audio_fault_siren_sounds(
        rig: Rig, pty_pair: PtyPairFactory, tmp_path: Path) -> None:
    pair = pty_pair("mp3")
    rig.edit_config(module_config(pair, timeout_s=0.3))
    faults = tmp_path / "faults.toml"
    faults.write_text('[[fault]]\nbus = "mp3"\nno_answer = true\n', encoding="utf-8")
    rig.start_simulators(rig.steady_level(4.7), faults=faults,  # stage 4: siren, then clips
                         serial={"mp3": pair.device})
    rig.start_daemon()
    status = rig.wait_for_status(finished, rig.lead_s + 30, "the overflow broadcast")
    assert rig.stop("daemon") == 0
    last = status["zones"][ZONE]["last"]
    assert status["stations"]["shin_hiroo"]["stage_name"] == "overflow"
    assert "audio_fault" in rig.log("daemon")
    assert "gave no answer" in rig.log("daemon")
    assert [a for a in rig.audio_log() if a["player"] == "mp3"] == []
    siren = [(r["value"], r["t_real"]) for r in rig.relay_log()
             if r["unit"] == 1 and r["coil"] == SIREN_COIL and r["value"] != r["previous"]]
    assert [v for v, _ in siren] == [True, False], last
    assert (siren[1][1] - siren[0][1]) * SPEED >= 10.0  # the siren's 10 s, whatever the audio


async def test_aud_3_the_control_channel_sets_the_module_knobs(
        tmp_path: Path, pty_pair: PtyPairFactory) -> None:
    pair = pty_pair("mp3")
    config = tmp_path / "gauged.toml"
    config.write_text(module_config(pair)(REFERENCE.read_text(encoding="utf-8")).replace(
        'file = "clips/', f'file = "{REFERENCE.parent}/clips/'), encoding="utf-8")
    unserved = Fleet(config, None, SimClock(SPEED))
    assert unserved.modules == {}
    assert any("--serial mp3=PATH" in note for note in unserved.notes)
    fleet = Fleet(config, None, SimClock(SPEED), serial_paths={"mp3": pair.device})
    assert sorted(fleet.modules["mp3"].tracks) == sorted(TRACKS.values())
    async with fleet:
        assert handle(fleet, {"op": "set_fault", "bus": "mp3", "knobs": {"dead": True}}) == \
            {"ok": True}
        assert fleet.modules["mp3"].faults == {"dead"}
        assert handle(fleet, {"op": "get_faults"})["faults"] == [
            {"bus": "mp3", "unit": 0, "knobs": {"dead": True}}]
        bad = handle(fleet, {"op": "set_fault", "bus": "mp3", "knobs": {"dead": 0.5}})
        assert bad["ok"] is False
        assert "on or off" in bad["error"]
        bad = handle(fleet, {"op": "set_fault", "bus": "mp3", "knobs": {"exception": 4}})
        assert bad["ok"] is False
        assert "unknown knob 'exception'" in bad["error"]
        assert handle(fleet, {"op": "clear_faults", "bus": "mp3"}) == {"ok": True}
        assert fleet.modules["mp3"].faults == set()
        stats = handle(fleet, {"op": "stats"})
        assert {"bus": "mp3", "kind": "dfplayer", "frames": 0, "bad_frames": 0} in \
            stats["buses"]
