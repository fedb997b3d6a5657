"""AUD-1, the decoding rules (gauged/config/audio.py) on files written by the test."""

from __future__ import annotations

import math
import re
import wave
from pathlib import Path

import numpy as np
import pytest

from gauged.config.audio import ClipError, inspect_clip, judge
from gauged.config.load import load_config
from gauged.config.models import AudioConfig
from gauged.errors import ConfigError


def _wav(path: Path, data: bytes, *, width: int, rate: int = 8000, channels: int = 1) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(data)
    return path


def _tone(n: int, amplitude: float) -> np.ndarray:
    return amplitude * np.sin(2 * math.pi * 440 * np.arange(n) / 8000)


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_aud_1_every_pcm_width_decodes_to_its_level(tmp_path: Path, width: int) -> None:
    x = _tone(8000, 0.5)  # -9 dBFS RMS (0.5 / sqrt 2)
    full = float(1 << (8 * width - 1)) - 1
    ints = np.round(x * full).astype(np.int64)
    if width == 1:
        data = (ints + 128).astype(np.uint8).tobytes()
    elif width == 3:
        data = b"".join(int(v).to_bytes(3, "little", signed=True) for v in ints)
    else:
        data = ints.astype(f"<i{width}").tobytes()
    info = inspect_clip(_wav(tmp_path / "c.wav", data, width=width))
    assert info.duration_s == 1.0
    assert info.loudest_dbfs == pytest.approx(20 * math.log10(0.5 / math.sqrt(2)), abs=0.2)
    assert judge(info, AudioConfig()) == []


def test_aud_1_stereo_counts_its_channels(tmp_path: Path) -> None:
    x = np.repeat(np.round(_tone(8000, 0.3) * 32767).astype("<i2"), 2)
    info = inspect_clip(_wav(tmp_path / "s.wav", x.tobytes(), width=2, channels=2))
    assert (info.channels, info.duration_s) == (2, 1.0)
    assert judge(info, AudioConfig(channels_max=1)) == ["2 channels; [audio] channels_max is 1"]


def _mp3(path: Path, header: bytes, audio_bytes: int, *, id3: bool = True) -> Path:
    tag = b"ID3\x04\x00\x00\x00\x00\x00\x0a" + b"\x00" * 10 if id3 else b""  # 10-byte body
    path.write_bytes(tag + header + b"\x00" * (audio_bytes - len(header)))
    return path


def test_aud_1_an_mp3_header_gives_rate_channels_and_length(tmp_path: Path) -> None:
    # MPEG-1 layer III, 128 kbit/s, 44.1 kHz, mono: 16,000 bytes are one second
    info = inspect_clip(_mp3(tmp_path / "0001.mp3", b"\xff\xfb\x90\xc0", 16000))
    assert (info.format, info.rate, info.channels) == ("mp3", 44100, 1)
    assert info.duration_s == pytest.approx(1.0)
    assert info.loudest_dbfs is None  # not decoded: no level rule applies
    assert judge(info, AudioConfig()) == []
    # MPEG-2 layer III, 64 kbit/s, 22.05 kHz, stereo, no tag: 8,000 bytes a second
    info = inspect_clip(_mp3(tmp_path / "0002.mp3", b"\xff\xf3\x80\x00", 24000, id3=False))
    assert (info.rate, info.channels, info.duration_s) == (22050, 2, pytest.approx(3.0))


@pytest.mark.parametrize("content", [b"", b"ID3\x04\x00\x00\x00\x00\x00\x00",
                                     b"RIFF....WAVEfmt ", b"\xff\xfb\xf0\x00" + b"\x00" * 99,
                                     b"\xff\xfb\x9c\x00" + b"\x00" * 99])
def test_aud_1_not_an_mp3_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.mp3"
    path.write_bytes(content)
    with pytest.raises(ClipError):
        inspect_clip(path)


def _card_config(tmp_path: Path, card: Path) -> Path:
    reference = Path(__file__).resolve().parents[2] / "config" / "minato-furukawa.toml"
    text = reference.read_text(encoding="utf-8").replace(
        'file = "clips/', f'file = "{reference.parent}/clips/')
    clips = re.findall(r"^\[clips\.(\w+)\]", text, flags=re.MULTILINE)
    tracks = ", ".join(f"{clip} = {n}" for n, clip in enumerate(clips, start=1))
    text = re.sub(r'\[players\.speakers\]\nkind = "sink"\nhost = "127.0.0.1"\nport = \d+',
                  f'[players.speakers]\nkind = "dfplayer"\nport = "/dev/ttyS1"\n'
                  f'card_dir = "{card.name}"\ntracks = {{ {tracks} }}', text)
    # one module, one zone: the other zones' players become sinks
    text = text.replace('player = "speakers"', 'player = "sink"')
    text = text.replace('player = "sink"', 'player = "speakers"', 1)
    text += '\n[players.sink]\nkind = "sink"\nport = 15040\n'
    path = tmp_path / "gauged.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_aud_1_the_modules_card_is_checked_track_by_track(tmp_path: Path) -> None:
    card = tmp_path / "card"
    card.mkdir()
    for n in range(1, 9):
        _mp3(card / f"{n:04d}_clip.mp3", b"\xff\xfb\x90\xc0", 16000 * 5)  # 5 s each
    config = _card_config(tmp_path, card)
    loaded = load_config(config, check_files=True)
    assert loaded.players["speakers"].kind == "dfplayer"
    (card / "0003_clip.mp3").write_bytes(b"not an mp3 at all")
    (card / "0005_clip.mp3").unlink()
    _mp3(card / "0007_long.mp3", b"\xff\xfb\x90\xc0", 16000 * 61)  # 61 s, in place of 0007
    (card / "0007_clip.mp3").unlink()
    _mp3(card / "0008_clip.mp3", b"\xff\xfb\x90\xc0", 16000 * 61)
    with pytest.raises(ConfigError) as caught:
        load_config(config, check_files=True)
    lines = [line.split(": ", 1)[1] for line in caught.value.problems]
    assert len(lines) == 4, lines
    assert lines[0].startswith("player speakers: tracks.furukawa_warning_ja: ")
    assert "not an MP3 file" in lines[0]
    assert lines[1].startswith("player speakers: tracks.furukawa_overflow_ja: no files "
                               "0005*.mp3")
    assert lines[2].startswith("player speakers: tracks.heavy_rain_ja: ")
    assert "longer than [audio] clip_max_s = 60 s" in lines[2]
    assert lines[3].startswith("player speakers: tracks.heavy_rain_en: ")
    assert "longer than" in lines[3]
