"""Configuration: the reference config loads; broken configs are refused line by line."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gauged.cli import main
from gauged.config.load import load_config

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "config" / "minato-furukawa.toml"
BAD = sorted((ROOT / "tests" / "data" / "bad_configs").glob("*.toml"))


def expected_line(path: Path) -> str:
    match = re.search(r"^# expect: (.+)$", path.read_text(encoding="utf-8"), re.MULTILINE)
    assert match, f"{path} has no '# expect:' line"
    return match.group(1)


def test_reference_config_encodes_the_furukawa_system() -> None:
    config = load_config(REFERENCE)
    level = {sid: st for sid, st in config.stations.items() if st.kind == "level"}
    rain = {sid: st for sid, st in config.stations.items() if st.kind == "rain"}
    assert set(level) == {"shin_hiroo", "shirokane"}
    assert len(rain) == 9
    assert config.gateway.poll_interval_s == 180
    assert [s.threshold for s in level["shin_hiroo"].stages] == [2.58, 2.0, 1.0, 0.0]
    assert [s.threshold for s in level["shirokane"].stages] == [2.86, 2.0, 1.0, 0.0]
    for st in rain.values():
        assert [s.threshold for s in st.stages] == [25.0, 30.0, 50.0]
        assert [s.sequence for s in st.stages] == [None, None, "rain_warning"]
    overflow = config.sequences[level["shin_hiroo"].stages[3].sequence or ""]
    assert overflow.siren_s == 10
    texts = {c.text for c in config.clips.values()}
    assert "古川があふれる危険があります。避難の準備をしてください。" in texts
    assert "激しい雨が降っています。建物や地下室の浸水に厳重に注意してください" in texts
    assert config.defaults.level_margin_m == 0.10
    assert config.defaults.rain_margin_mm == 5.0
    assert config.defaults.clear_samples == 2


def test_check_config_accepts_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(REFERENCE)]) == 0
    out = capsys.readouterr().out
    assert "OK" in out
    assert "2 level and 9 rain stations" in out


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_check_config_refuses_a_broken_config(path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert any(line.startswith(f"{path}: ") and expected_line(path) in line for line in lines), \
        lines


def test_environment_overrides_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GAUGED_GATEWAY__POLL_INTERVAL_S", "60")
    monkeypatch.setenv("GAUGED_STATIONS__SHIN_HIROO__CREST_M", "4.75")
    monkeypatch.setenv("GAUGED_MQTT__PASSWORD", "s3cret-pw")
    config = load_config(REFERENCE)
    assert config.gateway.poll_interval_s == 60
    assert config.stations["shin_hiroo"].crest_m == 4.75
    assert config.stations["shin_hiroo"].gauge == "shin_hiroo_level"  # the rest stays
    assert config.mqtt.password.get_secret_value() == "s3cret-pw"
    assert "s3cret-pw" not in repr(config)


def test_sys_2_invalid_config_exits_2_naming_file_station_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(REFERENCE.read_text(encoding="utf-8").replace(
        'zones = ["furukawa_shirokane"]', 'zones = ["nowhere"]').replace(
        '{ name = "warning", threshold = 1.0, sequence = "level_warning" },\n'
        '    { name = "overflow", threshold = 0.0',
        '{ name = "warning", threshold = 1.0, sequence = "level_warning" },\n'
        '    { name = "overflow", threshold = 1.5', 1), encoding="utf-8")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "gauged", "run", "--config", str(bad)],
                          capture_output=True, text=True, timeout=30, cwd=ROOT)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert lines == [
        f"{bad}: station shin_hiroo: stages[3].threshold: 1.5 m must be below the previous "
        "stage's 1.0 m (freeboard shrinks as the river rises)",
        f"{bad}: station shirokane: zones: unknown zone 'nowhere'",
    ]  # one line per problem, nothing else
    assert "READY" not in proc.stdout + proc.stderr
    # The bar is 2 s; recorded rather than asserted tightly (tests never assert speed).
    print(f"sys_2 exit after {elapsed:.2f} s")


@pytest.mark.parametrize("path", sorted((ROOT / "config").glob("*.toml")),
                         ids=lambda p: p.stem)
def test_every_example_config_is_valid(path: Path) -> None:
    """The example configs are the reference documentation: they must load."""
    config = load_config(path)
    assert config.stations
    for gauge in config.gauges.values():
        assert (gauge.spec is None) != (gauge.line is None)  # one way of reading each gauge


def test_sec_1_secrets_never_printed_by_check_config(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A valid config's summary and a broken config's errors name the field, never the
    secret (pydantic keeps SecretStr values out of reprs; our error lines leave inputs out)."""
    ref = (ROOT / "config" / "minato-furukawa.toml").read_text(encoding="utf-8")
    ref = ref.replace('file = "clips/', f'file = "{ROOT}/config/clips/')
    good = ref.replace('token = ""', 'token = "tok-MARKER-influx"').replace(
        'password = ""', 'password = "pw-MARKER-mqtt"') + \
        '\n[commands]\nenabled = true\nsecret = "hmac-MARKER-commands-long"\n'
    bad = ref.replace('password = ""', 'password = ["pw-MARKER-in-a-list"]').replace(
        'port = 8080', 'port = "x-MARKER-port"')
    for name, text, code in (("good.toml", good, 0), ("bad.toml", bad, 2)):
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        assert main(["check-config", str(path)]) == code
        out = capsys.readouterr()
        assert "MARKER" not in out.out + out.err
    assert "mqtt: password: Input should be a valid string" in out.err
