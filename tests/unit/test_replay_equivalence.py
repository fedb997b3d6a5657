"""The vectorised replay and the daemon's engine give the same events, bit for bit.

`gauged replay` derives whole records with numpy and runs each stage machine over arrays;
the daemon calls `Engine.evaluate` once per cycle. Here both run on generated days that use
every feature at once (confirmation, dwell, rate-of-rise triggers, combined quantities,
every rain quantity as a stage quantity, a clock-hour window in a half-hour time zone, tip
counters that wrap and reset) and every kind of bad input (missing and bad readings, long
gauge outages, stations absent from a cycle, readings off the 3-minute grid).
`bench/perf_6_replay_year.py` makes the same comparison on a year of the reference system.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gauged.alarm.replay import replay, replay_per_cycle
from gauged.alarm.scenario import read_scenario
from gauged.config.load import load_config
from gauged.config.settings import Config

RAIN_QUANTITIES = {"r_total": "total", "r_10m": "10m", "r_60m": "60m", "r_hour": "hour",
                   "r_24h": "24h", "r_event": "event", "r_eff_short": "effective_short",
                   "r_eff_long": "effective_long"}
RAIN_STAGES = {"total": (10, 20, 35), "10m": (4, 8, 12), "60m": (10, 20, 35),
               "hour": (10, 20, 35), "24h": (30, 60, 100), "event": (20, 40, 80),
               "effective_short": (8, 15, 30), "effective_long": (30, 60, 100)}


def config_text(mode: str) -> str:
    stations = []
    gauges = []
    unit = 1
    for sid, quantity in RAIN_QUANTITIES.items():
        data_type = "uint16" if sid != "r_24h" else "uint32"
        gauges.append(f'[gauges.{sid}]\nbus = "field"\nunit = {unit}\nquantity = "rain_counter"\n'
                      f'register = {{ kind = "holding", address = 0, data_type = "{data_type}", '
                      f'scale = 0.5 }}\n')
        a, b, c = RAIN_STAGES[quantity]
        stations.append(
            f'[stations.{sid}]\nkind = "rain"\ngauge = "{sid}"\nzones = ["z1"]\n'
            f'quantity = "{quantity}"\nstages = [{{ name = "s1", threshold = {a} }}, '
            f'{{ name = "s2", threshold = {b}, sequence = "two" }}, '
            f'{{ name = "s3", threshold = {c}, sequence = "three" }}]\n')
        unit += 1
    for sid in ("lv_a", "lv_b", "lv_c"):
        gauges.append(f'[gauges.{sid}]\nbus = "field"\nunit = {unit}\nquantity = "level_m"\n'
                      f'register = {{ kind = "holding", address = 0, data_type = "int16", '
                      f'scale = 0.01 }}\nrange = [-1.0, 8.0]\n')
        unit += 1
    stations.append('''[stations.lv_a]
kind = "level"
gauge = "lv_a"
crest_m = 4.0
zones = ["z1", "z2"]
clear_samples = 3
combine = "max"
inputs = [{ station = "r_total", quantity = "60m", thresholds = [15.0, 30.0] },
          { station = "r_eff_short", quantity = "effective_short", thresholds = [10.0] }]
stages = [
    { name = "s1", threshold = 2.5, rise_m_per_h = 0.3 },
    { name = "s2", threshold = 2.0, sequence = "two", rise_m_per_h = 0.8 },
    { name = "s3", threshold = 1.0, sequence = "three" },
    { name = "s4", threshold = 0.0, sequence = "four" },
]
''')
    stations.append('''[stations.lv_b]
kind = "level"
gauge = "lv_b"
crest_m = 3.5
zones = ["z2"]
confirm_samples = 1
dwell_min = 0
combine = "min"
inputs = [{ station = "lv_c", quantity = "freeboard", thresholds = [2.0, 1.2, 0.5] }]
stages = [
    { name = "s1", threshold = 2.2, sequence = "two" },
    { name = "s2", threshold = 1.5, sequence = "three" },
    { name = "s3", threshold = 0.6, sequence = "four" },
]
''')
    stations.append('''[stations.lv_c]
kind = "level"
gauge = "lv_c"
crest_m = 3.0
zones = ["z1"]
stages = [{ name = "s1", threshold = 1.5, sequence = "two", rise_m_per_h = 0.2 }]
''')
    return f'''[gateway]
id = "equivalence"
timezone = "Asia/Kolkata"

[defaults]
confirm_samples = 2
dwell_min = 9
rain_window_mode = "{mode}"
rain_event_dry_h = 1.0
rain_half_life_short_h = 0.5
rain_half_life_long_h = 6.0
rise_readings = 4
rise_window_min = 12

[buses.field]
kind = "modbus_tcp"
host = "127.0.0.1"
port = 15020

[buses.relays]
kind = "modbus_tcp"
host = "127.0.0.1"
port = 15030

{chr(10).join(gauges)}
{chr(10).join(stations)}
[zones.z1]
siren_relay = {{ bus = "relays", unit = 1, coil = 0 }}
player = "sink"

[zones.z2]
siren_relay = {{ bus = "relays", unit = 1, coil = 1 }}
player = "sink"

[players.sink]
kind = "sink"
port = 15040

[sequences.two]
clips = ["c"]

[sequences.three]
clips = ["c"]

[sequences.four]
siren_s = 10
clips = ["c"]

[clips.c]
file = "c.wav"
'''


def scenario_text(seed: int, cycles: int = 2000) -> str:
    """Days of 3-minute data with storms, faults, outages and irregular timing."""
    rng = np.random.default_rng(seed)
    rows = ["time,station,quantity,value"]
    rain = list(RAIN_QUANTITIES)
    counter = {sid: int(rng.integers(0, 65536)) for sid in rain}
    storm = np.zeros(cycles)
    for _ in range(cycles // 150):
        a = int(rng.integers(0, cycles))
        storm[a:a + int(rng.integers(5, 80))] += rng.gamma(2.0, 2.5)
    base = {"lv_a": 1.2, "lv_b": 1.0, "lv_c": 0.8}
    smooth = np.convolve(storm, np.ones(30) / 10.0)[:cycles]
    down = {sid: -1 for sid in rain}
    for k in range(cycles):
        t = 180 * k + (int(rng.integers(1, 170)) if rng.random() < 0.01 else 0)
        for sid in rain:
            if down[sid] < k and rng.random() < 0.004:
                down[sid] = k + int(rng.integers(3, 60))  # an outage
            if down[sid] >= k or rng.random() < 0.01:
                rows.append(f"{t},{sid},rain_counter,")
                continue
            if rng.random() < 0.01:
                continue  # absent from this cycle
            counter[sid] += int(rng.poisson(storm[k] * rng.uniform(0.5, 1.5)))
            if rng.random() < 0.0015:
                counter[sid] = int(rng.integers(0, 20))  # device reset
            rows.append(f"{t},{sid},rain_counter,{counter[sid] % 65536}")
        for sid, b in base.items():
            r = rng.random()
            if r < 0.01:
                value = ""
            elif r < 0.015:
                value = "9.9"
            elif r < 0.02:
                continue
            else:
                value = f"{b + smooth[k] * 0.12 + rng.normal(0, 0.01):.3f}"
            rows.append(f"{t},{sid},level_m,{value}")
    return "\n".join(rows) + "\n"


def load(tmp_path: Path, mode: str, seed: int) -> tuple[Config, Path]:
    config = tmp_path / "config.toml"
    config.write_text(config_text(mode), encoding="utf-8")
    scenario = tmp_path / "scenario.csv"
    scenario.write_text(scenario_text(seed), encoding="utf-8")
    return load_config(config), scenario


@pytest.mark.parametrize(("mode", "seed"), [("rolling", 1), ("clock_hour", 2)])
def test_vectorised_replay_and_engine_give_the_same_events(tmp_path: Path, mode: str,
                                                           seed: int) -> None:
    config, path = load(tmp_path, mode, seed)
    scenario = read_scenario(path, config)
    fast = list(replay(scenario, config))
    slow = list(replay_per_cycle(scenario, config))
    assert len(slow) > 100  # the data do move every kind of stage
    assert {e["station"] for e in slow if e["event"] == "stage"} == set(config.stations)
    assert fast == slow
