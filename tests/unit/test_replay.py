"""`gauged replay`: scenario parsing and the timeline it prints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gauged.cli import main

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "minato-furukawa.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_replay_json_timeline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = ["time,station,quantity,value"]
    levels = [1.0, 2.1, 2.7, 3.7, 4.7, 4.7, 1.0, 1.0]  # crest 4.60 at shin_hiroo
    for i, level in enumerate(levels):
        rows.append(f"{i * 180},shin_hiroo,level_m,{level}")
    scenario = write(tmp_path, "\n".join(rows) + "\n")
    assert main(["replay", "--config", str(CONFIG), "--json", "--start",
                 "2026-07-01T09:00:00+09:00", str(scenario)]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    stages = [(e["time"], e["from"], e["to"]) for e in events if e["event"] == "stage"]
    assert stages == [
        ("2026-07-01T00:03:00+00:00", "normal", "watch"),
        ("2026-07-01T00:06:00+00:00", "watch", "notice"),
        ("2026-07-01T00:09:00+00:00", "notice", "warning"),
        ("2026-07-01T00:12:00+00:00", "warning", "overflow"),
        ("2026-07-01T00:21:00+00:00", "overflow", "normal"),
    ]
    broadcasts = [e for e in events if e["event"] == "broadcast"]
    assert [(b["zone"], b["stage"], b["clips"]) for b in broadcasts] == [
        ("furukawa_hiroo", "notice", ["furukawa_rising_ja", "furukawa_rising_en"]),
        ("furukawa_hiroo", "warning", ["furukawa_warning_ja", "furukawa_warning_en"]),
        ("furukawa_hiroo", "overflow", ["furukawa_overflow_ja", "furukawa_overflow_en"]),
    ]
    assert broadcasts[-1]["siren_s"] == 10


def test_replay_accepts_iso_times_and_prints_text(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    rows = ["time,station,quantity,value"]
    for i in range(25):  # 3 mm every 3 minutes: 60 mm/h
        rows.append(f"2026-07-01T{10 + i * 3 // 60:02d}:{i * 3 % 60:02d}:00+09:00,"
                    f"rain_ward_office,rain_mm,3.0")
    scenario = write(tmp_path, "\n".join(rows) + "\n")
    assert main(["replay", "--config", str(CONFIG), str(scenario)]) == 0
    out = capsys.readouterr().out
    assert "rain_ward_office     rain  notice → warning" in out
    assert "broadcast on ward: heavy_rain_ja, heavy_rain_en" in out


@pytest.mark.parametrize(("text", "message"), [
    ("when,station,quantity,value\n", ":1: header must be time,station,quantity,value"),
    ("time,station,quantity,value\n0,nowhere,level_m,1\n", ":2: unknown station 'nowhere'"),
    ("time,station,quantity,value\n0,shin_hiroo,rain_mm,1\n",
     ":2: quantity 'rain_mm' does not fit level station shin_hiroo"),
    ("time,station,quantity,value\n180,shin_hiroo,level_m,1\n0,shin_hiroo,level_m,1\n",
     ":3: time goes backwards"),
    ("time,station,quantity,value\nnoon,shin_hiroo,level_m,1\n",
     ":2: time 'noon' is neither seconds nor ISO-8601"),
])
def test_replay_refuses_a_bad_scenario(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       text: str, message: str) -> None:
    scenario = write(tmp_path, text)
    assert main(["replay", "--config", str(CONFIG), str(scenario)]) == 2
    assert f"{scenario}{message}" in capsys.readouterr().err
