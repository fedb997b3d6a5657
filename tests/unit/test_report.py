"""`gauged replay --report`: the backtest report (gauged/alarm/report.py) on hand-written
events, and the command on a golden case."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gauged.alarm.report import OUTCOMES, render, summarise
from gauged.config.load import load_config
from gauged.config.settings import Config

ROOT = Path(__file__).resolve().parents[2]
START = datetime.fromisoformat("2026-07-01T00:00:00+00:00")
END = START + timedelta(hours=10)
H = 3600.0


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(ROOT / "config" / "minato-furukawa.toml")


def at(hours: float) -> str:
    return (START + timedelta(hours=hours)).isoformat()


def stage(hours: float, station: str, a: str, b: str) -> dict[str, Any]:
    return {"time": at(hours), "station": station, "event": "stage", "quantity": "level",
            "from": a, "to": b, "value": 0.0}


def broadcast(hours: float, zone: str, station: str, name: str, siren_s: float = 0.0,
              **extra: Any) -> dict[str, Any]:
    return {"time": at(hours), "event": "broadcast", "zone": zone, "station": station,
            "stage": name, "sequence": "x", "kind": "stage", "siren_s": siren_s,
            "clips": [], **extra}


def test_time_in_stages_entries_and_lead_times(config: Config) -> None:
    events = [
        stage(1.0, "shin_hiroo", "normal", "watch"),
        stage(1.5, "shin_hiroo", "watch", "notice"),
        stage(2.0, "shin_hiroo", "notice", "warning"),
        stage(2.5, "shin_hiroo", "warning", "notice"),
        stage(3.0, "shin_hiroo", "notice", "overflow"),  # the peak of episode 1
        stage(4.0, "shin_hiroo", "overflow", "normal"),
        stage(6.0, "shin_hiroo", "normal", "warning"),  # watch and notice skipped; still open
    ]
    r = summarise(events, config, START, END).as_dict()
    st = r["stations"]["shin_hiroo"]
    assert r["span_s"] == 10 * H
    assert list(st["stages"]) == ["normal", "watch", "notice", "warning", "overflow"]
    times = {k: v["time_s"] for k, v in st["stages"].items()}
    assert times == {"normal": 3 * H, "watch": 0.5 * H, "notice": 1 * H,
                     "warning": 4.5 * H, "overflow": 1 * H}
    assert {k: v["entered"] for k, v in st["stages"].items()} == {
        "normal": 1, "watch": 1, "notice": 2, "warning": 2, "overflow": 1}
    assert st["episodes"] == [
        {"start": at(1.0), "end": at(4.0), "peak": "overflow", "peak_time": at(3.0),
         "lead_s": {"watch": 2 * H, "notice": 1.5 * H, "warning": 1 * H, "overflow": 0.0}},
        {"start": at(6.0), "end": None, "peak": "warning", "peak_time": at(6.0),
         "lead_s": {"warning": 0.0}},
    ]
    # the summaries are over the episodes that went higher; the peak counts apart
    assert {k: v["peaks"] for k, v in st["stages"].items()} == {
        "normal": 0, "watch": 0, "notice": 0, "warning": 1, "overflow": 1}
    assert st["stages"]["warning"]["lead_s"] == {"count": 1, "min": 1 * H, "median": 1 * H,
                                                 "max": 1 * H}
    assert st["stages"]["overflow"]["lead_s"] == {"count": 0, "min": None, "median": None,
                                                  "max": None}
    assert st["stages"]["watch"]["lead_s"] == {"count": 1, "min": 2 * H, "median": 2 * H,
                                               "max": 2 * H}
    assert st["stages"]["normal"]["lead_s"]["count"] == 0
    # a station without events stood in normal the whole time
    other = r["stations"]["shirokane"]["stages"]
    assert other["normal"]["time_s"] == 10 * H
    assert other["overflow"] == {"entered": 0, "time_s": 0.0, "peaks": 0, "lead_s": {
        "count": 0, "min": None, "median": None, "max": None}}


def test_a_stage_first_entered_after_the_peak_has_no_lead_time(config: Config) -> None:
    events = [stage(1.0, "shirokane", "normal", "overflow"),
              stage(2.0, "shirokane", "overflow", "warning"),
              stage(3.0, "shirokane", "warning", "normal")]
    st = summarise(events, config, START, END).as_dict()["stations"]["shirokane"]
    assert st["episodes"][0]["lead_s"] == {"overflow": 0.0}
    assert st["stages"]["warning"]["lead_s"]["count"] == 0
    assert st["stages"]["warning"]["time_s"] == 1 * H
    assert st["stages"]["normal"]["time_s"] == 8 * H


def test_broadcasts_per_zone_by_stage_outcome_and_siren(config: Config) -> None:
    events = [
        broadcast(1.0, "furukawa_hiroo", "shin_hiroo", "notice"),  # no outcome: done
        broadcast(2.0, "furukawa_hiroo", "shin_hiroo", "overflow", 10.0, outcome="done"),
        broadcast(2.1, "furukawa_hiroo", "shin_hiroo", "overflow", 10.0,
                  outcome="superseded"),
        broadcast(3.0, "ward", "rain_ward_office", "warning", outcome="merged",
                  stations=["rain_ward_office", "rain_placeholder_1"]),
        broadcast(3.0, "ward", "rain_placeholder_2", "warning", outcome="dropped"),
        broadcast(3.5, "ward", "rain_ward_office", "warning", 5.0, outcome="pre-empted"),
        broadcast(5.0, "ward", "rain_ward_office", "all-clear", kind="all_clear"),
    ]
    r = summarise(events, config, START, END).as_dict()
    hiroo, ward = r["zones"]["furukawa_hiroo"], r["zones"]["ward"]
    assert (hiroo["broadcasts"], hiroo["sirens"], hiroo["siren_s"]) == (3, 2, 20.0)
    assert hiroo["by_outcome"] == {"done": 2, "superseded": 1, "dropped": 0,
                                   "pre-empted": 0, "merged": 0}
    assert hiroo["by_stage"]["overflow"] == {"count": 2, "sirens": 2, "siren_s": 20.0}
    assert hiroo["by_stage"]["notice"] == {"count": 1, "sirens": 0, "siren_s": 0.0}
    assert list(hiroo["by_stage"]) == ["watch", "notice", "warning", "overflow", "all-clear"]
    assert (ward["broadcasts"], ward["sirens"], ward["siren_s"]) == (4, 1, 5.0)
    assert ward["by_outcome"] == {"done": 1, "superseded": 0, "dropped": 1,
                                  "pre-empted": 1, "merged": 1}
    assert ward["by_stage"]["warning"]["count"] == 3
    assert ward["by_stage"]["all-clear"]["count"] == 1
    assert r["zones"]["furukawa_shirokane"]["by_outcome"] == dict.fromkeys(OUTCOMES, 0)
    # per station: a broadcast counts for every station it names
    stations = r["stations"]
    assert stations["shin_hiroo"]["broadcasts"]["overflow"] == {"count": 2, "sirens": 2,
                                                                "siren_s": 20.0}
    assert stations["rain_ward_office"]["broadcasts"]["warning"]["count"] == 2
    assert stations["rain_ward_office"]["broadcasts"]["warning"]["sirens"] == 1
    assert stations["rain_ward_office"]["broadcasts"]["all-clear"]["count"] == 1
    assert stations["rain_placeholder_1"]["broadcasts"]["warning"]["count"] == 1
    assert stations["rain_placeholder_2"]["broadcasts"]["warning"]["count"] == 1
    assert stations["rain_placeholder_3"]["broadcasts"]["warning"]["count"] == 0


def test_fault_count_and_duration(config: Config) -> None:
    events = [
        {"event": "fault", "station": "shin_hiroo", "time": at(1.0), "fault": "frozen"},
        {"event": "fault", "station": "shin_hiroo", "time": at(1.5), "fault": "range"},
        {"event": "fault_cleared", "station": "shin_hiroo", "time": at(2.0)},
        {"event": "fault_cleared", "station": "shirokane", "time": at(2.0)},  # none open
        {"event": "fault", "station": "shin_hiroo", "time": at(5.0), "fault": "stale"},
    ]  # the second fault lasts until the end (10 h)
    r = summarise(events, config, START, END).as_dict()["stations"]
    assert r["shin_hiroo"]["faults"] == {"count": 2, "time_s": 6 * H,
                                         "reasons": {"frozen": 1, "stale": 1}}
    assert r["shirokane"]["faults"] == {"count": 0, "time_s": 0.0, "reasons": {}}


def test_render_is_a_table_of_the_numbers(config: Config) -> None:
    events = [stage(1.0, "shin_hiroo", "normal", "notice"),
              broadcast(1.0, "furukawa_hiroo", "shin_hiroo", "notice"),
              stage(1.75, "shin_hiroo", "notice", "overflow"),
              broadcast(1.75, "furukawa_hiroo", "shin_hiroo", "overflow", 10.0,
                        outcome="superseded")]
    lines = render(summarise(events, config, START, END)).splitlines()
    station = lines.index("shin_hiroo")
    notice = lines[station + 3].split()  # after normal and watch
    assert notice == ["notice", "1", "0", "0:45", "7.5%", "1", "0", "0:45", "0:45", "0:45"]
    overflow = lines[station + 5].split()
    assert overflow == ["overflow", "1", "1", "8:15", "82.5%", "1", "1", "-", "-", "-"]
    hiroo = next(line for line in lines if line.startswith("furukawa_hiroo ")).split()
    header = next(line for line in lines if line.startswith("zone ")).split()
    assert header == ["zone", "bcasts", "notice", "overflow", "|", "done", "superseded", "|",
                      "sirens", "siren", "s"]
    assert hiroo == ["furukawa_hiroo", "2", "1", "1", "|", "1", "1", "|", "1", "10"]


def test_replay_report_json_on_a_golden_case() -> None:
    case = ROOT / "tests" / "golden" / "repeat_and_all_clear"
    done = subprocess.run(
        [sys.executable, "-m", "gauged", "replay", "--config", str(case / "config.toml"),
         "--start", "2000-01-01T00:00:00+00:00", "--report", "--json",
         str(case / "scenario.csv")], cwd=ROOT, capture_output=True, text=True, timeout=120,
        check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    lines = (case / "expected.jsonl").read_text(encoding="utf-8").splitlines()
    expected = [json.loads(line) for line in lines if line.strip()]
    # the expected timeline: notice at 00:03, warning at 00:06, normal at 00:45; the scenario
    # runs from second 0 to second 3060 (00:51)
    assert [(e["time"][11:16], e["to"]) for e in expected if e["event"] == "stage"] == [
        ("00:03", "notice"), ("00:06", "warning"), ("00:45", "normal")]
    assert (report["start"], report["end"], report["span_s"]) == (
        "2000-01-01T00:00:00+00:00", "2000-01-01T00:51:00+00:00", 3060.0)
    river = report["stations"]["river"]
    assert {k: v["time_s"] for k, v in river["stages"].items()} == {
        "normal": 180.0 + 360.0, "notice": 180.0, "warning": 2340.0, "overflow": 0.0}
    assert river["stages"]["notice"]["lead_s"] == {"count": 1, "min": 180.0,
                                                   "median": 180.0, "max": 180.0}
    assert river["stages"]["warning"]["peaks"] == 1
    assert river["episodes"] == [{
        "start": "2000-01-01T00:03:00+00:00", "end": "2000-01-01T00:45:00+00:00",
        "peak": "warning", "peak_time": "2000-01-01T00:06:00+00:00",
        "lead_s": {"notice": 180.0, "warning": 0.0}}]
    sent = Counter(e["stage"] for e in expected if e["event"] == "broadcast")
    assert sent == {"notice": 1, "warning": 3, "all-clear": 1}
    zone = report["zones"]["riverside"]
    assert {k: v["count"] for k, v in zone["by_stage"].items() if v["count"]} == sent
    assert {k: v["count"] for k, v in river["broadcasts"].items() if v["count"]} == sent
    assert (zone["broadcasts"], zone["sirens"], zone["siren_s"]) == (5, 0, 0.0)
    assert zone["by_outcome"] == {"done": 5, "superseded": 0, "dropped": 0,
                                  "pre-empted": 0, "merged": 0}
    assert river["faults"] == {"count": 0, "time_s": 0.0, "reasons": {}}
