"""Redundant gauges (ALM-13): a level station reading two gauges.

The rule (`gauged.alarm.quality.combine`): agreeing readings are averaged; when they disagree
the higher level (the more dangerous) is used, so either may raise a stage and both must agree
to lower it; a gauge that is not good leaves the other in charge; the station is in
gauge_fault only while both gauges are. The golden case `tests/golden/alm_13_redundant_gauges`
shows it through both replay paths; here the rule itself, the configuration checks, the
scenario convention and the two replay paths on generated data.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from gauged.alarm.engine import Engine
from gauged.alarm.quality import (
    GaugeReading,
    Judge,
    Judgement,
    Observation,
    Quality,
    combine,
)
from gauged.alarm.quality_arrays import combine_arrays
from gauged.alarm.replay import replay, replay_per_cycle
from gauged.alarm.scenario import read_scenario
from gauged.alarm.types import Sample
from gauged.config.load import load_config
from gauged.daemon.snapshot import in_charge
from gauged.errors import ConfigError, ScenarioError

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "alm_13_redundant_gauges"
GOOD = Judgement(Quality.GOOD)


def reading(gauge: str, value: float | None, quality: Quality = Quality.GOOD, reason: str = "",
            fault: str = "") -> GaugeReading:
    return GaugeReading(gauge, value, Judgement(quality, reason), fault)


# ---- the rule ---------------------------------------------------------------------------

def test_agreeing_gauges_are_averaged() -> None:
    c = combine(reading("radar", 3.00), reading("pressure", 3.08), 0.10)
    assert c.value == pytest.approx(3.04)
    assert c.judgement == GOOD
    assert c.fault == ""


def test_disagreeing_gauges_give_the_higher_level_either_way() -> None:
    up = combine(reading("a", 3.10), reading("b", 2.40), 0.10)
    assert up.value == 3.10
    assert up.judgement.quality is Quality.GOOD
    assert up.judgement.reason == "disagree: a 3.10 m, b 2.40 m"
    down = combine(reading("a", 2.40), reading("b", 3.10), 0.10)
    assert down.value == 3.10  # the other gauge higher: it is the one used
    assert down.judgement.reason == "disagree: a 2.40 m, b 3.10 m"
    assert up.fault == down.fault == ""


def test_a_gauge_that_is_not_good_leaves_the_other_in_charge() -> None:
    for bad in (reading("b", 9.5, Quality.BAD, "spike: +6 from the last good reading"),
                reading("b", None, Quality.MISSING, "no reading", "stale: no good reading "
                                                                  "for 2 cycles"),
                reading("b", 1.0, Quality.SUSPECT, "frozen: 3 identical readings", "frozen")):
        for a, b in ((reading("a", 2.0), bad), (bad, reading("a", 2.0))):
            c = combine(a, b, 0.10)
            assert c.value == 2.0  # the good one alone, whatever the other reads
            assert c.judgement.quality is Quality.GOOD
            assert c.judgement.reason == f"b: {bad.why}; a in charge"
            assert c.fault == ""  # carried by a: measured, not held


def test_both_not_good_is_not_good_and_a_gauge_fault_only_when_both_are() -> None:
    a = reading("a", None, Quality.MISSING, "no reading", "stale: no good reading for 2 cycles")
    b = reading("b", 2.5, Quality.SUSPECT, "implausible fall: -1.00 m in 3 min")
    c = combine(a, b, 0.10)
    assert c.judgement.quality is Quality.MISSING  # the worse grade
    assert c.value == 2.5
    assert c.fault == ""  # b is doubtful this cycle but not in gauge_fault
    b_fault = reading("b", 2.5, Quality.SUSPECT, "frozen: 4 identical readings", "frozen: 4")
    c = combine(a, b_fault, 0.10)
    assert c.fault == "a: stale: no good reading for 2 cycles; b: frozen: 4"
    assert not c.judgement.quality.usable


def test_the_array_rule_is_the_rule() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.uniform(0, 4, 400).round(2), rng.uniform(0, 4, 400).round(2)
    a[::7] = b[::7] + 0.05  # some agree
    ga, gb = rng.random(400) < 0.8, rng.random(400) < 0.8
    value, good = combine_arrays(a, ga, b, gb, 0.10)
    for i in range(400):
        c = combine(reading("a", float(a[i]), Quality.GOOD if ga[i] else Quality.BAD),
                    reading("b", float(b[i]), Quality.GOOD if gb[i] else Quality.BAD), 0.10)
        assert c.value == value[i]
        assert c.judgement.quality.usable == good[i]


def test_alm_13_in_charge_is_what_combine_uses() -> None:
    """/status, the page, `gauged status` and /metrics say which gauge is in charge
    (gauged/daemon/snapshot.py, `in_charge`): the gauges whose values `combine` uses."""
    rng = np.random.default_rng(13)
    grades = (Quality.GOOD, Quality.GOOD, Quality.SUSPECT, Quality.BAD, Quality.MISSING)
    seen = set()
    for _ in range(2000):
        a_value, b_value = rng.uniform(-0.5, 4, 2).round(2)
        if rng.random() < 0.3:
            b_value = round(a_value + rng.choice([-0.1, -0.05, 0.0, 0.1, 0.11]), 2)
        a = reading("a", None if rng.random() < 0.05 else float(a_value),
                    grades[rng.integers(len(grades))])
        b = reading("b", float(b_value), grades[rng.integers(len(grades))])
        c = combine(a, b, 0.10)
        agree, charge = in_charge(a, b, 0.10)
        used = [r.value for r in (a, b) if r.gauge in charge]
        if used:
            assert c.value == pytest.approx(sum(v for v in used if v is not None) / len(used))
            assert c.judgement.quality is Quality.GOOD
        else:
            assert not c.judgement.quality.usable
        assert agree == (None if not (a.good and b.good) else c.judgement.reason == "")
        seen.add((agree, len(charge)))
    assert seen == {(True, 2), (False, 1), (None, 1), (None, 0)}


# ---- through the judge and the engine ---------------------------------------------------

def test_the_more_dangerous_raises_and_both_must_agree_to_lower() -> None:
    config = load_config(GOLDEN / "config.toml")
    judge, engine = Judge(config), Engine(config)
    t0 = 946684800.0
    stages = []
    # (radar, pressure): radar raises to notice; pressure alone lower holds it; both lower
    # (two samples past the margin) clear it
    for k, (r, p) in enumerate([(1.5, 1.5), (2.1, 1.6), (2.2, 1.65), (2.15, 1.7), (2.1, 1.72),
                                (1.95, 1.75), (1.8, 1.76), (1.78, 1.74)]):
        obs = {"river": Observation(r, key=r, watch=r),
               "river:pressure": Observation(p, key=p, watch=p)}
        judged = judge.judge(t0 + 180 * k, obs)
        (sid, c), = judge.stations(obs, judged).items()
        result = engine.evaluate(datetime.fromtimestamp(t0 + 180 * k, UTC),
                                 {sid: Sample(c.value, c.judgement.quality, c.judgement.reason,
                                              c.fault, c.gauges)})
        (state,) = result.states
        stages.append(state.stage_name)
        assert state.as_json("UTC")["gauges"] == {
            "radar": {"value": r, "quality": "good", "reason": "", "gauge_fault": None},
            "pressure": {"value": p, "quality": "good", "reason": "", "gauge_fault": None}}
    assert stages == ["normal", "notice", "notice", "notice", "notice", "notice", "notice",
                      "normal"]


def test_alm_13_read_off_the_golden_case() -> None:
    """The golden case: radar alone raises (00:06), pressure alone lower holds, both lower
    clear (00:27); pressure missing leaves radar in charge up to warning (00:39); an absurd
    sample of either gauge sounds nothing; a frozen radar leaves pressure in charge, which
    lowers (01:09); the station is in gauge_fault only while both gauges are (01:15-01:18)."""
    events = [json.loads(line) for line in
              (GOLDEN / "expected.jsonl").read_text(encoding="utf-8").splitlines()]
    stages = [(e["time"][11:16], e["from"], e["to"]) for e in events if e["event"] == "stage"]
    assert stages == [("00:06", "normal", "notice"), ("00:27", "notice", "normal"),
                      ("00:30", "normal", "notice"), ("00:39", "notice", "warning"),
                      ("01:09", "warning", "notice")]
    assert not [e for e in events if e["event"] == "broadcast" and e["siren_s"] > 0]
    faults = [(e["time"][11:16], e["event"]) for e in events
              if e["event"] in ("fault", "fault_cleared")]
    assert faults == [("01:15", "fault"), ("01:18", "fault_cleared")]


# ---- configuration and scenarios ---------------------------------------------------------

def with_station(extra: str, tmp_path: Path) -> Path:
    text = (GOLDEN / "config.toml").read_text(encoding="utf-8")
    path = tmp_path / "config.toml"
    path.write_text(text + extra, encoding="utf-8")
    return path


@pytest.mark.parametrize(("extra", "problem"), [
    ('[stations.up]\nkind = "level"\ngauge = "g1"\nsecond_gauge = "g1"\ncrest_m = 4.0\n'
     'stages = [{ name = "n", threshold = 2.0 }]\n',
     "station up: second_gauge: g1 is already the station's gauge"),
    ('[stations.up]\nkind = "level"\ngauge = "g1"\nsecond_gauge = "nope"\ncrest_m = 4.0\n'
     'stages = [{ name = "n", threshold = 2.0 }]\n',
     "station up: second_gauge: unknown gauge 'nope'"),
    ('[stations.up]\nkind = "level"\ngauge = "g1"\nsecond_gauge = "pressure"\ncrest_m = 4.0\n'
     'stages = [{ name = "n", threshold = 2.0 }]\n',
     "station up: second_gauge: gauge pressure already feeds station river"),
    ('[stations.up]\nkind = "level"\ngauge = "g1"\ntolerance_m = 0.2\ncrest_m = 4.0\n'
     'stages = [{ name = "n", threshold = 2.0 }]\n',
     "station up: tolerance_m: a tolerance is for a station with a second_gauge"),
    ('[stations.up]\nkind = "level"\ngauge = "g1"\nsecond_gauge = "c"\ncrest_m = 4.0\n'
     'stages = [{ name = "n", threshold = 2.0 }]\n',
     "station up: second_gauge: a level station needs a level_m gauge; c measures "
     "rain_counter"),
])
def test_check_config_refuses_bad_second_gauges(tmp_path: Path, extra: str,
                                                problem: str) -> None:
    gauges = ('[gauges.g1]\nbus = "field"\nunit = 5\nquantity = "level_m"\n'
              'register = { kind = "holding", address = 0, data_type = "int16" }\n'
              '[gauges.c]\nbus = "field"\nunit = 6\nquantity = "rain_counter"\n'
              'register = { kind = "holding", address = 0, data_type = "uint16" }\n')
    path = with_station(gauges + extra, tmp_path)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"{path}: {problem}" in err.value.args[0]


def test_a_second_gauge_without_rows_reads_the_stations_rows(tmp_path: Path) -> None:
    """A scenario written for one gauge replays the same on a station with two."""
    config = load_config(GOLDEN / "config.toml")
    single = tmp_path / "single.toml"
    single.write_text((GOLDEN / "config.toml").read_text(encoding="utf-8").replace(
        'second_gauge = "pressure"\ntolerance_m = 0.10\n', ""), encoding="utf-8")
    one = load_config(single)
    rows = "".join(f"{180 * k},river,level_m,{lvl}\n" for k, lvl in enumerate(
        [1.5, 1.9, 2.3, 2.7, 3.1, 3.2, 3.05, 2.9, 2.75, 2.6, 2.45, 2.3, 2.15, 2.0,
         1.85, 1.7]))
    path = tmp_path / "s.csv"
    path.write_text("time,station,quantity,value\n" + rows, encoding="utf-8")
    want = list(replay(read_scenario(path, one), one))
    assert [e["to"] for e in want if e["event"] == "stage"] == ["notice", "warning", "notice",
                                                                "normal"]
    assert list(replay(read_scenario(path, config), config)) == want
    assert list(replay_per_cycle(read_scenario(path, config), config)) == want


def test_scenario_rows_name_a_gauge_as_station_colon_gauge(tmp_path: Path) -> None:
    config = load_config(GOLDEN / "config.toml")
    path = tmp_path / "s.csv"
    path.write_text("time,station,quantity,value\n0,river:radar,level_m,1.5\n"
                    "0,river:pressure,level_m,1.6\n", encoding="utf-8")
    scenario = read_scenario(path, config)
    assert [r.station for r in scenario] == ["river", "river:pressure"]
    path.write_text("time,station,quantity,value\n0,river,level_m,1.5\n"
                    "0,river:radar,level_m,1.6\n", encoding="utf-8")
    with pytest.raises(ScenarioError, match="a second row for station river:radar"):
        read_scenario(path, config)
    path.write_text("time,station,quantity,value\n0,river:nope,level_m,1.5\n", encoding="utf-8")
    with pytest.raises(ScenarioError, match="unknown station 'river:nope'"):
        read_scenario(path, config)


# ---- both replay paths on generated data --------------------------------------------------

CONFIG = """
[gateway]
id = "t"
poll_interval_s = 180
[buses.field]
kind = "modbus_tcp"
host = "127.0.0.1"
port = 15020
{gauges}
[stations.a]
kind = "level"
gauge = "a1"
second_gauge = "a2"
crest_m = 4.0
related = ["b"]
clear_samples = 2
stages = [{{ name = "s1", threshold = 2.0 }}, {{ name = "s2", threshold = 1.0 }},
          {{ name = "s3", threshold = 0.3 }}]
[stations.b]
kind = "level"
gauge = "b1"
second_gauge = "b2"
tolerance_m = 0.05
crest_m = 4.0
stages = [{{ name = "s1", threshold = 2.0 }}, {{ name = "s2", threshold = 1.0 }}]
[stations.c]
kind = "level"
gauge = "c1"
crest_m = 4.0
related = ["a"]
stages = [{{ name = "s1", threshold = 2.0 }}, {{ name = "s2", threshold = 1.0 }}]
"""


def generated(tmp_path: Path, seed: int) -> tuple[Path, Path]:
    gauges = "".join(
        f'[gauges.{g}]\nbus = "field"\nunit = {i + 1}\nquantity = "level_m"\n'
        f'register = {{ kind = "holding", address = 0, data_type = "int16", scale = 0.01 }}\n'
        f'range = [-1.0, 8.0]\nquality = {{ max_step = 0.5, flatline_max_cycles = 12 }}\n'
        for i, g in enumerate(("a1", "a2", "b1", "b2", "c1")))
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(gauges=gauges), encoding="utf-8")
    rng = np.random.default_rng(seed)
    cycles = 3000
    river = 1.5 + 1.6 * np.sin(np.arange(cycles) / 90.0) ** 2
    rows = ["time,station,quantity,value"]
    frozen: dict[str, float] = {}
    for k in range(cycles):
        for name, offset in (("a", 0.0), ("a:a2", 0.0), ("b", 0.3), ("b:b2", 0.3), ("c", 0.1)):
            r = rng.random()
            level = river[k] + offset + rng.normal(0, 0.02)
            if name.endswith("2") and rng.random() < 0.3:
                level += rng.choice([-0.4, 0.4]) * rng.random()  # a disagreeing gauge
            if name in frozen:
                if rng.random() < 0.05:
                    del frozen[name]
                else:
                    level = frozen[name]
            elif rng.random() < 0.005:
                frozen[name] = level
            if r < 0.03:
                value = ""
            elif r < 0.04:
                value = f"{rng.uniform(-1, 8):.2f}"  # an absurd sample
            elif r < 0.06:
                continue  # absent from the cycle
            else:
                value = f"{level:.3f}"
            rows.append(f"{180 * k},{name},level_m,{value}")
    scenario = tmp_path / "scenario.csv"
    scenario.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return config, scenario


@pytest.mark.parametrize("seed", [1, 2])
def test_both_replay_paths_agree_with_two_gauges(tmp_path: Path, seed: int) -> None:
    config_path, path = generated(tmp_path, seed)
    config = load_config(config_path)
    scenario = read_scenario(path, config)
    fast = list(replay(scenario, config))
    slow = list(replay_per_cycle(scenario, config))
    assert {e["station"] for e in slow if e["event"] == "stage"} == {"a", "b", "c"}
    assert any(e["event"] == "fault" and e["station"] in ("a", "b") for e in slow)
    assert fast == slow
