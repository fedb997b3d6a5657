"""A step of the wall clock is invisible to the alarm rules (QUALITY SCH-4, SCH-3).

When NTP steps the clock of a gateway that booted hours behind, the daemon re-dates the
alarm history by the step (`Judge.shift`, `Engine.shift`; gauged/daemon/timeline.py) and
stamps every later cycle with the stepped clock. The quality, rain, stage, repeat and zone
rules must then decide exactly what they would have decided had the clock always been
right: no rain window emptied or doubled, no dwell or repeat shortened or held, no lying
gauge made plausible by a "gap" that never was.

Shown on the generated days of tests/unit/test_replay_equivalence.py (every feature, every
kind of bad input): the same scenario once on a clock that never steps, and once on a clock
stepped forward and back at several cycles; every fault, stage and broadcast decision must
be the same, at the same moment in real time.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from test_replay_equivalence import config_text, scenario_text

from gauged.alarm.engine import Engine
from gauged.alarm.quality import Judge, Observation
from gauged.alarm.replay import _Observer, paired
from gauged.alarm.scenario import _time, read_scenario
from gauged.alarm.types import Sample
from gauged.config.load import load_config
from gauged.config.settings import Config

HOUR = 3600.0


def decisions(scenario: Any, config: Config, steps: Mapping[int, float], *,
              redate: bool = True) -> Iterator[tuple[int, str, tuple[Any, ...]]]:
    """The daemon's per-cycle path over `scenario`; before cycle k (by index) the wall clock
    steps by `steps[k]` seconds: the history is re-dated and the cycle, like every later one,
    is stamped on the stepped clock (`redate=False`: the history is left as it was).
    Yields (cycle index, kind, what) with every time given back on the scenario's own
    (unstepped) clock."""
    engine, judge, observer = Engine(config), Judge(config), _Observer(config)
    scenario = paired(scenario, config)
    ids = scenario.stations
    time_us, station = scenario.time_us.tolist(), scenario.station.tolist()
    quantity, value = scenario.quantity.tolist(), scenario.value.tolist()
    offset = 0.0  # the steps so far
    i, n, k = 0, len(time_us), 0
    while i < n:
        us = time_us[i]
        observations: dict[str, Observation] = {}
        while i < n and time_us[i] == us:
            channel = ids[station[i]]
            observations[channel] = observer.observe(channel, quantity[i], value[i])
            i += 1
        if k in steps:
            offset += steps[k]
            if redate:
                judge.shift(steps[k])
                engine.shift(steps[k])
        time = _time(us + round(offset * 1e6))
        judged = judge.judge(time.timestamp(), observations)
        samples = {sid: Sample(r.value, r.judgement.quality, r.judgement.reason, r.fault,
                               r.gauges)
                   for sid, r in judge.stations(observations, judged).items()}
        for sid, j in sorted(judged.items()):
            yield k, "quality", (sid, j.quality.value, j.reason.split(":")[0])
        result = engine.evaluate(time, samples)
        for t in result.transitions:
            yield k, "stage", (t.station, t.kind, t.from_name, t.to_name, t.value,
                               t.time.timestamp() - offset)
        for b in result.broadcasts:
            yield k, "broadcast", (b.zone, b.station, b.stage, b.kind, b.named,
                                   b.time.timestamp() - offset)
        for m in result.merged:
            yield k, "merged", (m.request.station, m.request.zone, m.request.kind)
        for s in result.states:
            rain = (s.rain_10m_mm, s.rain_60m_mm, s.rain_hour_mm, s.rain_24h_mm,
                    s.rain_event_mm, s.rain_partial, s.rain_span_s,
                    None if s.rain_event_start is None else
                    s.rain_event_start.timestamp() - offset)
            eff = (s.rain_eff_short_mm, s.rain_eff_long_mm)
            yield k, "state", (s.station, s.stage, s.quality.value, s.rise_m_per_h,
                               s.minutes_to_next, rain, eff)
        k += 1


def load(tmp_path: Path, mode: str, seed: int, *, clock_hour: bool) -> tuple[Config, Path]:
    """The generated config and days; without `clock_hour` no stage depends on the clock
    hour (a step by no whole number of hours re-dates rain into another clock hour, and the
    hour's total then rightly differs)."""
    text = config_text(mode)
    if not clock_hour:
        assert text.count('quantity = "hour"') == 1
        text = text.replace('quantity = "hour"', 'quantity = "60m"')
    config = tmp_path / "config.toml"
    config.write_text(text, encoding="utf-8")
    scenario = tmp_path / "scenario.csv"
    scenario.write_text(scenario_text(seed), encoding="utf-8")
    return load_config(config), scenario


def compare(steady: list[Any], stepped: list[Any], *, clock_hour: bool) -> None:
    assert len(stepped) == len(steady)
    for a, b in zip(steady, stepped, strict=True):
        # the effective rainfall is rescaled by the re-dating: equal to rounding
        if a[1] == "state":
            rain_a, rain_b = list(a[2][5]), list(b[2][5])
            if not clock_hour:
                rain_a[2] = rain_b[2] = None  # the clock hour's total
            assert a[2][:5] == b[2][:5], (a, b)
            assert rain_a == rain_b, (a, b)
            assert b[2][6] == pytest.approx(a[2][6], abs=0.002), (a, b)
        elif a[1] == "stage":
            assert a[2][:4] + a[2][5:] == b[2][:4] + b[2][5:], (a, b)
            assert b[2][4] == pytest.approx(a[2][4], rel=1e-9), (a, b)
        else:
            assert a == b


@pytest.mark.parametrize(("mode", "seed", "steps"), [
    # boots 3 h behind, NTP steps it forward; later an operator's `date` an hour back
    ("rolling", 3, {150: 3 * HOUR, 900: -HOUR}),
    # the clock hour of a half-hour time zone: whole hours keep its periods
    ("clock_hour", 5, {300: 3 * HOUR, 1200: -2 * HOUR}),
    # steps by no multiple of the cycle, both ways, some mid-storm (no clock-hour stage)
    ("rolling", 4, {40: 10_000.5, 41: -2_345.25, 700: -5 * HOUR - 17.0, 1500: 61.0}),
])
def test_sch_4_a_step_re_dates_the_history_and_changes_no_decision(
        tmp_path: Path, mode: str, seed: int, steps: dict[int, float]) -> None:
    clock_hour = all(s % HOUR == 0 for s in steps.values())
    config, path = load(tmp_path, mode, seed, clock_hour=clock_hour)
    scenario = read_scenario(path, config)
    steady = list(decisions(scenario, config, {}))
    stepped = list(decisions(scenario, config, steps))
    kinds = {e[1] for e in steady}
    assert {"stage", "broadcast", "state", "quality"} <= kinds  # the data move every rule
    assert sum(e[1] == "broadcast" for e in steady) > 20
    compare(steady, stepped, clock_hour=clock_hour)


def test_sch_4_without_re_dating_a_step_would_change_decisions(tmp_path: Path) -> None:
    """The control: the same steps with the history left as it was do change what the
    rules decide (so the comparison above can see a difference)."""
    config, path = load(tmp_path, "rolling", 3, clock_hour=True)
    scenario = read_scenario(path, config)
    steady = list(decisions(scenario, config, {}))

    stepped = list(decisions(scenario, config, {150: 3 * HOUR, 900: -HOUR}, redate=False))
    with pytest.raises(AssertionError):
        compare(steady, stepped, clock_hour=True)
