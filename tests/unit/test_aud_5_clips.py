"""AUD-5: the reference clips are speech of a plausible length in their stated language.

Each clip of config/minato-furukawa.toml is analysed acoustically (tests/speech.py): syllable-
like energy bursts about as many as the text's syllables (English) or the morae of its kana
reading (Japanese), spoken at a human rate, a broad spectrum whose strongest frequency moves.
The same checks reject a tone, a noise burst and a clip spoken in the other language.
"""

from __future__ import annotations

import importlib.util
import math
import tomllib
import wave
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from speech import analyse, english_syllables, japanese_morae

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "config" / "minato-furukawa.toml"
CLIPS = tomllib.loads(REFERENCE.read_text(encoding="utf-8"))["clips"]


def _make_clips() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_clips",
                                                  ROOT / "config" / "clips" / "make_clips.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


READINGS: dict[str, str] = _make_clips().READINGS


def expected_units(text: str, language: str) -> int:
    """Syllables (en) or morae (ja, of the kana reading the generator speaks)."""
    if language == "ja":
        return japanese_morae(READINGS[text])
    return english_syllables(text)


#: Units per second of a public announcement: Japanese 4-9 morae/s, English 2-6 syllables/s.
RATES = {"ja": (4.0, 9.0), "en": (2.0, 6.0)}


def is_speech(path: Path, text: str, language: str) -> list[str]:
    """Why `path` is not speech of `text` in `language` (empty: it is)."""
    sound = analyse(path)
    units = expected_units(text, language)
    low, high = RATES[language]
    why = []
    if not low <= units / sound.duration_s <= high:
        why.append(f"{units} units in {sound.duration_s:.1f} s is not a {language} speaking rate")
    if not 0.6 <= sound.bursts / units <= 1.4:
        why.append(f"{sound.bursts} energy bursts for {units} units")
    if sound.peak_share > 0.7:
        why.append(f"{sound.peak_share:.0%} of the energy at one frequency: a tone")
    if sound.peak_spread_hz < 100:
        why.append(f"the strongest frequency stays put (±{sound.peak_spread_hz:.0f} Hz)")
    return why


@pytest.mark.parametrize("clip_id", sorted(CLIPS))
def test_aud_5_reference_clip_is_speech_of_plausible_length(clip_id: str) -> None:
    clip = CLIPS[clip_id]
    path = REFERENCE.parent / clip["file"]
    assert clip["language"] in ("ja", "en")
    assert clip["text"]
    assert clip_id.endswith("_" + clip["language"])
    assert is_speech(path, clip["text"], clip["language"]) == []
    with wave.open(str(path), "rb") as audio:  # small: 16 kHz mono 16-bit
        assert (audio.getframerate(), audio.getnchannels(), audio.getsampwidth()) == (16000, 1, 2)


def test_aud_5_each_language_has_every_message() -> None:
    """The ward announces in Japanese, then in English: every message in both."""
    stems = {cid.rsplit("_", 1)[0] for cid in CLIPS}
    assert {f"{stem}_{lang}" for stem in stems for lang in ("ja", "en")} == set(CLIPS)


def _write(path: Path, samples: np.ndarray, rate: int = 16000) -> Path:
    pcm = np.round(np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    with wave.open(str(path), "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(rate)
        audio.writeframes(pcm)
    return path


def test_aud_5_the_check_refuses_a_tone_noise_and_the_wrong_language(tmp_path: Path) -> None:
    text = CLIPS["furukawa_rising_ja"]["text"]
    t = np.arange(16000 * 6) / 16000
    tone = _write(tmp_path / "tone.wav", 0.3 * np.sin(2 * math.pi * 440 * t))
    assert is_speech(tone, text, "ja")
    rng = np.random.default_rng(1)
    noise = _write(tmp_path / "noise.wav", 0.3 * rng.standard_normal(len(t)))
    assert is_speech(noise, text, "ja")
    # a beeping tone has bursts but one frequency
    beeps = _write(tmp_path / "beeps.wav", 0.3 * np.sin(2 * math.pi * 880 * t)
                   * (np.sin(2 * math.pi * 3 * t) > 0))
    assert any("tone" in why or "stays put" in why for why in is_speech(beeps, text, "ja"))
    # the English clip is not the Japanese message (about half the syllables)
    english = REFERENCE.parent / CLIPS["furukawa_rising_en"]["file"]
    assert is_speech(english, text, "ja")
