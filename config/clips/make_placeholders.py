"""Write placeholder WAV files for the clips named in ``config/minato-furukawa.toml``.

    python config/clips/make_placeholders.py [CONFIG]

Each clip becomes 2.0 s of a soft sine tone (8 kHz, 16-bit, mono, which ``aplay`` plays on any
ALSA device), a different pitch per clip so that a listener can tell them apart, with 50 ms
fades so that the speakers do not click. They stand in for the ward's recorded announcements.
"""

from __future__ import annotations

import math
import struct
import sys
import tomllib
import wave
from pathlib import Path

RATE_HZ = 8000
DURATION_S = 2.0
AMPLITUDE = 0.2  # of full scale: soft, well clear of clipping on a public-address amplifier
FADE_S = 0.05
#: One pitch per clip, in the order the config lists them (G4 major scale upwards, then on).
PITCHES_HZ = (392.0, 440.0, 493.9, 523.3, 587.3, 659.3, 740.0, 784.0, 880.0, 987.8)

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "minato-furukawa.toml"


def tone(frequency_hz: float) -> bytes:
    """2.0 s of a faded sine at ``frequency_hz`` as 16-bit little-endian PCM frames."""
    frames = int(RATE_HZ * DURATION_S)
    fade = int(RATE_HZ * FADE_S)
    samples = []
    for index in range(frames):
        envelope = min(1.0, index / fade, (frames - 1 - index) / fade)
        value = AMPLITUDE * envelope * math.sin(2.0 * math.pi * frequency_hz * index / RATE_HZ)
        samples.append(round(value * 32767))
    return struct.pack(f"<{frames}h", *samples)


def write_clip(path: Path, frequency_hz: float) -> None:
    """Write one placeholder WAV file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as clip:
        clip.setnchannels(1)
        clip.setsampwidth(2)
        clip.setframerate(RATE_HZ)
        clip.writeframes(tone(frequency_hz))


def main(argv: list[str]) -> int:
    """Write a placeholder for every ``[clips.*]`` entry of the config."""
    config_path = Path(argv[0]) if argv else DEFAULT_CONFIG
    with config_path.open("rb") as stream:
        clips = tomllib.load(stream).get("clips", {})
    if len(clips) > len(PITCHES_HZ):
        print(f"{config_path}: {len(clips)} clips, only {len(PITCHES_HZ)} pitches", file=sys.stderr)
        return 1
    for (name, clip), pitch in zip(clips.items(), PITCHES_HZ, strict=False):
        path = config_path.parent / clip["file"]
        write_clip(path, pitch)
        print(f"{name}: {path} ({pitch:g} Hz)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
