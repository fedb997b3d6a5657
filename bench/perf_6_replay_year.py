"""PERF-6: `gauged replay` over one year of 3-minute data for the 11 stations of the
reference configuration (175,200 cycles, 1,927,200 readings).

    .venv/bin/python bench/perf_6_replay_year.py [--keep DIR] [--report PATH]

The year is generated deterministically (fixed seed): about 90 storms of 1 to 30 hours with
peaks up to 120 mm/h crossing the ward with a lag, the Furukawa responding through a linear
reservoir (it tops the wall in the biggest storms), 3 mm of level noise, scattered missing
and out-of-range readings, rain gauges down for hours at a time, and two stations reported
as raw tip counters (a uint16 one that rolls over, a uint32 one that is reset mid-year).

value    = the vectorised replay (`gauged.alarm.replay.replay`): parse the CSV, derive, run the
           stage machines, build the events; the median of ROUNDS runs (spread printed);
baseline = the same parse (its median), then `Engine.evaluate` once per cycle
           (`replay_per_cycle`), the per-reading loop of the daemon. It runs on the whole
           year when a first slice says it takes under 3 minutes; otherwise on the slice,
           extrapolated (printed).
The two must give the same events (checked on what the baseline ran).

`--report PATH` writes the backtest report (`gauged replay --report`) of the vectorised
replay's events to PATH, after the timings (it is not timed); README's replay section quotes it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gauged.alarm.replay import replay, replay_per_cycle  # noqa: E402
from gauged.alarm.report import render, summarise  # noqa: E402
from gauged.alarm.scenario import Scenario, read_scenario  # noqa: E402
from gauged.config.load import load_config  # noqa: E402
from gauged.config.settings import Config  # noqa: E402

REFERENCE = ROOT / "config" / "minato-furukawa.toml"
CYCLE_S = 180
CYCLES = 365 * 24 * 3600 // CYCLE_S
GOAL_S, GOAL_RATIO = 10.0, 20.0
ROUNDS = 5  # of the fast path; the median decides (a shared, noisy machine)
FULL_BASELINE_LIMIT_S = 180.0
COUNTERS = {"rain_placeholder_7": 65_000, "rain_placeholder_4": 4_000_000_000}  # start counts


def generate(path: Path, config: Config, seed: int = 20240601) -> int:
    """Write the year; return the number of rows."""
    rng = np.random.default_rng(seed)
    rain_ids = [sid for sid, st in config.stations.items() if st.kind == "rain"]
    level_ids = [sid for sid, st in config.stations.items() if st.kind == "level"]
    n = CYCLES
    # storms: start, duration, peak intensity (mm/h), speed of the front across the ward
    storms = []
    t = rng.exponential(4 * 24 * 3600 / CYCLE_S)
    while t < n:
        storms.append((int(t), int(rng.uniform(20, 600)), rng.gamma(1.6, 14.0)))
        t += rng.exponential(4 * 24 * 3600 / CYCLE_S)
    rate = np.zeros((len(rain_ids), n))  # mm/h per station and cycle
    for start, length, peak in storms:
        shape = np.sin(np.linspace(0, np.pi, length)) ** 2 * min(peak, 120.0)
        for k in range(len(rain_ids)):
            lag = int(rng.integers(0, 6))
            scale = rng.uniform(0.6, 1.4)
            a = min(n, start + lag)
            b = min(n, a + length)
            rate[k, a:b] += shape[:b - a] * scale * rng.uniform(0.7, 1.3, b - a)
    mm = rate * CYCLE_S / 3600.0
    tips = np.floor(np.cumsum(mm, axis=1) / 0.5)  # 0.5 mm tipping buckets
    increments = np.diff(tips, axis=1, prepend=0.0) * 0.5
    # the river: a linear reservoir fed by the ward's mean rain, plus noise
    basin = increments.mean(axis=0) * 20.0  # mm per hour
    store = np.zeros(n)
    s = 0.0
    for i in range(n):  # the generator may loop: it is not timed
        s += (basin[i] - s) * 0.04
        store[i] = s
    levels = {
        "shin_hiroo": 1.0 + store * 0.055 + rng.normal(0, 0.003, n),
        "shirokane": 0.9 + store * 0.050 + rng.normal(0, 0.003, n),
    }
    columns: dict[str, list[str]] = {}
    for sid in level_ids:
        v = np.round(levels[sid], 3)
        text = [f"{x:.3f}" for x in v.tolist()]
        for i in rng.choice(n, 200, replace=False).tolist():
            text[i] = ""  # missing
        for i in rng.choice(n, 60, replace=False).tolist():
            text[i] = "9.500"  # out of range: bad
        columns[sid] = [f"{sid},level_m,{x}" for x in text]
    for k, sid in enumerate(rain_ids):
        inc = increments[k]
        down = np.zeros(n, dtype=bool)
        for _ in range(6):  # the gauge is down for a while
            a = int(rng.integers(0, n))
            down[a:a + int(rng.integers(10, 200))] = True
        if sid in COUNTERS:
            raw = (COUNTERS[sid] + np.cumsum(inc) / 0.5).astype(np.int64)
            if sid == "rain_placeholder_4":
                raw[n // 2:] -= raw[n // 2] - 3  # reset: the device restarted mid-year
            bits = config.gauges[config.stations[sid].gauge].counter_bits
            raw %= 1 << bits
            text = [str(x) for x in raw.tolist()]
            quantity = "rain_counter"
        else:
            # rain_mm is rain since the previous row: a down gauge reports it all after
            pending = 0.0
            text = []
            for x, off in zip(inc.tolist(), down.tolist(), strict=True):
                pending += x
                if off:
                    text.append("")
                else:
                    text.append(f"{pending:.1f}")
                    pending = 0.0
            quantity = "rain_mm"
        for i in np.flatnonzero(down).tolist():
            text[i] = ""
        columns[sid] = [f"{sid},{quantity},{x}" for x in text]
    order = list(config.stations)
    with path.open("w", encoding="utf-8") as f:
        f.write("time,station,quantity,value\n")
        for i in range(n):
            stamp = str(i * CYCLE_S)
            f.write("".join(f"{stamp},{columns[sid][i]}\n" for sid in order))
    return n * len(order)


def slice_rows(scenario: Scenario, cycles: int) -> Scenario:
    end = int(np.searchsorted(scenario.time_us, scenario.time_us[0] + cycles * CYCLE_S * 10**6))
    return Scenario(scenario.stations, scenario.time_us[:end], scenario.station[:end],
                    scenario.quantity[:end], scenario.value[:end])


def machine() -> str:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{os.cpu_count()} CPU {platform.machine()} {model}, Python "
            f"{platform.python_version()}, load average {load}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, help="write the year's CSV into this folder")
    parser.add_argument("--report", type=Path,
                        help="write the backtest report of the year's replay to this file")
    args = parser.parse_args()
    config = load_config(REFERENCE)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "year.csv"
        t0 = time.perf_counter()
        rows = generate(path, config)
        print(f"machine: {machine()}")
        print(f"generated {rows:,} readings ({path.stat().st_size / 1e6:.0f} MB) in "
              f"{time.perf_counter() - t0:.1f} s")

        # the fast path ROUNDS times (the median decides, the spread is printed); the
        # per-cycle loop, tens of seconds, once
        values, parses = [], []
        for k in range(ROUNDS):
            t0 = time.perf_counter()
            scenario = read_scenario(path, config)
            parses.append(time.perf_counter() - t0)
            events = list(replay(scenario, config))
            values.append(time.perf_counter() - t0)
            stages = sum(1 for e in events if e["event"] == "stage")
            print(f"fast replay, round {k + 1}: {values[-1]:.2f} s (parse {parses[-1]:.2f} s, "
                  f"derive + stages + events {values[-1] - parses[-1]:.2f} s): {stages} "
                  f"transitions, {len(events) - stages} broadcasts")
        value, t_parse = statistics.median(values), statistics.median(parses)
        print(f"fast replay: median of {ROUNDS} {value:.2f} s (min {min(values):.2f}, max "
              f"{max(values):.2f}); parse median {t_parse:.2f} s")

        probe_cycles = 4800  # 10 days
        t0 = time.perf_counter()
        list(replay_per_cycle(slice_rows(scenario, probe_cycles), config))
        per_cycle = (time.perf_counter() - t0) / probe_cycles
        projected = per_cycle * CYCLES
        if projected <= FULL_BASELINE_LIMIT_S:
            t0 = time.perf_counter()
            slow = list(replay_per_cycle(scenario, config))
            baseline = t_parse + time.perf_counter() - t0
            same = slow == events
            print(f"per-cycle loop: {baseline:.2f} s on the whole year (parse {t_parse:.2f} s "
                  f"+ Engine.evaluate × {CYCLES:,}); events identical: {same}")
        else:
            baseline = t_parse + projected
            part = slice_rows(scenario, probe_cycles)
            same = list(replay_per_cycle(part, config)) == list(replay(part, config))
            print(f"per-cycle loop: {per_cycle * 1e6:.0f} µs per cycle on {probe_cycles} "
                  f"cycles, extrapolated to {baseline:.1f} s for the year (not run in full); "
                  f"events identical on the slice: {same}")
        if not same:
            raise SystemExit("the vectorised replay and the per-cycle engine disagree")
        if args.report:
            report = summarise(events, config, scenario[0].time, scenario[-1].time)
            args.report.write_text(render(report) + "\n", encoding="utf-8")
    ratio = baseline / value
    result = {"id": "PERF-6", "value": round(value, 3), "baseline": round(baseline, 3),
              "ratio": round(ratio, 1),
              "spread": [round(min(values), 3), round(max(values), 3)], "rounds": ROUNDS,
              "goal": "≤ 10 s and ≥ 20× a per-reading loop",
              "met": value <= GOAL_S and ratio >= GOAL_RATIO}
    print(json.dumps(result, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
