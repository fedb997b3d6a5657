"""Scenario CSV parsing, the level step function and cumulative rain totals."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from simulators.errors import ScenarioError
from simulators.scenario import load_scenario, parse_scenario

SECONDS = """time,station,quantity,value
0,shin_hiroo,level_m,1.0
0,rain_ward_office,rain_mm,0.0
180,shin_hiroo,level_m,1.5
180,rain_ward_office,rain_mm,2.5
360,rain_ward_office,rain_mm,0.5
540,shin_hiroo,level_m,1.25
540,rain_ward_office,rain_mm,1.0
"""


def test_seconds_form() -> None:
    scenario = parse_scenario(SECONDS)
    assert [row.t_s for row in scenario.rows] == [0, 0, 180, 180, 360, 540, 540]
    assert scenario.duration_s == 540
    assert scenario.origin is None
    assert scenario.stations("level_m") == {"shin_hiroo"}
    assert scenario.stations("rain_mm") == {"rain_ward_office"}


def test_iso_form_becomes_offsets_from_the_first_row() -> None:
    text = """time,station,quantity,value
2024-06-01T18:00:00+09:00,shin_hiroo,level_m,1.0
2024-06-01T09:03:00Z,shin_hiroo,level_m,2.0
2024-06-01T09:06:30+00:00,shin_hiroo,level_m,3.0
"""
    scenario = parse_scenario(text)
    assert [row.t_s for row in scenario.rows] == [0.0, 180.0, 390.0]
    assert scenario.origin == datetime(2024, 6, 1, 9, 0, tzinfo=UTC)
    assert scenario.level_at("shin_hiroo", 389.9) == 2.0


def test_level_step_function() -> None:
    scenario = parse_scenario(SECONDS)
    assert scenario.level_at("shin_hiroo", -100.0) == 1.0  # before the first row: the first
    assert scenario.level_at("shin_hiroo", 0.0) == 1.0
    assert scenario.level_at("shin_hiroo", 179.999) == 1.0
    assert scenario.level_at("shin_hiroo", 180.0) == 1.5  # at the row: the row
    assert scenario.level_at("shin_hiroo", 539.0) == 1.5
    assert scenario.level_at("shin_hiroo", 10_000.0) == 1.25  # after the last: the last
    assert scenario.level_at("shirokane", 0.0) is None  # no level rows at all
    assert scenario.level_at("rain_ward_office", 0.0) is None


def test_rain_totals_are_cumulative_over_rows_at_or_before_t() -> None:
    scenario = parse_scenario(SECONDS)
    assert scenario.rain_total_at("rain_ward_office", -1.0) == 0.0
    assert scenario.rain_total_at("rain_ward_office", 0.0) == 0.0
    assert scenario.rain_total_at("rain_ward_office", 179.0) == 0.0
    assert scenario.rain_total_at("rain_ward_office", 180.0) == 2.5
    assert scenario.rain_total_at("rain_ward_office", 360.0) == 3.0
    assert scenario.rain_total_at("rain_ward_office", 540.0) == 4.0
    assert scenario.rain_total_at("rain_ward_office", 1e9) == 4.0
    assert scenario.rain_total_at("rain_placeholder_1", 540.0) == 0.0


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("time,station,value\n", 1, "header"),
        ("time,station,quantity,value\n180,a,level_m,1\n0,a,level_m,2\n", 3, "out of time order"),
        ("time,station,quantity,value\n0,a,level_m,1\n0,a,flow_m3s,2\n", 3, "unknown quantity"),
        ("time,station,quantity,value\n0,a,level_m,high\n", 2, "not a number"),
        ("time,station,quantity,value\n0,a,level_m,nan\n", 2, "not finite"),
        ("time,station,quantity,value\n0,a,rain_mm,-0.5\n", 2, "rain since the previous row"),
        ("time,station,quantity,value\n0,a,level_m\n", 2, "expected 4 fields"),
        ("time,station,quantity,value\nsoon,a,level_m,1\n", 2, "neither seconds nor ISO"),
        ("time,station,quantity,value\n2024-06-01T09:00:00,a,level_m,1\n", 2, "needs a UTC offset"),
        (
            "time,station,quantity,value\n2024-06-01T09:00:00Z,a,level_m,1\n60,a,level_m,1\n",
            3,
            "offset in seconds in a file of ISO-8601",
        ),
        ("time,station,quantity,value\n0,a,level_m,1\n0,a,level_m,2\n", 3, "second level_m row"),
    ],
)
def test_errors_name_file_and_line(text: str, line: int, message: str) -> None:
    with pytest.raises(ScenarioError, match=message) as caught:
        parse_scenario(text, "storm.csv")
    assert str(caught.value).startswith(f"storm.csv:{line}:")


def test_blank_lines_are_skipped_and_line_numbers_stay_physical() -> None:
    text = "time,station,quantity,value\n0,a,level_m,1\n\n60,a,level_m,2\n30,a,level_m,3\n"
    with pytest.raises(ScenarioError, match=r"^s\.csv:5: rows out of time order"):
        parse_scenario(text, "s.csv")


def test_load_scenario_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "storm.csv"
    path.write_text(SECONDS.replace("rain_mm,0.5", "rain_m,0.5"), encoding="utf-8")
    with pytest.raises(ScenarioError, match=rf"^{path}:6: unknown quantity 'rain_m'"):
        load_scenario(path)
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "missing.csv")
