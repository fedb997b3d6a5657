"""`gauged replay`: scenario parsing and the timeline it prints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gauged.alarm.scenario import (
    DEFAULT_START,
    _parse_careful,
    _parse_fast,
    padded,
    read_scenario,
)
from gauged.cli import main
from gauged.config.load import load_config

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "minato-furukawa.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_replay_json_timeline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A rise through every stage, then the gauge fails to 1.0 m (inside its range) for four
    readings and reads true again: the stage holds, the fault is reported and cleared, and
    nothing sounds twice (the daemon's quality rules run in replay)."""
    rows = ["time,station,quantity,value"]
    levels = [1.0, 1.7, 2.3, 2.9, 3.6, 4.2, 4.7, 4.7, 1.0, 1.0, 1.0, 1.0, 4.65]  # crest 4.60
    for i, level in enumerate(levels):
        rows.append(f"{i * 180},shin_hiroo,level_m,{level}")
    scenario = write(tmp_path, "\n".join(rows) + "\n")
    assert main(["replay", "--config", str(CONFIG), "--json", "--start",
                 "2026-07-01T09:00:00+09:00", str(scenario)]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    stages = [(e["time"], e["from"], e["to"]) for e in events if e["event"] == "stage"]
    assert stages == [
        ("2026-07-01T00:06:00+00:00", "normal", "watch"),
        ("2026-07-01T00:09:00+00:00", "watch", "notice"),
        ("2026-07-01T00:12:00+00:00", "notice", "warning"),
        ("2026-07-01T00:18:00+00:00", "warning", "overflow"),
    ]
    faults = [(e["time"], e["event"]) for e in events if e["event"].startswith("fault")]
    assert faults == [("2026-07-01T00:27:00+00:00", "fault"),
                      ("2026-07-01T00:36:00+00:00", "fault_cleared")]
    broadcasts = [e for e in events if e["event"] == "broadcast"]
    assert [(b["zone"], b["stage"], b["clips"], b["outcome"]) for b in broadcasts] == [
        ("furukawa_hiroo", "notice", ["furukawa_rising_ja", "furukawa_rising_en"], "done"),
        ("furukawa_hiroo", "warning", ["furukawa_warning_ja", "furukawa_warning_en"], "done"),
        ("furukawa_hiroo", "overflow", ["furukawa_overflow_ja", "furukawa_overflow_en"],
         "done"),
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


@pytest.mark.parametrize(("text", "message"), [
    ("time,station,quantity,value\n0,rain_ward_office,rain_mm,1\n180,rain_ward_office,"
     "rain_counter,5\n", ":3: station rain_ward_office mixes rain_mm and rain_counter rows"),
    ("time,station,quantity,value\n0,shin_hiroo,level_m,1\n0,shirokane,level_m,1\n"
     "0,shin_hiroo,level_m,2\n", ":4: a second row for station shin_hiroo at this time"),
    ("time,station,quantity,value\n0,shin_hiroo,level_m,1,2\n", ":2: expected 4 fields, got 5"),
    ("time,station,quantity,value\n0,shin_hiroo,level_m,high\n",
     ":2: value 'high' is not a number"),
    ("time,station,quantity,value\n2026-07-01T09:00:00,shin_hiroo,level_m,1\n",
     ":2: time '2026-07-01T09:00:00' has no UTC offset"),
])
def test_replay_refuses_a_bad_scenario_naming_the_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str) -> None:
    scenario = write(tmp_path, text)
    assert main(["replay", "--config", str(CONFIG), str(scenario)]) == 2
    assert f"{scenario}{message}" in capsys.readouterr().err


def test_replay_reads_raw_tip_counters(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    rows = ["time,station,quantity,value"]
    for i in range(25):  # 6 tips of 0.5 mm every 3 minutes: 60 mm/h, wrapping at 65536
        rows.append(f"{i * 180},rain_ward_office,rain_counter,{(65500 + 6 * i) % 65536}")
    scenario = write(tmp_path, "\n".join(rows) + "\n")
    assert main(["replay", "--config", str(CONFIG), "--json", str(scenario)]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["to"], e["value"]) for e in events if e["event"] == "stage"] == [
        ("watch", 27.0), ("notice", 30.0), ("warning", 51.0)]


AWKWARD = [
    # blank lines, spaces around fields, CRLF, quotes, no final newline, fractional and
    # negative seconds, ISO times with other offsets, "nan", exponents, a leading "+"
    "time,station,quantity,value\n\n0, shin_hiroo ,level_m, 1.5\n180,shin_hiroo,level_m,2\n",
    "time,station,quantity,value\r\n0,shin_hiroo,level_m,1.5\r\n180,shin_hiroo,level_m,2\r\n",
    'time,station,quantity,value\n"0","shin_hiroo","level_m","1.5"\n',
    "time,station,quantity,value\n0,shin_hiroo,level_m,1.5\n180,shin_hiroo,level_m,2",
    "time,station,quantity,value\n-180.25,shin_hiroo,level_m,1.5\n0.5,shin_hiroo,level_m,+2\n"
    "1e3,shin_hiroo,level_m,2.5e0\n1000.0000005,shin_hiroo,level_m,nan\n",
    "time,station,quantity,value\n2026-07-01T09:00:00+09:00,shin_hiroo,level_m,1.5\n"
    "2026-07-01T00:03:00+00:00,shin_hiroo,level_m,-0.000\n"
    "2026-07-01T00:03:00Z,shirokane,level_m,.5\n",
    "time,station,quantity,value\n0,rain_ward_office,rain_mm,\n0,shin_hiroo,level_m,\n"
    "180,rain_ward_office,rain_mm,0.1234567890123456789\n180,shin_hiroo,level_m,1.\n",
    # the rows of a cycle share a time text (read once): texts of 8 bytes and more, texts
    # that differ only in their last byte or only in their width, and one value in two texts
    "time,station,quantity,value\n18,shin_hiroo,level_m,1\n18,shirokane,level_m,2\n"
    "19,shin_hiroo,level_m,3\n180,shirokane,level_m,4\n00000180,shin_hiroo,level_m,5\n"
    "12345678,shin_hiroo,level_m,6\n12345678,shirokane,level_m,7\n"
    "123456789,shin_hiroo,level_m,8\n123456789,shirokane,level_m,9\n"
    "2026-07-01T09:00:00+09:00,shin_hiroo,level_m,1.5\n"
    "2026-07-01T09:00:00+09:00,shirokane,level_m,1.5\n",
]


@pytest.mark.parametrize("text", AWKWARD)
def test_the_fast_parser_reads_what_the_careful_one_reads(tmp_path: Path, text: str) -> None:
    path = tmp_path / "scenario.csv"
    path.write_bytes(text.encode())
    config = load_config(CONFIG)
    fast = read_scenario(path, config)
    careful = _parse_careful(text, path, config, DEFAULT_START)
    assert list(fast) == list(careful)
    assert np.array_equal(fast.value, careful.value, equal_nan=True)
    assert np.array_equal(np.signbit(fast.value), np.signbit(careful.value))


def test_the_fast_parser_reads_numbers_as_float_does() -> None:
    rng = np.random.default_rng(11)
    numbers = [f"{v:.{d}f}" for v, d in zip(rng.normal(0, 50, 3000).tolist(),
                                            rng.integers(0, 12, 3000).tolist(), strict=True)]
    numbers += ["0", "-0", "+7", "007.50", ".5", "5.", "123456789012345", "1234567890123456"]
    body = "".join(f"{i * 180},shin_hiroo,level_m,{n}\n" for i, n in enumerate(numbers))
    config = load_config(CONFIG)
    text = f"time,station,quantity,value\n{body}".encode()
    scenario = _parse_fast(padded(text), len(text), config, DEFAULT_START)
    assert scenario.value.tolist() == [float(n) for n in numbers]
