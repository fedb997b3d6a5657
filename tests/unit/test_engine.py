"""The engine: derivations, transitions and broadcast decisions per cycle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gauged.alarm.engine import Engine
from gauged.alarm.quality import Quality
from gauged.alarm.types import Sample
from gauged.config.load import load_config
from gauged.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 7, 1, tzinfo=UTC)
GOOD = Quality.GOOD


@pytest.fixture
def engine() -> Engine:
    return Engine(load_config(ROOT / "config" / "minato-furukawa.toml"))


def at(i: int) -> datetime:
    return T0 + timedelta(minutes=3 * i)


def test_freeboard_is_crest_minus_level(engine: Engine) -> None:
    result = engine.evaluate(at(0), {"shin_hiroo": Sample(1.0, GOOD)})
    state = result.states[0]
    assert state.freeboard_m == pytest.approx(3.6)  # crest 4.60 m
    assert state.stage_name == "normal"


def test_stage_4_broadcasts_the_siren_sequence_once(engine: Engine) -> None:
    levels = [1.0, 2.1, 2.7, 3.7, 4.65, 4.7, 4.65]
    broadcasts = []
    for i, level in enumerate(levels):
        broadcasts += engine.evaluate(at(i), {"shin_hiroo": Sample(level, GOOD)}).broadcasts
    assert [(b.stage_name, b.zone, b.siren_s) for b in broadcasts] == [
        ("notice", "furukawa_hiroo", 0.0),
        ("warning", "furukawa_hiroo", 0.0),
        ("overflow", "furukawa_hiroo", 10.0),
    ]
    assert broadcasts[-1].clips == ("furukawa_overflow_ja", "furukawa_overflow_en")


def test_a_skipped_stage_broadcasts_only_the_highest(engine: Engine) -> None:
    engine.evaluate(at(0), {"shirokane": Sample(1.0, GOOD)})
    result = engine.evaluate(at(1), {"shirokane": Sample(3.5, GOOD)})  # freeboard 0.8
    assert [(t.from_name, t.to_name) for t in result.transitions] == [("normal", "warning")]
    assert [b.sequence for b in result.broadcasts] == ["level_warning"]


def test_way_down_is_silent(engine: Engine) -> None:
    engine.evaluate(at(0), {"shin_hiroo": Sample(3.7, GOOD)})  # freeboard 0.9: warning
    result1 = engine.evaluate(at(1), {"shin_hiroo": Sample(1.0, GOOD)})
    result2 = engine.evaluate(at(2), {"shin_hiroo": Sample(1.0, GOOD)})
    assert result1.transitions == []
    assert [(t.from_name, t.to_name) for t in result2.transitions] == [("warning", "normal")]
    assert result2.broadcasts == []


def test_bad_level_readings_are_kept_but_not_acted_on(engine: Engine) -> None:
    result = engine.evaluate(at(0), {"shin_hiroo": Sample(9.5, Quality.BAD)})
    state = result.states[0]
    assert state.freeboard_m == pytest.approx(-4.9)  # stored and shown …
    assert state.quality is Quality.BAD
    assert result.transitions == []
    assert result.broadcasts == []


def test_rain_stage_from_rolling_total(engine: Engine) -> None:
    events = []
    engine.evaluate(at(0), {"rain_ward_office": Sample(None, GOOD)})  # counter baseline
    for i in range(1, 21):
        result = engine.evaluate(at(i), {"rain_ward_office": Sample(3.0, GOOD)})
        events += [(i, t.to_name) for t in result.transitions]
        events += [(i, b.sequence) for b in result.broadcasts]
    # 3 mm per cycle: 27 mm at cycle 9, 30 at 10, 51 at 17
    assert events == [(9, "watch"), (10, "notice"), (17, "warning"), (17, "rain_warning")]
    assert result.states[0].rain_total_mm == pytest.approx(60.0)


def test_missing_rain_reading_does_not_lower_the_stage(engine: Engine) -> None:
    for i in range(20):
        engine.evaluate(at(i), {"rain_ward_office": Sample(3.0, GOOD)})
    for i in range(20, 45):  # the gauge is gone for over an hour
        result = engine.evaluate(at(i), {"rain_ward_office": Sample(None, Quality.MISSING)})
        assert result.transitions == []
    assert engine.machines["rain_ward_office"].name == "warning"


# ---- what the operator sees: rate of rise, minutes to the next stage, rain totals -------

def test_level_state_has_the_rate_of_rise_and_minutes_to_the_next_stage(
        engine: Engine) -> None:
    states = [engine.evaluate(at(i), {"shin_hiroo": Sample(1.0 + 0.05 * i, GOOD)}).states[0]
              for i in range(5)]
    assert states[1].rise_m_per_h is None  # two readings: no fit yet
    last = states[-1]
    assert last.rise_m_per_h == pytest.approx(1.0)  # 5 cm per 3 minutes
    assert last.stage_name == "normal"  # freeboard 3.4; watch at 2.58: 0.82 m away
    assert last.minutes_to_next == pytest.approx(49.2)
    assert last.stage_value == last.freeboard_m


def test_rain_state_has_every_total(engine: Engine) -> None:
    engine.evaluate(at(0), {"rain_ward_office": Sample(None, GOOD)})
    for i in range(1, 5):
        state = engine.evaluate(at(i), {"rain_ward_office": Sample(2.5, GOOD)}).states[0]
    # readings stamped in the last 10 minutes: 4 of them at a 3-minute cycle
    assert (state.rain_10m_mm, state.rain_60m_mm, state.rain_total_mm) == (10.0, 10.0, 10.0)
    assert state.rain_24h_mm == 10.0
    assert state.rain_event_mm == 10.0
    assert state.rain_event_start == at(1)
    assert state.rain_hour_mm == 10.0  # 09:03 … 09:12 local
    assert state.rain_eff_short_mm is not None
    assert 9.0 < state.rain_eff_short_mm < 10.0
    assert state.rain_span_s == 180
    assert state.rain_partial  # the hour before the first reading is unknown


# ---- combined quantities ---------------------------------------------------------------

COMBINED = """
[stations.river]
kind = "level"
gauge = "river"
crest_m = 4.0
zones = ["riverside"]
combine = "{rule}"
inputs = [{{ station = "rain", quantity = "60m", thresholds = [30.0] }}]
stages = [
    {{ name = "notice", threshold = 2.0, sequence = "notice" }},
    {{ name = "overflow", threshold = 0.0, sequence = "overflow" }},
]
"""


def combined_config(tmp_path: Path, rule: str, inputs: str | None = None) -> Path:
    text = (ROOT / "tests" / "data" / "minimal.toml").read_text(encoding="utf-8")
    start = text.index("[stations.river]")
    end = text.index("[stations.rain]")
    station = COMBINED.format(rule=rule)
    if inputs is not None:
        station = station.replace(station[station.index("inputs"):station.index("stages")],
                                  inputs + "\n")
    path = tmp_path / "combined.toml"
    path.write_text(text[:start] + station + text[end:], encoding="utf-8")
    return path


def rain_then_level(engine: Engine, levels: list[float]) -> list[tuple[int, str, str, str]]:
    """3 mm of rain per cycle for 11 cycles, the river at `levels[i]`; the river's
    transitions as (cycle, quantity, from, to)."""
    out = []
    for i, level in enumerate(levels):
        rain = None if i == 0 else (3.0 if i <= 11 else 0.0)
        result = engine.evaluate(at(i), {"river": Sample(level, GOOD),
                                         "rain": Sample(rain, GOOD)})
        out += [(i, t.kind, t.from_name, t.to_name) for t in result.transitions
                if t.station == "river"]
    return out


def test_combine_max_takes_the_higher_quantity(tmp_path: Path) -> None:
    engine = Engine(load_config(combined_config(tmp_path, "max")))
    levels = [1.0] * 12 + [2.5] * 3 + [1.0] * 30
    assert rain_then_level(engine, levels) == [
        (10, "rain", "normal", "notice"),  # 30 mm in the hour
        # the level reaches notice at 12 as well (no change) and clears at 16; the station
        # stays at notice until the rain clears too: 24 mm at 23, 21 mm at 24
        (24, "rain", "notice", "normal"),
    ]


def test_combine_min_needs_every_quantity(tmp_path: Path) -> None:
    engine = Engine(load_config(combined_config(tmp_path, "min")))
    levels = [1.0] * 12 + [2.5] * 3 + [1.0] * 5
    assert rain_then_level(engine, levels) == [
        (12, "level", "normal", "notice"),  # rain at notice since 10, the level from 12
        (16, "level", "notice", "normal"),
    ]


def test_an_input_from_an_unknown_station_is_refused(tmp_path: Path) -> None:
    path = combined_config(tmp_path, "max", inputs='inputs = [{ station = "nowhere", '
                                                   'quantity = "60m", thresholds = [30.0] }]')
    with pytest.raises(ConfigError, match=r"inputs\[0\]\.station: unknown station 'nowhere'"):
        Engine(load_config(path))
    path = combined_config(tmp_path, "max", inputs='inputs = [{ station = "rain", '
                                                   'quantity = "freeboard", thresholds = [1.0] }]')
    with pytest.raises(ConfigError, match="'freeboard' is not a quantity of rain station"):
        Engine(load_config(path))


def test_input_thresholds_are_checked_with_the_station(tmp_path: Path) -> None:
    path = combined_config(tmp_path, "max", inputs='inputs = [{ station = "rain", '
                                                   'quantity = "60m", thresholds = [30.0, 20.0] }]')
    with pytest.raises(ConfigError, match="thresholds must be finite and increasing"):
        load_config(path)


# ---- restored stages ----------------------------------------------------------------------

def test_a_restored_stage_is_kept_without_a_transition(engine: Engine) -> None:
    engine.restore("shin_hiroo", 3, at(0))
    result = engine.evaluate(at(1), {"shin_hiroo": Sample(3.65, GOOD)})  # still warning
    assert result.transitions == []
    assert result.broadcasts == []
    assert result.states[0].stage_name == "warning"
    result = engine.evaluate(at(2), {"shin_hiroo": Sample(4.65, GOOD)})
    assert [b.sequence for b in result.broadcasts] == ["level_overflow"]


def test_alm_2_level_oscillating_at_overflow_sounds_one_siren(engine: Engine) -> None:
    """ALM-2 through the engine: shin_hiroo at warning, then ±5 cm around the top of the
    wall for an hour: one change (to overflow) and one siren."""
    engine.evaluate(at(0), {"shin_hiroo": Sample(4.10, GOOD)})
    changes, sirens = [], []
    for i in range(1, 21):
        result = engine.evaluate(at(i), {"shin_hiroo": Sample(4.65 if i % 2 else 4.55, GOOD)})
        changes += result.transitions
        sirens += [b for b in result.broadcasts if b.siren_s > 0]
    assert [(t.from_name, t.to_name) for t in changes] == [("warning", "overflow")]
    assert len(sirens) == 1
