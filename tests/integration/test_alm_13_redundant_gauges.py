"""Redundant gauges (QUALITY ALM-13) through the live daemon: `gauged simulate` plays two
gauges of Shin-Hiroo over Modbus TCP (the reference `shin_hiroo_level` and a second one,
`shin_hiroo_radar`, unit 3 on the river bus, driven by `shin_hiroo:shin_hiroo_radar` rows), and
`gauged run` reads both every cycle on an accelerated clock.

- Two gauges disagreeing: the stage follows the more dangerous (the higher level), the lower
  one alone does not lower it, and the live transitions are those `gauged replay` gives.
- A fault of one (its device does not answer): the other is in charge, the station is not in
  gauge_fault, and a single absurd sample of the one in charge sounds nothing.
- What an operator and a monitoring system see of the two gauges: `/status`, the page in a
  real headless Chromium at a phone's width, `gauged status` and `/metrics` show each gauge,
  whether they agree and which one is in charge.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hil import INTERVAL, ROOT, Rig
from phone import PHONE_W, phone
from prometheus_client.parser import text_string_to_metric_families

from gauged.alarm.scenario import DEFAULT_START

SPEED = 180.0  # one 3-minute cycle per real second
SIREN = (1, 0)  # (unit, coil) of zone furukawa_hiroo's siren relay
RADAR = "shin_hiroo:shin_hiroo_radar"
LEVEL_GAUGE, RADAR_GAUGE = "shin_hiroo_level", "shin_hiroo_radar"
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))
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
    # The dead gauge costs its bus one timeout per cycle, and the radar is read after it. At
    # 180 x the reference 1 s timeout is a whole simulated cycle: the radar would then be read
    # in the next scenario step and stamped with this one. A 0.25 s timeout (45 simulated
    # seconds) keeps both reads inside the step, as on a real bus with 3-minute steps.
    rig.edit_config(lambda t: t.replace(
        "timeout_s = 1.0                 # per request", "timeout_s = 0.25  # per request", 1))
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
    # which one is in charge, said outright (and nothing to compare the radar with)
    assert st["gauges"]["shin_hiroo_radar"]["in_charge"] is True
    assert st["gauges"]["shin_hiroo_level"]["in_charge"] is False
    assert st["gauges_agree"] is None
    assert st["gauges"]["shin_hiroo_level"]["errors"] >= 1  # no answer: a read error
    assert st["gauges"]["shin_hiroo_level"]["last_good"] is None
    assert st["gauges"]["shin_hiroo_radar"]["errors"] == 0
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


# What one phone shows of Shin-Hiroo's gauges, read in one script run.
READ_GAUGES = """
const card = document.querySelector('#station-shin_hiroo');
const box = card && card.querySelector('.gauges');
return {
  cycles: Number(document.querySelector('header').dataset.cycles),
  state: box ? box.dataset.gauges : null,
  text: box ? box.innerText : null,
  gauges: box ? Object.fromEntries([...box.querySelectorAll('.gauge')].map(
    g => [g.dataset.gauge, {inCharge: g.dataset.inCharge, text: g.innerText}])) : {},
  others: document.querySelectorAll('section.station .gauges').length,
  scrollWidth: document.documentElement.scrollWidth,
};
"""


def test_alm_13_page_status_and_metrics_show_both_gauges(rig: Rig) -> None:
    # the radar reads half a metre above the pressure gauge the whole time (both moving by a
    # centimetre, so that neither is frozen): they disagree, the radar (higher) is in charge
    cycles = 60
    rows = [(1.00 + 0.01 * (k % 2), 1.50 + 0.01 * (k % 3 == 0)) for k in range(cycles)]
    rig.start_simulators(scenario(rig.workdir / "scenario.csv", rows))
    rig.start_daemon()
    base = f"http://127.0.0.1:{rig.ports['status']}"

    def disagreeing(s: dict[str, Any]) -> bool:
        return s["cycles"] >= 3 and shin_hiroo(s).get("gauges_agree") is False

    st = shin_hiroo(rig.wait_for_status(disagreeing, rig.lead_s + 20, "the gauges disagreeing"))
    assert st["tolerance_m"] == 0.10
    level, radar = st["gauges"][LEVEL_GAUGE], st["gauges"][RADAR_GAUGE]
    assert radar["in_charge"] is True
    assert level["in_charge"] is False
    assert level["quality"] == radar["quality"] == "good"
    assert level["errors"] == radar["errors"] == 0
    assert level["last_good"] is not None
    assert radar["last_good"] is not None
    assert "gauges" not in rig.status()["stations"]["shirokane"]  # one gauge: no map

    # the page, in a phone's browser
    with phone(rig.workdir / "chromium-profile") as browser:
        browser.get(base + "/")
        page = browser.execute_script(READ_GAUGES)
    assert page["state"] == "disagree", page
    assert page["others"] == 1  # Shirokane reads one gauge: no gauge lines
    assert re.match(r"Two gauges DISAGREE by 0\.\d\d m: the higher, shin_hiroo_radar, is in "
                    r"charge\n", page["text"]), page["text"]
    assert page["gauges"][RADAR_GAUGE]["inCharge"] == "1"
    assert page["gauges"][LEVEL_GAUGE]["inCharge"] == "0"
    assert re.fullmatch(r"shin_hiroo_radar: 1\.5\d m · quality good · in charge",
                        page["gauges"][RADAR_GAUGE]["text"]), page["gauges"]
    assert re.fullmatch(r"shin_hiroo_level: 1\.0\d m · quality good",
                        page["gauges"][LEVEL_GAUGE]["text"]), page["gauges"]
    assert page["scrollWidth"] <= PHONE_W, "the page scrolls sideways on a phone"

    # `gauged status` in a terminal: a line under the station
    proc = subprocess.run([sys.executable, "-m", "gauged", "status", "--url", base],
                          capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) <= 30, proc.stdout  # still one screen
    i = next(i for i, x in enumerate(lines) if x.startswith("shin_hiroo "))
    assert re.fullmatch(r"  gauges DISAGREE by 0\.\d\d m, the higher used: shin_hiroo_level "
                        r"1\.0\d m good · shin_hiroo_radar 1\.5\d m good \(in charge\)",
                        lines[i + 1]), proc.stdout
    assert not any(x.startswith("  gauges") for x in lines[i + 2:]), proc.stdout

    # /metrics: a series per gauge
    with _HTTP.open(base + "/metrics", timeout=5) as r:
        text = r.read().decode()
    m: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            m.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value

    def one(name: str, **labels: str) -> float:
        return m[name][tuple(sorted(labels.items()))]

    both = {g: {"station": "shin_hiroo", "gauge": g} for g in (LEVEL_GAUGE, RADAR_GAUGE)}
    reads = [one("gauged_gauge_read_duration_seconds_count", **both[g]) for g in both]
    assert min(reads) >= 3
    assert max(reads) - min(reads) <= 1  # both read every cycle (one read may be under way)
    for g, labels in both.items():
        assert one("gauged_gauge_read_errors_total", **labels) == 0
        assert one("gauged_gauge_fault", **labels) == 0
        assert one("gauged_gauge_quality", quality="good", **labels) == 1
        assert one("gauged_gauge_last_good_timestamp_seconds", **labels) > rig.start_ts, g
    assert one("gauged_gauge_in_charge", **both[RADAR_GAUGE]) == 1
    assert one("gauged_gauge_in_charge", **both[LEVEL_GAUGE]) == 0
    assert 1.49 < one("gauged_gauge_level_meters", **both[RADAR_GAUGE]) < 1.52
    assert 0.99 < one("gauged_gauge_level_meters", **both[LEVEL_GAUGE]) < 1.02
    assert one("gauged_station_gauges_agree", station="shin_hiroo") == 0
    assert one("gauged_gauge_read_errors_total", station="shirokane",
               gauge="shirokane_level") == 0
    assert ("gauge", "shirokane_level") not in {
        label for labels in m["gauged_gauge_in_charge"] for label in labels}
    assert rig.stop("daemon") == 0
