"""ALM-14: replay is the live daemon's twin, case for case.

`replay_per_cycle` is the daemon's pipeline on an injected clock: the poller's `Judge` (every
quality rule with its history, related gauges watching each other), the `Engine` (stages,
follow, per-station and per-zone announcements) and each zone's `ZoneQueue` timed by the
sequences' lengths. `replay` (what `gauged replay` runs) derives whole records with numpy.
Hypothesis generates storms with injected faults (failures to a constant inside the range,
frozen gauges, spikes, steps toward danger and toward safety, missing and out-of-range
readings, stations absent from cycles, counters that wrap and reset) and both must give the
same stage, fault and broadcast events, outcomes included.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gauged.alarm.replay import replay, replay_per_cycle
from gauged.alarm.scenario import read_scenario
from gauged.config.load import load_config
from gauged.config.settings import Config

CASES = 500
LEVELS = ("lv_a", "lv_b", "lv_c")
RAINS = ("r_a", "r_b", "r_c")
FAULTS = ("constant", "freeze", "spike", "step_up", "step_down", "missing", "range", "absent")

CONFIG = '''[gateway]
id = "twin"
timezone = "Asia/Tokyo"

[defaults]
confirm_samples = 1
clear_samples = 2
dwell_min = 6

[buses.field]
kind = "modbus_tcp"
host = "127.0.0.1"
port = 15020

[buses.relays]
kind = "modbus_tcp"
host = "127.0.0.1"
port = 15030

[gauges.lv_a]
bus = "field"
unit = 1
quantity = "level_m"
register = { kind = "holding", address = 0, data_type = "int16", scale = 0.01 }
range = [-1.0, 8.0]
quality = { max_step = 0.5, flatline_max_cycles = 30, related_move = 0.05 }

[gauges.lv_b]
bus = "field"
unit = 2
quantity = "level_m"
register = { kind = "holding", address = 0, data_type = "int16", scale = 0.01 }
range = [-1.0, 8.0]
quality = { max_step = 0.5, flatline_cycles = 8, max_fall_m_per_h = 2.0 }

[gauges.lv_c]
bus = "field"
unit = 3
quantity = "level_m"
register = { kind = "holding", address = 0, data_type = "int16", scale = 0.01 }
range = [-1.0, 8.0]
quality = { stale_cycles = 3, flatline_max_cycles = 12, related_move = 5.0 }

[gauges.r_a]
bus = "field"
unit = 4
quantity = "rain_counter"
register = { kind = "holding", address = 0, data_type = "uint16", scale = 0.5 }
quality = { max_step = 10.0, related_move = 3.0 }

[gauges.r_b]
bus = "field"
unit = 5
quantity = "rain_counter"
register = { kind = "holding", address = 0, data_type = "uint16", scale = 0.5 }
quality = { max_step = 10.0 }

[gauges.r_c]
bus = "field"
unit = 6
quantity = "rain_counter"
register = { kind = "holding", address = 0, data_type = "uint16", scale = 0.5 }

[stations.lv_a]
kind = "level"
gauge = "lv_a"
crest_m = 4.0
zones = ["river", "ward"]
related = ["lv_b"]
all_clear = "clear"
stages = [
    { name = "notice", threshold = 2.5, sequence = "notice" },
    { name = "warning", threshold = 1.5, sequence = "warning", repeat_min = 12 },
    { name = "overflow", threshold = 0.3, sequence = "overflow" },
]

[stations.lv_b]
kind = "level"
gauge = "lv_b"
crest_m = 4.2
zones = ["river"]
related = ["lv_c"]
stages = [
    { name = "notice", threshold = 2.5, sequence = "notice" },
    { name = "warning", threshold = 1.5, sequence = "warning" },
    { name = "overflow", threshold = 0.3, sequence = "overflow" },
]

[stations.lv_c]
kind = "level"
gauge = "lv_c"
crest_m = 3.8
zones = ["river"]
all_clear = "clear"
stages = [
    { name = "notice", threshold = 2.5, sequence = "notice" },
    { name = "warning", threshold = 1.5, sequence = "warning", repeat_min = 9 },
    { name = "overflow", threshold = 0.3, sequence = "overflow" },
]

[stations.r_a]
kind = "rain"
gauge = "r_a"
zones = ["ward"]
related = ["r_b", "r_c"]
stages = [{ name = "watch", threshold = 10.0 },
          { name = "warning", threshold = 25.0, sequence = "rain", repeat_min = 15 }]

[stations.r_b]
kind = "rain"
gauge = "r_b"
zones = ["ward"]
stages = [{ name = "watch", threshold = 10.0 },
          { name = "warning", threshold = 25.0, sequence = "rain" }]

[stations.r_c]
kind = "rain"
gauge = "r_c"
zones = ["ward"]
stages = [{ name = "watch", threshold = 10.0 },
          { name = "warning", threshold = 25.0, sequence = "rain" }]

[zones.river]
siren_relay = { bus = "relays", unit = 1, coil = 0 }
player = "sink"
min_gap_min = 20

[zones.ward]
siren_relay = { bus = "relays", unit = 1, coil = 1 }
player = "sink"
min_gap_min = 30

[players.sink]
kind = "sink"
port = 15040

[sequences.notice]
clips = ["c"]

[sequences.warning]
clips = ["c", "c"]
repeats = 2
gap_s = 30

[sequences.overflow]
siren_pattern = [5, 6, 5]
clips = ["c"]

[sequences.rain]
clips = ["c"]

[sequences.clear]
clips = ["c"]

[clips.c]
file = "c.wav"
'''


def write_clip(folder: Path, seconds: float) -> None:
    import wave

    with wave.open(str(folder / "c.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * int(8000 * seconds))


fault = st.tuples(st.sampled_from(FAULTS), st.sampled_from(LEVELS + RAINS),
                  st.integers(0, 160), st.integers(1, 40))


def scenario(seed: int, cycles: int, faults: list[tuple[str, str, int, int]]) -> str:
    """A storm over the river and the ward, then the faults, as scenario CSV rows."""
    rng = np.random.default_rng(seed)
    peak = rng.uniform(10, 70)  # mm/h
    shape = np.sin(np.linspace(0, np.pi, cycles)) ** 2 * peak
    levels: dict[str, np.ndarray] = {}
    for k, sid in enumerate(LEVELS):
        lag = int(rng.integers(0, 8))
        base = rng.uniform(0.5, 1.5)
        rise = np.concatenate([np.zeros(lag), shape[:cycles - lag]]) * rng.uniform(0.03, 0.07)
        levels[sid] = np.round(base + rise + rng.normal(0, 0.01, cycles), 2)
        if k == 2:  # a quiet gauge: its readings repeat
            levels[sid] = np.round(levels[sid], 1)
    tips: dict[str, np.ndarray] = {}
    for sid in RAINS:
        mm = shape * rng.uniform(0.5, 1.5) / 20.0 * rng.uniform(0.5, 1.5, cycles)
        tips[sid] = (int(rng.integers(0, 65536)) + np.floor(np.cumsum(mm) / 0.5)) % 65536
    values: dict[str, list[str]] = {}
    for sid in LEVELS:
        values[sid] = [f"{v:.2f}" for v in levels[sid]]
    for sid in RAINS:
        values[sid] = [str(int(v)) for v in tips[sid]]
    for kind, sid, start, length in faults:
        row = values[sid]
        span = range(start, min(cycles, start + length))
        level = sid in LEVELS
        def num(text: str) -> float:
            return float(text) if text not in ("", "-") else 0.0

        for i in span:
            before = row[start - 1] if start > 0 else row[start]
            if kind == "constant":
                row[i] = "0.00" if level else "17"
            elif kind == "freeze":
                row[i] = before
            elif kind == "spike" and i == start:
                row[i] = "7.50" if level else str((int(num(before)) + 900) % 65536)
            elif kind == "step_up" and level:
                row[i] = f"{num(row[i]) + 1.2:.2f}"
            elif kind == "step_down" and level:
                row[i] = f"{num(row[i]) - 1.2:.2f}"
            elif kind == "missing":
                row[i] = ""
            elif kind == "range" and level:
                row[i] = "9.90"
            elif kind == "absent":
                row[i] = "-"  # no row at all for this cycle
            elif kind in ("step_up", "step_down", "range") and i == start:
                row[i] = "0"  # a counter reset
    lines = ["time,station,quantity,value"]
    for i in range(cycles):
        for sid in LEVELS + RAINS:
            v = values[sid][i]
            if v != "-":
                quantity = "level_m" if sid in LEVELS else "rain_counter"
                lines.append(f"{i * 180},{sid},{quantity},{v}")
    return "\n".join(lines) + "\n"


def load(folder: Path, text: str = CONFIG) -> Config:
    path = folder / "config.toml"
    path.write_text(text, encoding="utf-8")
    write_clip(folder, 20.0)
    return load_config(path)


@settings(max_examples=CASES, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), cycles=st.integers(30, 200),
       faults=st.lists(fault, max_size=6), follow=st.booleans())
def test_alm_14_replay_equals_the_live_pipeline(tmp_path: Path, seed: int, cycles: int,
                                                faults: list[tuple[str, str, int, int]],
                                                follow: bool) -> None:
    text = CONFIG.replace('related = ["lv_c"]\n', 'related = ["lv_c"]\nfollow = "lv_a"\n') \
        if follow else CONFIG
    config = load(tmp_path, text)
    path = tmp_path / "scenario.csv"
    path.write_text(scenario(seed, cycles, faults), encoding="utf-8")
    rows = read_scenario(path, config)
    # (with `follow`, which couples two stations' machines, replay runs the per-cycle path)
    assert list(replay(rows, config)) == list(replay_per_cycle(rows, config))


def test_alm_14_the_generated_cases_exercise_every_rule(tmp_path: Path) -> None:
    """The generator is not idle: across a few seeds the events hold every fault kind the
    rules name, merged, superseded and repeated broadcasts, and all-clears."""
    config = load(tmp_path)
    seen: set[str] = set()
    rng = np.random.default_rng(7)
    for seed in range(40):
        faults = [(FAULTS[int(rng.integers(len(FAULTS)))],
                   (LEVELS + RAINS)[int(rng.integers(6))], int(rng.integers(20, 120)),
                   int(rng.integers(2, 30))) for _ in range(4)]
        path = tmp_path / "scenario.csv"
        path.write_text(scenario(seed, 200, faults), encoding="utf-8")
        for e in replay(read_scenario(path, config), config):
            if e["event"] == "fault":
                seen.add(e["fault"].split(":")[0])
            elif e["event"] == "broadcast":
                seen.add(f"{e['kind']}/{e['outcome']}")
    for want in ("implausible fall", "frozen", "stale", "flatline", "stage/done",
                 "stage/merged", "repeat/done", "all_clear/done"):
        assert want in seen, (want, sorted(seen))
