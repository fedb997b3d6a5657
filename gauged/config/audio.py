"""What a clip must be before a broadcast needs it (QUALITY AUD-1).

`gauged check-config` and the daemon's start decode every configured clip: a corrupt, empty,
truncated or silent file, an unusual rate or channel count, or one longer than
`[audio] clip_max_s` is a configuration error naming file and clip (check-config exit 2, the
daemon refuses to start): found on the bench, not during an alarm. A clip whose file is
missing stays a warning (`checks.missing_clip_files`): the siren still sounds.

WAV is decoded in full with the standard library's `wave` (and numpy for the level); an MP3
(the copy of a serial module's card, drivers/dfplayer.py) gets a header check: an MPEG audio
frame (after an ID3v2 tag) with a valid rate, its duration estimated from the first frame's
bit rate (exact for constant bit rate, which such cards use). No MP3 decoder is pulled in for
the level: the module plays its own card, and the WAV the gateway keeps is what is checked.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drivers.configs import DfPlayerConfig
from gauged.config.models import AudioConfig
from gauged.config.settings import Config

LEVEL_WINDOW_S = 0.05  # the loudest 50 ms decide "silent"


class ClipError(ValueError):
    """A clip file that cannot be played as configured; the message says why."""


@dataclass(frozen=True)
class ClipInfo:
    """What decoding a clip found."""

    format: str  # "wav" or "mp3"
    rate: int
    channels: int
    duration_s: float
    loudest_dbfs: float | None  # RMS of the loudest 50 ms; None: not decoded (MP3)


def _samples(data: bytes, width: int) -> np.ndarray:
    """PCM bytes as floats in [-1, 1] (WAV: 8-bit unsigned, 16/24/32-bit signed LE)."""
    if width == 1:
        return (np.frombuffer(data, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
    if width == 3:
        raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)
        ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
        return ints.astype(np.float64) / float(1 << 23)
    dtype = {2: "<i2", 4: "<i4"}[width]
    return np.frombuffer(data, dtype=dtype).astype(np.float64) / float(1 << (8 * width - 1))


def loudest_dbfs(samples: np.ndarray, rate: int, channels: int) -> float:
    """AC RMS level (dBFS) of the loudest `LEVEL_WINDOW_S` of the clip, all channels."""
    mono = samples.reshape(-1, channels).mean(axis=1) if channels > 1 else samples
    n = max(1, int(rate * LEVEL_WINDOW_S))
    count = max(1, len(mono) // n)
    windows = np.resize(mono, count * n).reshape(count, n) if len(mono) >= n else \
        mono.reshape(1, -1)
    # the variance, not the mean square: a constant (DC) offset is silence too
    rms = float(np.sqrt(np.max(np.var(windows, axis=1))))
    return -200.0 if rms <= 0 else 20.0 * float(np.log10(rms))


def inspect_wav(path: Path) -> ClipInfo:
    """Decode a WAV file in full; raise ClipError if it is not playable PCM."""
    try:
        with wave.open(str(path), "rb") as clip:
            rate, channels = clip.getframerate(), clip.getnchannels()
            width, frames = clip.getsampwidth(), clip.getnframes()
            data = clip.readframes(frames)
    except (OSError, EOFError, wave.Error) as exc:
        raise ClipError(f"not a readable WAV file ({exc})") from exc
    if rate <= 0 or channels <= 0:
        raise ClipError(f"WAV header says {rate} Hz, {channels} channels")
    if width not in (1, 2, 3, 4):
        raise ClipError(f"{8 * width}-bit samples: aplay and the players take 8 to 32 bits")
    if frames == 0:
        raise ClipError("empty: the WAV file holds no audio frames")
    got = len(data) // (width * channels)
    if got < frames:
        raise ClipError(f"truncated: the header announces {frames} frames, the file holds "
                        f"{got}")
    samples = _samples(data[:got * width * channels], width)
    return ClipInfo("wav", rate, channels, frames / rate, loudest_dbfs(samples, rate, channels))


# MPEG audio: bit rates (kbit/s) by version and layer, sample rates by version.
_BITRATES = {
    (1, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (1, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (1, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (2, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (2, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_BITRATES[(2, 3)] = _BITRATES[(2, 2)]
_RATES = {1: (44100, 48000, 32000), 2: (22050, 24000, 16000), 25: (11025, 12000, 8000)}


def inspect_mp3(path: Path) -> ClipInfo:
    """Check an MP3's first frame header; raise ClipError if there is none."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ClipError(f"cannot read: {exc}") from exc
    start = 0
    if data[:3] == b"ID3" and len(data) >= 10:  # ID3v2: a syncsafe size after 6 bytes
        size = (data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9]
        start = 10 + size
    header = data[start:start + 4]
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        raise ClipError("no MPEG audio frame where one must start: not an MP3 file")
    version = {3: 1, 2: 2, 0: 25}.get((header[1] >> 3) & 3)
    layer = {3: 1, 2: 2, 1: 3}.get((header[1] >> 1) & 3)
    rate_index, bitrate_index = (header[2] >> 2) & 3, header[2] >> 4
    if version is None or layer is None or rate_index == 3 or bitrate_index in (0, 15):
        raise ClipError("corrupt MPEG frame header (reserved version, layer, rate or bit rate)")
    kbps = _BITRATES[(min(version, 2), layer)][bitrate_index]
    rate = _RATES[version][rate_index]
    channels = 1 if header[3] >> 6 == 3 else 2
    audio_bytes = len(data) - start
    if data[-128:-125] == b"TAG":  # ID3v1 at the end
        audio_bytes -= 128
    return ClipInfo("mp3", rate, channels, audio_bytes * 8 / (kbps * 1000), None)


def inspect_clip(path: Path) -> ClipInfo:
    """Decode (WAV) or check (MP3, by its name) one clip file; raise ClipError."""
    return inspect_mp3(path) if path.suffix.lower() == ".mp3" else inspect_wav(path)


def judge(info: ClipInfo, rules: AudioConfig) -> list[str]:
    """What is wrong with a decoded clip under `rules` (empty: nothing)."""
    problems = []
    if info.rate not in rules.rates_hz:
        problems.append(f"{info.rate} Hz is not one of [audio] rates_hz "
                        f"{', '.join(str(r) for r in rules.rates_hz)}")
    if info.channels > rules.channels_max:
        problems.append(f"{info.channels} channels; [audio] channels_max is "
                        f"{rules.channels_max}")
    if info.duration_s > rules.clip_max_s:
        problems.append(f"{info.duration_s:.1f} s is longer than [audio] clip_max_s = "
                        f"{rules.clip_max_s:g} s")
    if info.duration_s < rules.clip_min_s:
        problems.append(f"{info.duration_s:.2f} s is shorter than [audio] clip_min_s = "
                        f"{rules.clip_min_s:g} s")
    if info.loudest_dbfs is not None and info.loudest_dbfs < rules.silence_dbfs:
        problems.append(f"silent: its loudest {LEVEL_WINDOW_S * 1000:.0f} ms is "
                        f"{info.loudest_dbfs:.0f} dBFS, below [audio] silence_dbfs = "
                        f"{rules.silence_dbfs:g}")
    return problems


def check_clips(config: Config) -> tuple[dict[str, ClipInfo], list[str]]:
    """Decode every clip whose file exists: (what each holds, the problems as
    `file: clip ID: file: message`). Missing files are `missing_clip_files`' warnings."""
    infos: dict[str, ClipInfo] = {}
    problems: list[str] = []
    for cid in config.clips:
        path = config.clip_path(cid)
        if not path.is_file():
            continue
        where = f"{config.source}: clip {cid}: file: {path}"
        try:
            info = inspect_clip(path)
        except ClipError as exc:
            problems.append(f"{where}: {exc}")
            continue
        infos[cid] = info
        problems += [f"{where}: {why}" for why in judge(info, config.audio)]
    return infos, problems + card_problems(config)


def card_problems(config: Config) -> list[str]:
    """The MP3 files of each serial module's card (`card_dir`, a copy of its `mp3` folder):
    one file `NNNN*.mp3` per track, each a valid MP3 within the `[audio]` rules."""
    problems = []
    for name, player in config.players.items():
        if not isinstance(player, DfPlayerConfig) or player.card_dir is None:
            continue
        folder = Path(player.card_dir)
        if not folder.is_absolute():
            folder = config.source.resolve().parent / folder
        if not folder.is_dir():
            problems.append(f"{config.source}: player {name}: card_dir: {folder} is not a "
                            f"folder")
            continue
        for clip, track in player.tracks.items():
            where = f"{config.source}: player {name}: tracks.{clip}"
            files = sorted(folder.glob(f"{track:04d}*.mp3"))
            if len(files) != 1:
                problems.append(f"{where}: {len(files) or 'no'} files {track:04d}*.mp3 in "
                                f"{folder} (the module plays exactly one)")
                continue
            try:
                info = inspect_mp3(files[0])
            except ClipError as exc:
                problems.append(f"{where}: {files[0]}: {exc}")
                continue
            problems += [f"{where}: {files[0]}: {why}" for why in judge(info, config.audio)]
    return problems


def player_problems(config: Config) -> list[str]:
    """Rules of players that span sections, as `player NAME: field: message`: a serial MP3
    module (one output) plays one zone, and has a track number for every clip."""
    problems = []
    for name, player in config.players.items():
        if not isinstance(player, DfPlayerConfig):
            continue
        zones = [zid for zid, zone in config.zones.items() if zone.player == name]
        if len(zones) > 1:
            problems.append(f"player {name}: kind: a dfplayer module has one output and plays "
                            f"one zone; zones {', '.join(zones)} share it")
        problems += [f"player {name}: tracks.{clip}: unknown clip {clip!r}"
                     for clip in player.tracks if clip not in config.clips]
        missing = [clip for clip in config.clips if clip not in player.tracks]
        if missing:
            problems.append(f"player {name}: tracks: no track number for clip(s) "
                            f"{', '.join(missing)}")
        seen: dict[int, str] = {}
        for clip, number in player.tracks.items():
            if number in seen:
                problems.append(f"player {name}: tracks.{clip}: track {number} is already "
                                f"clip {seen[number]}")
            seen.setdefault(number, clip)
    return problems
