"""The simulators' reading of a gauged configuration (the reference config is the contract)."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulators.clock import SimClock
from simulators.config import load_config
from simulators.errors import ConfigError
from simulators.fleet import Fleet
from simulators.registers import RegisterSpec

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "config" / "minato-furukawa.toml"


def test_reference_config() -> None:
    config = load_config(REFERENCE)
    assert set(config.buses) == {"river", "rain", "relays"}
    assert (config.buses["river"].host, config.buses["river"].port) == ("127.0.0.1", 15020)
    assert len(config.gauges) == 11
    shirokane = config.gauges["shirokane_level"]
    assert (shirokane.bus, shirokane.unit, shirokane.station) == ("river", 2, "shirokane")
    assert shirokane.register == RegisterSpec(
        kind="holding", address=10, data_type="int32", word_order="little", scale=0.001
    )
    placeholder_4 = config.gauges["rain_placeholder_4"]
    assert placeholder_4.quantity == "rain_counter"
    assert placeholder_4.register == RegisterSpec("input", 4, "uint32", scale=0.5)
    relays = {(r.zone, r.role): (r.bus, r.unit, r.coil) for r in config.relays}
    assert relays == {
        ("furukawa_hiroo", "siren_relay"): ("relays", 1, 0),
        ("furukawa_hiroo", "amplifier_relay"): ("relays", 1, 1),
        ("furukawa_shirokane", "siren_relay"): ("relays", 1, 2),
        ("furukawa_shirokane", "amplifier_relay"): ("relays", 1, 3),
        ("ward", "amplifier_relay"): ("relays", 1, 5),
    }
    speakers = config.players["speakers"]
    assert (speakers.host, speakers.port) == ("127.0.0.1", 15040)
    assert speakers.zones == ("furukawa_hiroo", "furukawa_shirokane", "ward")
    assert config.clock_speed == 1.0
    assert config.skipped == ()


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gauged.toml"
    path.write_text(text, encoding="utf-8")
    return path


BUS = '[buses.b]\nkind = "modbus_tcp"\nhost = "127.0.0.1"\nport = 15999\n'


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            '[gauges.g]\nbus = "nowhere"\nunit = 1\nquantity = "level_m"\n'
            'register = { kind = "input", address = 0, data_type = "int16" }\n',
            r"gauges\.g\.bus: no bus named 'nowhere'",
        ),
        (
            BUS + '[gauges.g]\nbus = "b"\nunit = 1\nquantity = "level_m"\n'
            'register = { kind = "input", address = 0, data_type = "int64" }\n',
            r"gauges\.g\.register\.data_type: must be one of",
        ),
        (
            BUS + '[gauges.g]\nbus = "b"\nunit = 1\nquantity = "level_m"\n'
            'register = { kind = "input", address = 0, data_type = "int32", word_order = "mid" }\n',
            r"gauges\.g\.register\.word_order: must be one of big, little, got 'mid'",
        ),
        (
            BUS + '[gauges.g]\nbus = "b"\nunit = 1\nquantity = "level_m"\n'
            'register = { kind = "input", address = 0, data_type = "int32" }\n'
            '[gauges.h]\nbus = "b"\nunit = 1\nquantity = "level_m"\n'
            'register = { kind = "input", address = 1, data_type = "int16" }\n',
            r"gauges\.h\.register: input register 1 of unit 1 on bus 'b' is also used by gauge 'g'",
        ),
        (
            BUS + '[gauges.g]\nbus = "b"\nunit = 300\nquantity = "level_m"\n'
            'register = { kind = "input", address = 0, data_type = "int16" }\n',
            r"gauges\.g\.unit: must be an integer in 1\.\.247, got 300",
        ),
        (
            BUS + '[stations.s]\ngauge = "missing"\n',
            r"stations\.s\.gauge: no gauge named 'missing'",
        ),
        (
            BUS + '[zones.z]\nsiren_relay = { bus = "b", unit = 1, coil = 0 }\n'
            'amplifier_relay = { bus = "b", unit = 1, coil = 0 }\n',
            r"zones\.z\.amplifier_relay: coil 0 of unit 1 is also zones\.z\.siren_relay",
        ),
        (
            BUS + '[players.p]\nkind = "sink"\nhost = "127.0.0.1"\nport = 15999\n',
            r"players\.p\.port: 127\.0\.0\.1:15999 is also used by buses\.b",
        ),
        ("[buses\n", "not valid TOML"),
    ],
)
def test_errors_name_file_and_field(tmp_path: Path, body: str, message: str) -> None:
    path = _write(tmp_path, body)
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: ")


def test_buses_and_players_that_cannot_be_simulated_are_skipped(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '[buses.rtu]\nkind = "modbus_rtu"\nport = "/dev/ttyUSB0"\n'
        '[gauges.g]\nbus = "rtu"\nunit = 1\nquantity = "level_m"\n'
        'register = { kind = "input", address = 0, data_type = "int16" }\n'
        '[players.alsa]\nkind = "aplay"\ndevice = "default"\n',
    )
    config = load_config(path)
    assert config.buses == {}
    assert config.gauges == {}
    assert config.players == {}
    assert len(config.skipped) == 3


def test_a_scenario_must_match_the_config(tmp_path: Path) -> None:
    # Checked when the fleet is built, before any socket is bound.
    typo = tmp_path / "typo.csv"
    typo.write_text("time,station,quantity,value\n0,shin_hiro,level_m,1.0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"station 'shin_hiro' is not in"):
        Fleet(REFERENCE, typo, SimClock())
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("time,station,quantity,value\n0,shin_hiroo,rain_mm,1.0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"'shin_hiroo' has rain_mm rows but its gauge"):
        Fleet(REFERENCE, wrong, SimClock())
    fleet = Fleet(REFERENCE, None, SimClock())
    assert set(fleet.buses) == {"river", "rain", "relays"}
    assert fleet.coils("relays", 1) == [False] * 64
    with pytest.raises(KeyError, match="no simulated unit 7"):
        fleet.coils("relays", 7)
