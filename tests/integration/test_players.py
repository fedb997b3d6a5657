"""The aplay player against real subprocesses standing in for aplay (drivers/players.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from drivers.configs import AplayConfig
from drivers.errors import AudioFault
from drivers.players import AplayPlayer


def fake_aplay(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "aplay"
    script.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
    script.chmod(0o755)
    return script


def read_pid(path: Path) -> int:
    return int(path.read_text())


async def test_a_hung_aplay_is_killed_after_its_timeout_and_is_an_audio_fault(
        tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    script = fake_aplay(tmp_path, f'echo $$ > {pid_file}\nexec sleep 60')
    clip = tmp_path / "clip.wav"
    clip.write_bytes(b"RIFF")
    player = AplayPlayer(AplayConfig(kind="aplay", command=str(script), timeout_s=0.5))
    t0 = time.monotonic()
    with pytest.raises(AudioFault, match=r"still playing after 0\.5 s: killed"):
        await player.play("zone", "clip", clip)
    assert time.monotonic() - t0 < 5.0
    with pytest.raises(ProcessLookupError):  # killed and reaped, not left behind
        os.kill(read_pid(pid_file), 0)


async def test_aplay_that_finishes_plays(tmp_path: Path) -> None:
    script = fake_aplay(tmp_path, 'test "$1" = -q && test "$2" = -D && test -f "$4"')
    clip = tmp_path / "clip.wav"
    clip.write_bytes(b"RIFF")
    await AplayPlayer(AplayConfig(kind="aplay", command=str(script))).play("z", "c", clip)
