"""ALM-11 and ALM-12: gauges that lie, through the live daemon against the simulators.

- ALM-11: Shin-Hiroo stands at warning when its gauge fails to 0.0 m (inside its range) for
  30 minutes, then reads true again: gauge_fault within 2 cycles, the stage never drops, no
  all-clear, no second warning when the gauge recovers.
- ALM-12: Shin-Hiroo's gauge freezes mid-rise while Shirokane (its related station) climbs
  1.8 m/h through notice, warning and overflow: Shin-Hiroo is flagged within 3 cycles and,
  with `follow = "shirokane"`, its zone hears the stages its river reaches.

Each run is also replayed (`gauged replay --json`, the daemon's rules offline), and the
daemon's stage transitions must be replay's.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from hil import INTERVAL, ROOT, Rig

SPEED = 180.0  # one cycle per real second


def write_scenario(rig: Rig, rows: dict[str, list[float]]) -> Path:
    path = rig.workdir / "scenario.csv"
    lines = ["time,station,quantity,value"]
    n = max(len(v) for v in rows.values())
    for i in range(n):
        for sid, values in rows.items():
            lines.append(f"{i * INTERVAL:.0f},{sid},level_m,{values[min(i, len(values) - 1)]}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run(rig: Rig, scenario: Path, cycles: int) -> dict[str, Any]:
    rig.start_simulators(scenario)
    rig.start_daemon()
    end = rig.cycle_time(cycles).isoformat()
    return rig.wait_for_status(lambda s: (s.get("last_cycle") or "") >= end,
                               timeout=cycles / (SPEED / INTERVAL) + 60,
                               what=f"the daemon reaches cycle {cycles}")


def replay(rig: Rig, scenario: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "gauged", "replay", "--config", str(rig.config), "--json",
         "--start", rig.start.isoformat(), str(scenario)],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=60)
    return [json.loads(line) for line in out.stdout.splitlines()]


def live_stages(rig: Rig, station: str) -> list[tuple[str, str]]:
    return re.findall(rf"stage station={station} quantity=\w+ from=(\w+) to=(\w+)",
                      rig.log("daemon"))


def cycle_of(rig: Rig, iso: str) -> int:
    from datetime import datetime

    return round((datetime.fromisoformat(iso).timestamp() - rig.start_ts) / INTERVAL)


def test_alm_11_gauge_fails_to_a_constant_mid_warning(rig: Rig) -> None:
    rise = [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 3.7, 3.75, 3.8, 3.8, 3.81, 3.8]
    failed = [0.0] * 10  # 30 minutes at 0.0 m, inside the gauge's range
    back = [3.8, 3.82, 3.85, 3.84, 3.86, 3.85]
    scenario = write_scenario(rig, {"shin_hiroo": rise + failed + back,
                                    "shirokane": [1.0 + 0.01 * (i % 3) for i in range(28)]})
    status = run(rig, scenario, 27)
    assert live_stages(rig, "shin_hiroo") == [("normal", "watch"), ("watch", "notice"),
                                               ("notice", "warning")]
    assert status["stations"]["shin_hiroo"]["stage_name"] == "warning"
    log = rig.log("daemon")
    assert "gauge_fault station=shin_hiroo reason=implausible fall" in log
    assert "gauge_fault cleared station=shin_hiroo" in log
    warnings = [a for a in rig.audio_log() if a["zone"] == "furukawa_hiroo"
                and a["clip"] == "furukawa_warning_ja"]
    assert len(warnings) == 1  # no second warning when the gauge reads true again
    events = replay(rig, scenario)
    fault = next(e for e in events if e["event"] == "fault" and e["station"] == "shin_hiroo")
    assert cycle_of(rig, fault["time"]) - len(rise) <= 1  # within 2 cycles of the failure
    assert [(e["from"], e["to"]) for e in events
            if e["event"] == "stage" and e["station"] == "shin_hiroo"] == \
        live_stages(rig, "shin_hiroo")


def test_alm_12_frozen_gauge_follows_its_rising_neighbour(rig: Rig) -> None:
    rig.edit_config(lambda text: text.replace(
        'gauge = "shin_hiroo_level"\n',
        'gauge = "shin_hiroo_level"\nrelated = ["shirokane"]\nfollow = "shirokane"\n'))
    rate = 1.8 * INTERVAL / 3600  # m per cycle
    shirokane = [round(1.0 + rate * i, 3) for i in range(46)]  # 1.0 → 4.4 m: overflow
    frozen_at = 8
    shin_hiroo = [round(1.2 + rate * i, 3) for i in range(frozen_at)]
    shin_hiroo += [shin_hiroo[-1]] * (46 - frozen_at)
    scenario = write_scenario(rig, {"shin_hiroo": shin_hiroo, "shirokane": shirokane})
    status = run(rig, scenario, 45)
    log = rig.log("daemon")
    assert "gauge_fault station=shin_hiroo reason=frozen" in log
    events = replay(rig, scenario)
    fault = next(e for e in events if e["event"] == "fault" and e["station"] == "shin_hiroo")
    assert fault["fault"].startswith("frozen")
    assert cycle_of(rig, fault["time"]) - (frozen_at - 1) <= 3  # suspect within 3 cycles
    # the zone is not left silent: the faulty station follows its river upward
    follows = re.findall(r"stage station=shin_hiroo quantity=follow from=(\w+) to=(\w+)", log)
    assert ("notice", "warning") in follows or ("watch", "warning") in follows, log[-3000:]
    assert status["stations"]["shin_hiroo"]["stage_name"] == "overflow"
    heard = {a["clip"] for a in rig.audio_log() if a["zone"] == "furukawa_hiroo"}
    assert {"furukawa_warning_ja", "furukawa_overflow_ja"} <= heard
    assert "gauge_fault" in json.dumps(status["faults"])  # operators are told
    assert [(e["from"], e["to"]) for e in events
            if e["event"] == "stage" and e["station"] == "shin_hiroo"] == \
        live_stages(rig, "shin_hiroo")
