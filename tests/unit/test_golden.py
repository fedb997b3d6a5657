"""Golden cases as data (STYLE 14): one folder per case under tests/golden/.

Each folder holds `config.toml` (the reference configuration, linked, or a small one of its
own), `scenario.csv` (DESIGN §5) and `expected.jsonl`, the events `gauged replay --json`
must print, written by reasoning from the rules (the header comment of each config and the
notes in tests/golden/README.md say why). Every case runs through the command (the
vectorised replay) and through the daemon's `Engine`, one cycle at a time: both must print
exactly the expected events. `pytest -k alm_2` selects the ALM-2 case.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gauged.alarm.replay import replay_per_cycle
from gauged.alarm.scenario import read_scenario
from gauged.cli import main
from gauged.config.load import load_config

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
CASES = sorted(p for p in GOLDEN.iterdir() if (p / "expected.jsonl").is_file())


def expected(case: Path) -> list[dict[str, Any]]:
    lines = (case / "expected.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_the_golden_cases_are_there() -> None:
    names = {c.name for c in CASES}
    assert {"furukawa_shin_hiroo_thresholds", "furukawa_shirokane_thresholds",
            "stage_skipped_in_one_cycle", "alm_2_oscillation_around_thresholds",
            "counter_rollover", "gauge_fault_mid_rise", "two_stations_one_zone"} <= names
    for case in CASES:
        assert (case / "config.toml").is_file(), case
        assert (case / "scenario.csv").is_file(), case


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden(case: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--config", str(case / "config.toml"), "--json",
                 str(case / "scenario.csv")]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    want = expected(case)
    assert printed == want
    config = load_config(case / "config.toml")
    assert list(replay_per_cycle(read_scenario(case / "scenario.csv", config), config)) == want


def test_alm_2_oscillation_changes_each_stage_once_and_sounds_one_siren() -> None:
    """ALM-2 read off the golden case: within the hour of ±5 cm around overflow (shin_hiroo)
    and around notice (shirokane), at most one stage change per station and one siren."""
    events = expected(GOLDEN / "alm_2_oscillation_around_thresholds")
    oscillating = [e for e in events if e["time"] > "2000-01-01T00:00:00+00:00"]
    for station in ("shin_hiroo", "shirokane"):
        changes = [e for e in oscillating if e["event"] == "stage" and e["station"] == station]
        assert len(changes) <= 1
    sirens = [e for e in events if e["event"] == "broadcast" and e["siren_s"] > 0]
    assert len(sirens) == 1
