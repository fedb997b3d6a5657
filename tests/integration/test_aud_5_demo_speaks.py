"""AUD-5: `gauged demo` plays the reference speech clips, and its audio sink records them."""

from __future__ import annotations

import hashlib
import itertools
import re
import subprocess
import sys
import tomllib
import wave
from pathlib import Path

from hil import REFERENCE, ROOT, Rig
from speech import analyse

PLAYED = re.compile(r"zone (\S+) plays clip (\S+) \(([\d.]+) s, pcm sha256 ([0-9a-f]{64})\)")


def _pcm_sha256(path: Path) -> str:
    with wave.open(str(path), "rb") as clip:
        return hashlib.sha256(clip.readframes(clip.getnframes())).hexdigest()


def test_aud_5_the_demo_speaks_the_reference_messages(tmp_path: Path) -> None:
    rig = Rig(tmp_path, speed=900)  # only for its config with free loopback ports
    proc = subprocess.run(
        [sys.executable, "-m", "gauged", "demo", "--config", str(rig.config),
         "--speed", "900", "--until-end"],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    played = PLAYED.findall(proc.stderr)
    clips = tomllib.loads(REFERENCE.read_text(encoding="utf-8"))["clips"]
    heard = {clip for _, clip, _, _ in played}
    # the storm climbs to overflow: every level message, in Japanese and in English
    assert {f"furukawa_{m}_{lang}" for m in ("rising", "warning", "overflow")
            for lang in ("ja", "en")} <= heard
    for _zone, clip, seconds, digest in played:
        path = REFERENCE.parent / clips[clip]["file"]
        assert digest == _pcm_sha256(path), clip  # the committed recording, frame for frame
        assert abs(float(seconds) - analyse(path).duration_s) < 0.01
        assert float(seconds) > 3.0  # speech, not the 2-second placeholder tones
    # Japanese first, then English, within each broadcast of a zone
    for zone in {z for z, _, _, _ in played}:
        order = [c for z, c, _, _ in played if z == zone]
        for first, second in itertools.pairwise(order):
            if first.endswith("_ja"):
                assert second == first[:-3] + "_en", order
