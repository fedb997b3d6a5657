"""The bundled scenarios and placeholder clips: generated, complete and as documented."""

from __future__ import annotations

import tomllib
import wave
from pathlib import Path

import pytest

from simulators.config import load_config
from simulators.scenario import load_scenario
from simulators.scenarios import bundled
from simulators.scenarios import make_scenarios as make

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "config" / "minato-furukawa.toml"


@pytest.mark.parametrize("name", sorted(make.OUTPUTS))
def test_committed_file_is_what_the_script_generates(name: str) -> None:
    path = bundled(name)
    assert path is not None
    assert path.read_text(encoding="utf-8") == make.render(make.OUTPUTS[name]())


@pytest.mark.parametrize(("name", "rows"), [("design_storm_50mm", 81), ("calm_day", 481)])
def test_every_station_of_the_reference_config_on_every_row(name: str, rows: int) -> None:
    path = bundled(name)
    assert path is not None
    scenario = load_scenario(path)  # parses with the same rules as any scenario
    stations = set(load_config(REFERENCE).stations)
    assert len(stations) == 11
    times = sorted({row.t_s for row in scenario.rows})
    assert times == [180.0 * k for k in range(rows)]
    for t_s in times:
        assert {row.station for row in scenario.rows if row.t_s == t_s} == stations
    assert len(scenario.rows) == 11 * rows


def test_design_storm_meets_its_brief() -> None:
    assert make.check_design_storm(make.design_storm()) == []
    assert make.check_calm_day(make.calm_day()) == []


def test_design_storm_timeline_matches_the_documented_table() -> None:
    timeline = make.design_storm_timeline(make.design_storm())
    as_data = tuple((t.cycle, t.station, t.from_stage, t.to_stage, t.broadcast) for t in timeline)
    assert as_data == make.EXPECTED_DESIGN_STORM
    assert make.__doc__ is not None
    for transition in timeline:
        assert transition.line() in make.__doc__
    # Both river stations go through every stage and back; three rain warnings, 4 cycles apart.
    for station in make.LEVEL_STATIONS:
        ups = [t.to_stage for t in timeline if t.station == station and t.broadcast]
        assert ups == ["notice", "warning", "overflow"]
        assert [t.to_stage for t in timeline if t.station == station][-1] == "normal"
    rain_warnings = [(t.cycle, t.station) for t in timeline if t.broadcast == "rain_warning"]
    assert rain_warnings == [
        (19, "rain_placeholder_3"),
        (23, "rain_ward_office"),
        (27, "rain_placeholder_6"),
    ]


def test_script_check_mode_passes() -> None:
    assert make.main(["--check"]) == 0


def test_reference_clips_exist_for_every_configured_clip() -> None:
    with REFERENCE.open("rb") as stream:
        clips = tomllib.load(stream)["clips"]
    assert len(clips) == 8
    payloads = set()
    for name, clip in clips.items():
        path = REFERENCE.parent / clip["file"]
        assert path.name == f"{name}.wav"
        with wave.open(str(path), "rb") as audio:
            assert audio.getnchannels() == 1
            assert audio.getsampwidth() == 2
            assert audio.getframerate() == 16000
            assert audio.getnframes() > 3 * 16000  # speech (tests/unit/test_aud_5_clips.py)
            payloads.add(audio.readframes(audio.getnframes()))
    assert len(payloads) == 8  # a different message per clip
