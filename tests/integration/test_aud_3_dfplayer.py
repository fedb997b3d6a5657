"""AUD-3: the serial MP3 module player (drivers/dfplayer.py) against its simulator
(simulators/dfplayer.py) over a socat pty pair: clips play in order, each for its length; a
silent or wrong module is an `audio_fault` within its timeout; junk is skipped; no crash."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fieldbus import background, field_rig, until
from services import PtyPairFactory

from drivers.configs import DfPlayerConfig
from drivers.dfplayer import DfPlayer
from drivers.errors import AudioFault
from gauged.alarm.types import BroadcastRequest
from simulators.clock import SimClock
from simulators.dfplayer import DfPlayerSim, Track
from simulators.sink import clip_duration

ROOT = Path(__file__).resolve().parents[2]
CLIPS = ROOT / "config" / "clips"
SPEED = 50.0
NAMES = ("furukawa_overflow_ja", "furukawa_overflow_en", "furukawa_warning_ja")
TRACKS = {name: n for n, name in enumerate(NAMES, start=1)}
SECONDS = {name: clip_duration(CLIPS / f"{name}.wav") for name in NAMES}


@dataclass
class Module:
    sim: DfPlayerSim
    player: DfPlayer


@contextlib.asynccontextmanager
async def module(pty_pair: PtyPairFactory, **config: object) -> AsyncIterator[Module]:
    pair = pty_pair("mp3")
    sim = DfPlayerSim(pair.device, {TRACKS[n]: Track(n, SECONDS[n]) for n in NAMES},
                      SimClock(speed=SPEED))
    cfg = DfPlayerConfig.model_validate({"kind": "dfplayer", "port": str(pair.gateway),
                                         "tracks": TRACKS, "poll_s": 0.02, **config})
    player = DfPlayer(cfg)
    async with background(sim.serve(), name="dfplayer"):
        # opening a pty in raw mode flushes its input: a frame sent before would be lost
        await asyncio.wait_for(sim.opened.wait(), 5.0)
        try:
            yield Module(sim, player)
        finally:
            await player.close()


async def test_aud_3_clips_play_in_order_each_for_its_length(pty_pair: PtyPairFactory) -> None:
    async with module(pty_pair, volume=20) as m:
        for name in NAMES[:2]:
            t0 = time.monotonic()
            await m.player.play("ward", name, CLIPS / f"{name}.wav")
            # busy until the module says the track has ended, not before
            assert time.monotonic() - t0 >= SECONDS[name] / SPEED
        assert [(e["track"], e["clip"]) for e in m.sim.journal.entries] == [
            (1, NAMES[0]), (2, NAMES[1])]
        assert m.sim.volume == 20  # set before the first track
        assert m.sim.playing is None
        assert m.sim.bad_frames == 0  # every frame the driver sent had a good checksum


@pytest.mark.parametrize("fault", ["silent", "wrong"])
async def test_aud_3_a_silent_or_wrong_module_is_an_audio_fault_within_its_timeout(
        pty_pair: PtyPairFactory, fault: str) -> None:
    async with module(pty_pair, timeout_s=0.3) as m:
        m.sim.faults.add(fault)
        t0 = time.monotonic()
        with pytest.raises(AudioFault, match=r"gave no answer to 0x06 within 0.3 s \(2 "):
            await m.player.play("ward", NAMES[0], CLIPS / f"{NAMES[0]}.wav")
        # two attempts (retries = 1) of its timeout, plus the wire and the loop
        assert time.monotonic() - t0 < 2 * 0.3 + 0.3
        if fault == "wrong":
            assert m.player.junk_bytes > 0  # answers with a bad checksum were not taken
        # no crash: the module answers again, the next clip plays
        m.sim.faults.clear()
        await m.player.play("ward", NAMES[1], CLIPS / f"{NAMES[1]}.wav")
        assert m.sim.journal.entries[-1]["clip"] == NAMES[1]


async def test_aud_3_line_noise_is_skipped(pty_pair: PtyPairFactory) -> None:
    async with module(pty_pair) as m:
        m.sim.faults.add("junk")
        await m.player.play("ward", NAMES[0], CLIPS / f"{NAMES[0]}.wav")
        assert m.player.junk_bytes > 0
        assert [e["clip"] for e in m.sim.journal.entries] == [NAMES[0]]


async def test_aud_3_a_module_slow_to_start_is_waited_for(pty_pair: PtyPairFactory) -> None:
    async with module(pty_pair) as m:
        m.sim.faults.add("slow_start")  # "stopped" for 50 ms after the play command
        await m.player.play("ward", NAMES[1], CLIPS / f"{NAMES[1]}.wav")
        assert [e["clip"] for e in m.sim.journal.entries] == [NAMES[1]]


async def test_aud_3_a_module_that_acknowledges_but_never_plays_is_an_audio_fault(
        pty_pair: PtyPairFactory) -> None:
    async with module(pty_pair, timeout_s=0.3) as m:
        m.sim.faults.add("dead")
        t0 = time.monotonic()
        with pytest.raises(AudioFault, match="acknowledged track 1 but is not playing"):
            await m.player.play("ward", NAMES[0], CLIPS / f"{NAMES[0]}.wav")
        assert time.monotonic() - t0 < 0.3 + 0.5


async def test_aud_3_cancelling_stops_the_module(pty_pair: PtyPairFactory) -> None:
    async with module(pty_pair) as m:
        task = asyncio.create_task(m.player.play("ward", NAMES[2], CLIPS / f"{NAMES[2]}.wav"))
        await until(lambda: m.sim.playing == TRACKS[NAMES[2]], 5.0, "the track to start")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await until(lambda: m.sim.playing is None, 2.0, "the module to stop")


async def test_aud_3_a_module_stuck_busy_is_stopped_and_an_audio_fault(
        pty_pair: PtyPairFactory) -> None:
    async with module(pty_pair, play_timeout_s=0.4) as m:
        m.sim.faults.add("stuck")
        t0 = time.monotonic()
        with pytest.raises(AudioFault, match=r"still busy with track 1 after 0.4 s: stopped"):
            await m.player.play("ward", NAMES[0], CLIPS / f"{NAMES[0]}.wav")
        assert time.monotonic() - t0 < 0.4 + 0.5
        await until(lambda: m.sim.playing is None, 2.0, "the stop")


async def test_aud_3_a_track_the_card_lacks_or_a_clip_without_a_track(
        pty_pair: PtyPairFactory) -> None:
    async with module(pty_pair) as m:
        m.player.config.tracks["heavy_rain_ja"] = 9  # not on the card
        with pytest.raises(AudioFault, match="error: track not found"):
            await m.player.play("ward", "heavy_rain_ja", CLIPS / "heavy_rain_ja.wav")
        with pytest.raises(AudioFault, match="no track number for it"):
            await m.player.play("ward", "heavy_rain_en", CLIPS / "heavy_rain_en.wav")


async def test_aud_3_a_missing_port_is_an_audio_fault(tmp_path: Path) -> None:
    player = DfPlayer(DfPlayerConfig(kind="dfplayer", port=str(tmp_path / "ttyNONE"),
                                     tracks=TRACKS))
    with pytest.raises(AudioFault, match="cannot open"):
        await player.play("ward", NAMES[0], CLIPS / f"{NAMES[0]}.wav")


def _dfplayer_zone(port: Path) -> str:
    return (f'[players.sink]\nkind = "dfplayer"\nport = "{port}"\npoll_s = 0.02\n'
            f'timeout_s = 0.3\ntracks = {{ warning = 3 }}')


@pytest.mark.parametrize("silent", [False, True])
async def test_aud_3_a_zone_broadcasts_through_the_module(
        tmp_path: Path, pty_pair: PtyPairFactory, silent: bool) -> None:
    """Through the daemon: siren, then the clip on the module; a silent module is an
    audio_fault and the siren still sounded."""
    pair = pty_pair("mp3")

    def edit(text: str) -> str:
        return re.sub(r'\[players\.sink\]\nkind = "sink"\nport = \d+',
                      _dfplayer_zone(pair.gateway), text)

    sim = DfPlayerSim(pair.device, {3: Track("warning", SECONDS["furukawa_warning_ja"])},
                      SimClock(speed=SPEED), faults={"silent"} if silent else set())
    async with background(sim.serve(), name="dfplayer"), \
            field_rig(tmp_path, pty_pair, speed=SPEED, edit=edit) as rig:
        await asyncio.wait_for(sim.opened.wait(), 5.0)
        zone = rig.daemon.zones["riverside"]
        async with background(zone.run(), name="zone"):
            zone.submit(BroadcastRequest(
                time=datetime(2026, 7, 1, tzinfo=UTC), zone="riverside", station="tcp_1",
                stage=3, stage_name="overflow", sequence="overflow", siren_s=0.0, clips=()))
            await until(lambda: zone.last is not None, 10.0, "the broadcast")
        record = zone.last
        assert record is not None
        assert record.siren_on_s >= 10.0
        if silent:
            assert record.clips_played == []
            assert any("audio_fault" in f and "gave no answer" in f for f in record.faults)
            assert any("audio_fault" in f for f in rig.daemon.faults)
        else:
            assert record.clips_played == ["warning"]
            assert [e["track"] for e in sim.journal.entries] == [3]
            assert record.faults == []
