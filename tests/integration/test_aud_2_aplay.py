"""AUD-2: the aplay player against the real binary (Debian alsa-utils).

On ALSA's `null` device; on ALSA's `file` plugin declared in a test ~/.asoundrc (a temporary
HOME), so that the PCM frames aplay wrote are read back and compared with the clip's; a device
that does not exist is an `audio_fault`, and the siren still sounds (ALM-8).
"""

from __future__ import annotations

import re
import shutil
import wave
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fieldbus import background, field_rig, until
from services import PtyPairFactory

from drivers.configs import AplayConfig
from drivers.errors import AudioFault
from drivers.players import AplayPlayer
from gauged.alarm.types import BroadcastRequest

ROOT = Path(__file__).resolve().parents[2]
CLIPS = ROOT / "config" / "clips"
APLAY = shutil.which("aplay") or "/usr/bin/aplay"  # `make test` installs alsa-utils


def _read(path: Path) -> bytes:
    return path.read_bytes()


def _frames(path: Path) -> tuple[bytes, int]:
    """The clip's PCM frames and the bytes of one frame."""
    with wave.open(str(path), "rb") as clip:
        return clip.readframes(clip.getnframes()), clip.getsampwidth() * clip.getnchannels()


@pytest.fixture
def tap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An ALSA device `tap` that writes what it is given, raw, to a file: the file plugin
    over the null device, declared in the ~/.asoundrc of a temporary HOME."""
    home = tmp_path / "home"
    home.mkdir()
    out = tmp_path / "played.raw"
    (home / ".asoundrc").write_text(
        f'pcm.tap {{\n  type file\n  slave.pcm "null"\n  file "{out}"\n  format "raw"\n}}\n',
        encoding="utf-8")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("ALSA_CONFIG_PATH", raising=False)
    return out


async def test_aud_2_real_aplay_plays_on_the_null_device() -> None:
    player = AplayPlayer(AplayConfig(kind="aplay", command=APLAY, device="null"))
    await player.play("ward", "heavy_rain_en", CLIPS / "heavy_rain_en.wav")


@pytest.mark.parametrize("clip", ["furukawa_overflow_ja", "heavy_rain_en"])
async def test_aud_2_the_frames_aplay_writes_are_the_clips(tap: Path, clip: str) -> None:
    player = AplayPlayer(AplayConfig(kind="aplay", command=APLAY, device="tap"))
    await player.play("ward", clip, CLIPS / f"{clip}.wav")
    pcm, frame_bytes = _frames(CLIPS / f"{clip}.wav")
    played = _read(tap)
    assert played[:len(pcm)] == pcm  # every frame, in order, unchanged
    # aplay pads its last period with silence, and nothing else
    padding = played[len(pcm):]
    assert padding == bytes(len(padding))
    assert len(padding) // frame_bytes < 16000 // 10  # less than 0.1 s at 16 kHz


async def test_aud_2_two_clips_in_a_row_are_both_played_whole(tap: Path) -> None:
    player = AplayPlayer(AplayConfig(kind="aplay", command=APLAY, device="tap"))
    ja, _ = _frames(CLIPS / "furukawa_rising_ja.wav")
    await player.play("ward", "furukawa_rising_ja", CLIPS / "furukawa_rising_ja.wav")
    assert _read(tap)[:len(ja)] == ja
    en, _ = _frames(CLIPS / "furukawa_rising_en.wav")
    await player.play("ward", "furukawa_rising_en", CLIPS / "furukawa_rising_en.wav")
    assert _read(tap)[:len(en)] == en  # the file plugin starts the file again


@pytest.mark.parametrize("device", ["hw:9", "no_such_device"])
async def test_aud_2_a_missing_device_is_an_audio_fault(device: str) -> None:
    player = AplayPlayer(AplayConfig(kind="aplay", command=APLAY, device=device))
    with pytest.raises(AudioFault, match=r"exited 1: .*audio open error"):
        await player.play("ward", "heavy_rain_en", CLIPS / "heavy_rain_en.wav")


async def test_aud_2_a_corrupt_file_is_an_audio_fault(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x24\x00\x00\x00WAVEjunkjunkjunk")
    player = AplayPlayer(AplayConfig(kind="aplay", command=APLAY, device="null"))
    with pytest.raises(AudioFault, match="exited"):
        await player.play("ward", "bad", bad)


async def test_aud_2_real_aplay_without_a_device_still_sounds_the_siren(
        tmp_path: Path, pty_pair: PtyPairFactory) -> None:
    def edit(text: str) -> str:  # the real aplay, an ALSA card that is not there
        return re.sub(r'\[players\.sink\]\nkind = "sink"\nport = \d+',
                      f'[players.sink]\nkind = "aplay"\ncommand = "{APLAY}"\ndevice = "hw:9"',
                      text)

    speed = 50.0
    async with field_rig(tmp_path, pty_pair, speed=speed, edit=edit) as rig:
        zone = rig.daemon.zones["riverside"]
        async with background(zone.run(), name="zone"):
            zone.submit(BroadcastRequest(
                time=datetime(2026, 7, 1, tzinfo=UTC), zone="riverside", station="tcp_1",
                stage=3, stage_name="overflow", sequence="overflow", siren_s=0.0, clips=()))
            await until(lambda: zone.last is not None, 10.0, "the broadcast")
        record = zone.last
        assert record is not None
        assert record.siren_on_s >= 10.0  # the siren sounded its full time
        siren = [r for r in rig.fleet.relay_log if r["bus"] == "relays" and r["coil"] == 0]
        assert [r["value"] for r in siren if r["value"] != r["previous"]] == [True, False]
        assert record.clips_played == []
        assert any(f.startswith("audio_fault") and "audio open error" in f
                   for f in record.faults)
        assert any("audio_fault" in f for f in rig.daemon.faults)
