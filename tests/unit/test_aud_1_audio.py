"""AUD-1, the decoding rules (gauged/config/audio.py) on files written by the test."""

from __future__ import annotations

import math
import wave
from pathlib import Path

import numpy as np
import pytest

from gauged.config.audio import ClipError, inspect_clip, judge
from gauged.config.models import AudioConfig


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
