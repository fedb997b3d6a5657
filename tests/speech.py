"""Is a WAV file speech, and of a length that fits its text? Acoustic checks for the tests.

No speech recogniser: the checks are what tells speech from a tone or a noise burst.
- syllable-like bursts: the 10 ms energy envelope rises and falls by `HYSTERESIS_DB` again and
  again (a tone or a hum has one burst; a voice about one per syllable or mora);
- a broad spectrum: the loudest 5 frequency bins hold a minority of the energy (a tone: all);
- a moving spectral peak over the voiced frames (a tone's stays on one frequency);
- the text's syllables (English) or morae (Japanese kana reading) against the bursts heard.
"""

from __future__ import annotations

import re
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HYSTERESIS_DB = 6.0
FLOOR_DB = 35.0  # below the clip's loudest 10 ms: silence, not a syllable


@dataclass(frozen=True)
class Acoustics:
    duration_s: float
    rate: int
    bursts: int  # syllable-like energy bursts
    peak_share: float  # share of the energy in the 5 bins around the strongest frequency
    peak_spread_hz: float  # standard deviation of the strongest frequency of voiced frames


def read_pcm(path: Path) -> tuple[np.ndarray, int]:
    """16-bit mono PCM as floats in [-1, 1] and the frame rate."""
    with wave.open(str(path), "rb") as clip:
        assert clip.getsampwidth() == 2, path
        assert clip.getnchannels() == 1, path
        rate = clip.getframerate()
        data = clip.readframes(clip.getnframes())
    return np.frombuffer(data, dtype="<i2").astype(np.float64) / 32768.0, rate


def _frames(samples: np.ndarray, rate: int, seconds: float) -> np.ndarray:
    n = int(rate * seconds)
    count = len(samples) // n
    return samples[:count * n].reshape(count, n)


def count_bursts(samples: np.ndarray, rate: int) -> int:
    """Rises of the energy envelope by HYSTERESIS_DB above the last low, each after a fall of
    as much from the last high (a syllable nucleus, then its consonant or pause)."""
    db = 10 * np.log10(np.mean(_frames(samples, rate, 0.01) ** 2, axis=1) + 1e-10)
    db = np.convolve(db, np.ones(3) / 3, "same")
    floor = float(db.max()) - FLOOR_DB
    count, low, high = 0, float(db[0]), None
    for value in db.tolist():
        if high is None:
            low = min(low, value)
            if value > low + HYSTERESIS_DB and value > floor:
                high, count = value, count + 1
        else:
            high = max(high, value)
            if value < high - HYSTERESIS_DB:
                high, low = None, value
    return count


def analyse(path: Path) -> Acoustics:
    samples, rate = read_pcm(path)
    frames = _frames(samples, rate, 0.02)
    db = 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-12)
    voiced = frames[db > db.max() - 25]
    spectra = np.abs(np.fft.rfft(voiced * np.hanning(frames.shape[1]), axis=1)) ** 2
    total = spectra.sum(axis=0)
    top = int(np.argmax(total))
    share = float(total[max(top - 2, 0):top + 3].sum() / total.sum())
    strongest = np.argmax(spectra, axis=1) * rate / frames.shape[1]
    return Acoustics(duration_s=len(samples) / rate, rate=rate,
                     bursts=count_bursts(samples, rate), peak_share=share,
                     peak_spread_hz=float(np.std(strongest)))


def english_syllables(text: str) -> int:
    """Vowel groups per word, a final silent e dropped (a rough count, good to ±20 %)."""
    total = 0
    for word in re.findall(r"[a-z]+", text.lower()):
        groups = len(re.findall(r"[aeiouy]+", word))
        if word.endswith("e") and not word.endswith(("le", "ee")) and groups > 1:
            groups -= 1
        total += max(groups, 1)
    return total


def japanese_morae(kana: str) -> int:
    """Morae of a kana reading: every kana but the small ゃゅょぁぃぅぇぉ (which join the one
    before); っ, ん and long vowels count."""
    small = set("ゃゅょぁぃぅぇぉャュョァィゥェォ")
    return sum(1 for ch in kana if ("\u3041" <= ch <= "\u30ff") and ch not in small)
