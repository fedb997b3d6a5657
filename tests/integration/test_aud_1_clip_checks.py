"""AUD-1: a clip file corrupt, empty, silent, at a wrong rate or over the maximum length is a
configuration error naming file and clip: `check-config` exits 2, the daemon refuses to start.
The daemon knows each clip's duration: a broadcast's record carries its audio start and end."""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import subprocess
import sys
import wave
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from fieldbus import background, field_rig, until
from services import PtyPairFactory

from gauged.alarm.types import BroadcastRequest
from gauged.config.load import load_config
from gauged.daemon.daemon import Daemon
from gauged.errors import StartupError

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "config" / "minato-furukawa.toml"
VICTIM = "furukawa_warning_en"  # the clip each case spoils


def _wav(path: Path, samples: np.ndarray, rate: int = 16000, width: int = 2) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(np.round(samples * 32767).astype("<i2").tobytes())


def _tone(seconds: float, rate: int = 16000, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return amplitude * np.sin(2 * math.pi * 440 * t)


def _truncate(path: Path) -> None:
    _wav(path, _tone(2.0))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the header still announces 2 s


SPOILERS: dict[str, tuple[Callable[[Path], None], str]] = {
    "corrupt": (lambda p: p.write_bytes(b"RIFF\x10\x00\x00\x00garbage, not a WAVE file"),
                "not a readable WAV file"),
    "empty_file": (lambda p: p.write_bytes(b""), "not a readable WAV file"),
    "no_frames": (lambda p: _wav(p, np.zeros(0)), "empty"),
    "truncated": (_truncate, "truncated"),
    "silent": (lambda p: _wav(p, np.zeros(16000 * 3)), "silent"),
    "dc_offset_only": (lambda p: _wav(p, np.full(16000 * 3, 0.2)), "silent"),
    "wrong_rate": (lambda p: _wav(p, _tone(2.0, rate=12345), rate=12345), "12345 Hz"),
    "too_long": (lambda p: _wav(p, _tone(61.0)), "longer than [audio] clip_max_s = 60 s"),
    "a_click": (lambda p: _wav(p, _tone(0.05)), "shorter than [audio] clip_min_s"),
}


def _config_with(tmp_path: Path, spoil: Callable[[Path], None]) -> tuple[Path, Path]:
    """A copy of the reference config and clips in `tmp_path`, one clip spoiled."""
    shutil.copytree(REFERENCE.parent / "clips", tmp_path / "clips")
    config = tmp_path / "gauged.toml"
    config.write_text(REFERENCE.read_text(encoding="utf-8"), encoding="utf-8")
    victim = tmp_path / "clips" / f"{VICTIM}.wav"
    spoil(victim)
    return config, victim


def _gauged(*args: str, state: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if state is not None:
        env["GAUGED_STATE__PATH"] = str(state)
    return subprocess.run([sys.executable, "-m", "gauged", *args], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, env=env)


def test_aud_1_the_reference_clips_pass() -> None:
    proc = _gauged("check-config", str(REFERENCE))
    assert proc.returncode == 0, proc.stderr
    assert "warning:" not in proc.stdout


@pytest.mark.parametrize("case", sorted(SPOILERS))
def test_aud_1_check_config_refuses_a_bad_clip(tmp_path: Path, case: str) -> None:
    spoil, why = SPOILERS[case]
    config, victim = _config_with(tmp_path, spoil)
    proc = _gauged("check-config", str(config))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, lines  # the one bad clip, nothing else
    assert lines[0].startswith(f"{config}: clip {VICTIM}: file: {victim}: ")
    assert why in lines[0]


@pytest.mark.parametrize("case", ["corrupt", "silent", "too_long"])
def test_aud_1_the_daemon_refuses_to_start_with_a_bad_clip(tmp_path: Path, case: str) -> None:
    config, victim = _config_with(tmp_path, SPOILERS[case][0])
    state = tmp_path / "state" / "state.sqlite3"
    proc = _gauged("run", "--once", "--config", str(config), state=state)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"clip {VICTIM}: file: {victim}" in proc.stderr
    assert not (tmp_path / "state").exists()  # no state opened, no relay driven
    # in process too: a Daemon built on a config loaded without the file check
    loaded = load_config(config)
    loaded.state.path = state
    daemon = Daemon(loaded)

    async def start() -> None:
        async with daemon.opened():
            raise AssertionError("opened with a bad clip")

    with pytest.raises(StartupError, match=f"clip {VICTIM}"):
        asyncio.run(start())
    assert not (tmp_path / "state" / "state.sqlite3").exists()


def test_aud_1_a_missing_clip_is_still_a_warning(tmp_path: Path) -> None:
    """A missing file is not a bad file: the siren still sounds (ALM-8)."""
    config, _victim = _config_with(tmp_path, lambda p: p.unlink())
    proc = _gauged("check-config", str(config))
    assert proc.returncode == 0, proc.stderr
    assert f"warning: {config}: clip {VICTIM}: file:" in proc.stdout


def test_aud_1_the_limits_are_configurable(tmp_path: Path) -> None:
    config, _victim = _config_with(tmp_path, lambda p: _wav(p, _tone(61.0)))
    config.write_text(config.read_text(encoding="utf-8") + "\n[audio]\nclip_max_s = 90\n",
                      encoding="utf-8")
    assert _gauged("check-config", str(config)).returncode == 0


async def test_aud_1_a_broadcast_records_its_audio_start_and_end(
        tmp_path: Path, pty_pair: PtyPairFactory) -> None:
    speed = 50.0
    async with field_rig(tmp_path, pty_pair, speed=speed) as rig:
        zone = rig.daemon.zones["riverside"]
        clip_s = rig.daemon.clips["warning"].duration_s
        assert clip_s > 5.0  # the speech clip, decoded at start
        async with background(zone.run(), name="zone"):
            zone.submit(BroadcastRequest(
                time=datetime(2026, 7, 1, tzinfo=UTC), zone="riverside", station="tcp_1",
                stage=2, stage_name="warning", sequence="warning", siren_s=0.0, clips=()))
            await until(lambda: zone.last is not None, 10.0, "the broadcast")
        record = zone.last
        assert record is not None
        assert record.outcome == "done"
        assert record.audio_s == pytest.approx(clip_s)
        latency = record.latency()
        assert latency["audio_start_ms"] is not None
        assert latency["audio_end_ms"] is not None
        played_ms = latency["audio_end_ms"] - latency["audio_start_ms"]
        # the sink plays on a clock 50 times faster: the clip's length, not less
        assert clip_s / speed * 1000 <= played_ms <= clip_s / speed * 1000 + 500
