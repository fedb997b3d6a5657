"""The engine: derivations, transitions and broadcast decisions per cycle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gauged.config import load_config
from gauged.engine import Engine, Sample
from gauged.quality import Quality

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
