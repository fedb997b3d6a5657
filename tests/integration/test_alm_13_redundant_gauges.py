"""Redundant gauges (QUALITY ALM-13) through the live daemon: `gauged simulate` plays two
gauges of Shin-Hiroo over Modbus TCP (the reference `shin_hiroo_level` and a second one,
`shin_hiroo_radar`, unit 3 on the river bus, driven by `shin_hiroo:shin_hiroo_radar` rows), and
`gauged run` reads both every cycle on an accelerated clock.

- Two gauges disagreeing: the stage follows the more dangerous (the higher level), the lower
  one alone does not lower it, and the live transitions are those `gauged replay` gives.
- A fault of one (its device does not answer): the other is in charge, the station is not in
  gauge_fault, and a single absurd sample of the one in charge sounds nothing.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hil import INTERVAL, ROOT, Rig

from gauged.alarm.scenario import DEFAULT_START

SPEED = 180.0  # one 3-minute cycle per real second
SIREN = (1, 0)  # (unit, coil) of zone furukawa_hiroo's siren relay
RADAR = "shin_hiroo:shin_hiroo_radar"
STAGE_LINE = re.compile(r"stage station=shin_hiroo quantity=\w+ from=(\w+) to=(\w+) "
                        r"value=\S+ time=(\S+ \S+)")


def two_gauges(text: str) -> str:
    """The reference configuration with a second gauge at Shin-Hiroo."""
    text = text.replace(
        'gauge = "shin_hiroo_level"\n',
        'gauge = "shin_hiroo_level"\nsecond_gauge = "shin_hiroo_radar"\ntolerance_m = 0.10\n')
    return text.replace("[gauges.shirokane_level]\n", '''[gauges.shin_hiroo_radar]
bus = "river"
unit = 3
quantity = "level_m"
register = { kind = "input", address = 0, data_type = "float32", word_order = "big", unit = "m" }
range = [-1.0, 8.0]
quality = { max_step = 0.8, flatline_cycles = 20 }

[gauges.shirokane_level]
''')


def scenario(path: Path, rows: list[tuple[float | None, float | None]]) -> Path:
    """(pressure, radar) per cycle: the first gauge's and the second gauge's rows."""
    lines = ["time,station,quantity,value"]
    for k, (pressure, radar) in enumerate(rows):
        if pressure is not None:
            lines.append(f"{INTERVAL * k:g},shin_hiroo,level_m,{pressure:.2f}")
        if radar is not None:
            lines.append(f"{INTERVAL * k:g},{RADAR},level_m,{radar:.2f}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path, speed=SPEED)
    rig.edit_config(two_gauges)
    try:
        yield rig
    finally:
        rig.close()


def transitions(rig: Rig) -> list[tuple[int, str, str]]:
    """Shin-Hiroo's stage changes in the daemon's log, as (cycle index, from, to)."""
    out = []
    for old, new, when in STAGE_LINE.findall(rig.log("daemon")):
        t = datetime.strptime(when, "%Y-%m-%d %H:%M:%S%z").timestamp()
        out.append((round((t - rig.start_ts) / INTERVAL), old, new))
    return out


def siren_on(rig: Rig) -> bool:
    return any((r["unit"], r["coil"]) == SIREN and r["value"] for r in rig.relay_log())


def shin_hiroo(status: dict[str, Any]) -> dict[str, Any]:
    station: dict[str, Any] = status["stations"]["shin_hiroo"]
    return station


def test_two_gauges_disagreeing_the_stage_follows_the_more_dangerous(rig: Rig) -> None:
    # pressure (the first gauge) stays low, moving by centimetres (a flat one would be
    # frozen against the radar); the radar rises to notice (level 2.75: freeboard 1.85),
    # recedes 0.15 m a cycle and meets the pressure gauge again
    pressure = [1.00, 1.01, 1.02, 1.01, 1.02, 1.03, 1.02, 1.03, 1.02, 1.03, 1.02, 1.03, 1.02,
                1.03, 1.02, 1.03, 1.02, 1.03, 1.02, 1.03]
    radar = [1.00, 1.00, 1.02, 1.70, 2.40, 2.75, 2.80, 2.78, 2.70, 2.55, 2.40, 2.25, 2.10,
             1.95, 1.80, 1.65, 1.50, 1.35, 1.20, 1.05]
    path = scenario(rig.workdir / "scenario.csv", list(zip(pressure, radar, strict=True)))
    rig.start_simulators(path)
    rig.start_daemon()

    def disagreeing(s: dict[str, Any]) -> bool:
        st = shin_hiroo(s)
        return st.get("stage_name") == "notice" and st["reason"].startswith("disagree")

    status = rig.wait_for_status(disagreeing, rig.lead_s + 20, "notice on the radar alone")
    st = shin_hiroo(status)
    gauges = st["gauges"]
    assert set(gauges) == {"shin_hiroo_level", "shin_hiroo_radar"}
    assert gauges["shin_hiroo_radar"]["quality"] == gauges["shin_hiroo_level"]["quality"] \
        == "good"
    assert st["level_m"] == pytest.approx(gauges["shin_hiroo_radar"]["value"])  # the higher
    assert gauges["shin_hiroo_level"]["value"] < 1.1
    assert st["gauge_fault"] is None
    rig.wait_for_status(lambda s: s["cycles"] >= len(radar) + 1, len(radar) + 20,
                        "the whole scenario")
    assert rig.stop("daemon") == 0

    # the radar raised the stage; it came down only when the radar had come down too
    # (notice → watch at cycle 11: freeboard ≥ 2.1 for two samples, 2.40 and 2.25 m)
    assert transitions(rig) == [(4, "normal", "watch"), (5, "watch", "notice"),
                                (11, "notice", "watch"), (15, "watch", "normal")]
    replay = subprocess.run(
        [sys.executable, "-m", "gauged", "replay", "--config", str(rig.config), "--json",
         str(path)], cwd=ROOT, capture_output=True, text=True, check=True,
        env=os.environ | {"PYTHONPATH": str(ROOT)})
    stages = [(round((datetime.fromisoformat(e["time"]) - DEFAULT_START).total_seconds()
                     / INTERVAL), e["from"], e["to"])
              for e in map(json.loads, replay.stdout.splitlines())
              if e["event"] == "stage" and e["station"] == "shin_hiroo"]
    assert stages == transitions(rig)
    clips = [a["clip"] for a in rig.audio_log()]
    assert clips == ["furukawa_rising_ja", "furukawa_rising_en"]  # notice, once
    assert not siren_on(rig)


def test_a_fault_of_one_gauge_leaves_the_other_in_charge_and_no_false_siren(
        rig: Rig) -> None:
    faults = rig.workdir / "faults.toml"
    faults.write_text('[[fault]]\nbus = "river"\nunit = 1\nno_answer = 1\n', encoding="utf-8")
    # the pressure gauge (unit 1) never answers; the radar rises to notice, reads one absurd
    # sample (6.5 m: overflow, a siren) at cycle 8, and goes on
    radar = [1.00, 1.20, 1.40, 1.70, 2.00, 2.40, 2.70, 2.75, 6.50, 2.80, 2.82, 2.85]
    path = scenario(rig.workdir / "scenario.csv", [(1.0, r) for r in radar])
    rig.start_simulators(path, faults=faults)
    rig.start_daemon()

    def radar_in_charge(s: dict[str, Any]) -> bool:
        st = shin_hiroo(s)
        return st.get("stage_name") == "notice" and \
            st["gauges"]["shin_hiroo_level"]["gauge_fault"] is not None

    status = rig.wait_for_status(radar_in_charge, rig.lead_s + 20, "notice with radar alone")
    st = shin_hiroo(status)
    assert st["gauge_fault"] is None  # carried by the radar: measured, not held
    assert st["quality"] == "good"
    assert st["reason"].startswith("shin_hiroo_level: ")
    assert st["reason"].endswith("; shin_hiroo_radar in charge")
    assert st["gauges"]["shin_hiroo_level"]["quality"] == "missing"
    assert st["gauges"]["shin_hiroo_level"]["gauge_fault"].startswith("stale")
    assert st["level_m"] == pytest.approx(st["gauges"]["shin_hiroo_radar"]["value"])
    rig.wait_for_status(lambda s: s["cycles"] >= len(radar) + 1, len(radar) + 20,
                        "the whole scenario")
    assert rig.stop("daemon") == 0

    assert transitions(rig) == [(5, "normal", "watch"), (6, "watch", "notice")]
    assert not siren_on(rig)  # 0 false sirens from the absurd sample
    assert [a["clip"] for a in rig.audio_log()] == ["furukawa_rising_ja", "furukawa_rising_en"]
    log = rig.log("daemon")
    assert "gauge_fault station=shin_hiroo gauge=shin_hiroo_level reason=stale" in log
    assert "gauge_fault station=shin_hiroo reason" not in log  # the station is not held
