"""Speak the announcement texts of ``config/minato-furukawa.toml`` into WAV files, offline.

    python config/clips/make_clips.py [CONFIG]

Each ``[clips.*]`` entry's ``text`` is spoken by espeak-ng (Debian ``espeak-ng``; no network),
in its ``language`` (``ja``: the Japanese voice, ``en``: American English), resampled to
16 kHz mono 16-bit (small, and plays on any ALSA device) and written to the entry's ``file``.
The output is committed; a ward replaces it with its own recordings (same file names).

espeak-ng reads Japanese kana but not kanji, so every Japanese text has its kana reading in
``READINGS`` below, keyed by the exact text of the config: a changed text without a new
reading stops the script instead of speaking the wrong words. (Open JTalk would read kanji,
but Debian's main archive has no HTS voice for it.)

Same espeak-ng version, same bytes: the script is deterministic.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tomllib
import wave
from pathlib import Path

import numpy as np

RATE_HZ = 16000
WORDS_PER_MINUTE = {"ja": 150, "en": 150}  # a little slower than espeak's 175: outdoor speakers
VOICES = {"ja": "ja", "en": "en-us"}
PEAK = 0.7  # of full scale after normalisation: headroom for the amplifier

#: Kana readings of the Japanese texts (spaces mark the phrases, espeak pauses at "。").
READINGS = {
    "古川の水位が上昇しています。今後の気象情報に注意してください。":
        "ふるかわの すいいが じょうしょうしています。 こんごの きしょうじょうほうに "
        "ちゅういしてください。",
    "古川の水位が警戒値に達しました。建物や地下室の浸水に注意してください":
        "ふるかわの すいいが けいかいちに たっしました。 たてものや ちかしつの しんすいに "
        "ちゅういしてください。",
    "古川があふれる危険があります。避難の準備をしてください。":
        "ふるかわが あふれる きけんが あります。 ひなんの じゅんびを してください。",
    "激しい雨が降っています。建物や地下室の浸水に厳重に注意してください":
        "はげしい あめが ふっています。 たてものや ちかしつの しんすいに げんじゅうに "
        "ちゅういしてください。",
}

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "minato-furukawa.toml"


def speak(text: str, language: str) -> tuple[np.ndarray, int]:
    """espeak-ng's WAV of `text` as float samples in [-1, 1] and its rate."""
    if language == "ja":
        if text not in READINGS:
            raise SystemExit(f"no kana reading for {text!r}: add one to READINGS")
        text = READINGS[text]
    if language not in VOICES:
        raise SystemExit(f"no espeak-ng voice chosen for language {language!r}")
    out = subprocess.run(
        ["espeak-ng", "-v", VOICES[language], "-s", str(WORDS_PER_MINUTE[language]),
         "--stdout", text], check=True, capture_output=True).stdout
    with wave.open(io.BytesIO(out), "rb") as clip:
        rate = clip.getframerate()
        frames = clip.readframes(clip.getnframes())
    return np.frombuffer(frames, dtype="<i2").astype(np.float64) / 32768.0, rate


def resample(samples: np.ndarray, rate: int, to_rate: int) -> np.ndarray:
    """Band-limited resampling by the FFT (speech clips are short: one transform is cheap)."""
    n_out = round(len(samples) * to_rate / rate)
    spectrum = np.fft.rfft(samples)
    keep = n_out // 2 + 1
    resized = np.zeros(keep, dtype=complex)
    resized[:min(keep, len(spectrum))] = spectrum[:keep]
    return np.fft.irfft(resized, n_out) * (n_out / len(samples))


def to_pcm(samples: np.ndarray) -> bytes:
    """Normalised to `PEAK`, 16-bit little-endian."""
    peak = float(np.max(np.abs(samples))) or 1.0
    scaled = np.round(samples / peak * PEAK * 32767).astype("<i2")
    return scaled.tobytes()


def write_clip(path: Path, text: str, language: str) -> float:
    """Write one clip; its duration (s)."""
    samples, rate = speak(text, language)
    pcm = to_pcm(resample(samples, rate, RATE_HZ))
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as clip:
        clip.setnchannels(1)
        clip.setsampwidth(2)
        clip.setframerate(RATE_HZ)
        clip.writeframes(pcm)
    return len(pcm) / 2 / RATE_HZ


def main(argv: list[str]) -> int:
    """Speak every ``[clips.*]`` entry of the config that has a text."""
    config_path = Path(argv[0]) if argv else DEFAULT_CONFIG
    with config_path.open("rb") as stream:
        clips = tomllib.load(stream).get("clips", {})
    for name, clip in clips.items():
        if not clip.get("text"):
            print(f"{name}: no text, skipped", file=sys.stderr)
            continue
        path = config_path.parent / clip["file"]
        seconds = write_clip(path, clip["text"], clip.get("language", "ja"))
        print(f"{name}: {path} ({seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
