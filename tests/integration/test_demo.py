"""`gauged demo`: simulators and daemon in one process play the storm and stop cleanly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hil import ROOT, Rig


def test_demo_plays_the_storm_and_ends_with_every_relay_off(tmp_path: Path) -> None:
    rig = Rig(tmp_path, speed=900)  # only for its config with free loopback ports
    proc = subprocess.run(
        [sys.executable, "-m", "gauged", "demo", "--config", str(rig.config),
         "--speed", "900", "--until-end"],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    log = proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "InfluxDB and MQTT uplinks are off" in log
    assert "stage station=shin_hiroo quantity=level from=warning to=overflow" in log
    assert "broadcast start zone=furukawa_hiroo station=shin_hiroo stage=overflow" in log
    assert "plays clip furukawa_overflow_ja" in log  # the audio sink heard it
    assert "relay_fault" not in log
    assert "audio_fault" not in log
    assert "relay board: all 5 relays OFF" in log
