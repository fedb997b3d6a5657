"""ALM-9: with the network down (no MQTT broker, no TSDB), the escalation and its sirens are
those of the connected run.

The design storm runs against the simulators with both uplinks pointing at closed loopback
ports. The relay timeline must be the one the replay calls for — the same one the connected
run in test_storm_end_to_end.py is held to — and the siren on-time the configured 10 s.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from hil import ROOT, SCENARIOS, Rig, actuation_timeline, expected_timeline
from services import free_port

SPEED = 180.0
STORM = SCENARIOS / "design_storm_50mm.csv"
AMP = {"furukawa_hiroo": 1, "furukawa_shirokane": 3, "ward": 5}
SIREN = {"furukawa_hiroo": 0, "furukawa_shirokane": 2}


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    # both uplinks enabled, both unreachable: nothing listens on these ports
    rig = Rig(tmp_path, speed=SPEED, influx_url=f"http://127.0.0.1:{free_port()}",
              mqtt_port=free_port())
    try:
        yield rig
    finally:
        rig.close()


def test_alm_9_network_down_escalation_and_sirens_as_when_connected(rig: Rig) -> None:
    rig.start_simulators(STORM)
    rig.start_daemon()
    end = rig.start_ts + 4 * 3600
    rig.wait_for_status(
        lambda s: s["last_cycle"] is not None
        and datetime.fromisoformat(s["last_cycle"]).timestamp() >= end
        and not any(z["busy"] for z in s["zones"].values()),
        timeout=rig.lead_s + 4 * 3600 / SPEED + 60, what="the storm to play out")
    status = rig.status() or {}
    assert rig.stop("daemon") == 0
    assert status["uplinks"]["mqtt"]["connected"] is False
    assert status["uplinks"]["influx"]["connected"] is False
    assert status["uplinks"]["influx"]["queued"] > 0  # the record waits, the siren does not
    replay = [json.loads(line) for line in subprocess.run(
        [sys.executable, "-m", "gauged", "replay", "--config", str(rig.config), "--start",
         rig.start.isoformat(), "--json", str(STORM)],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=True).stdout.splitlines()]
    assert actuation_timeline(rig) == expected_timeline(replay, rig.start_ts, AMP, SIREN)
    sirens = [r for r in rig.relay_log() if r["coil"] in SIREN.values()
              and r["value"] != r["previous"]]
    for on, off in zip(sirens[::2], sirens[1::2], strict=True):
        held = (off["t_real"] - on["t_real"]) * SPEED
        assert 10.0 <= held < 10.0 + 0.5 * SPEED, held
    played: dict[str, list[str]] = {}
    for r in rig.audio_log():
        played.setdefault(r["zone"], []).append(r["clip"])
    wanted: dict[str, list[str]] = {}
    for e in replay:
        if e["event"] == "broadcast" and e["outcome"] in ("done", "pre-empted"):
            wanted.setdefault(e["zone"], []).extend(e["clips"])
    assert played == wanted
