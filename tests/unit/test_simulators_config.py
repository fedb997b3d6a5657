"""The simulators' reading of a gauged configuration (the reference config is the contract)."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulators.clock import SimClock
from simulators.config import LineSpec, SerialSpec, load_config
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
        '[buses.can]\nkind = "canopen"\nport = "/dev/ttyUSB0"\n'
        '[gauges.g]\nbus = "can"\nunit = 1\nquantity = "level_m"\n'
        'register = { kind = "input", address = 0, data_type = "int16" }\n'
        '[players.alsa]\nkind = "aplay"\ndevice = "default"\n',
    )
    config = load_config(path)
    assert config.buses == {}
    assert config.gauges == {}
    assert config.players == {}
    assert len(config.skipped) == 3


def test_serial_buses_are_served_only_with_a_device_side_path(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '[buses.rtu]\nkind = "modbus_rtu"\nport = "/dev/ttyUSB0"\n'
        '[gauges.g]\nbus = "rtu"\nunit = 1\nquantity = "level_m"\n'
        'register = { kind = "input", address = 0, data_type = "int16" }\n',
    )
    config = load_config(path)
    assert config.buses["rtu"].serial == SerialSpec(port="/dev/ttyUSB0")
    assert config.gauges["g"].bus == "rtu"
    unserved = Fleet(path, None, SimClock())
    assert unserved.buses == {}
    assert any("--serial rtu=PATH" in note for note in unserved.notes)
    served = Fleet(path, None, SimClock(), serial_paths={"rtu": tmp_path / "device"})
    assert set(served.buses) == {"rtu"}
    with pytest.raises(ConfigError, match=r"--serial nowhere: no bus named 'nowhere'"):
        Fleet(path, None, SimClock(), serial_paths={"nowhere": "/x"})


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


RTU = '[buses.r]\nkind = "modbus_rtu"\nport = "/dev/ttyUSB0"\nbaudrate = 19200\n'
LINE = '[buses.l]\nkind = "serial_line"\nport = "/dev/ttyUSB1"\n'


def test_serial_buses_line_gauges_status_words_and_bit_registers(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        RTU.replace("19200", "9600") + 'parity = "E"\nstopbits = 2\nbytesize = 7\n'
        + LINE
        + '[gauges.a]\nbus = "r"\nunit = 1\nquantity = "level_m"\n'
        'register = { kind = "holding", address = 0, data_type = "float64", '
        'word_order = "little" }\n'
        'status = { kind = "holding", address = 4, data_type = "uint16", fault_mask = 3 }\n'
        '[gauges.b]\nbus = "r"\nunit = 1\nquantity = "rain_counter"\n'
        'register = { kind = "coil", address = 2, data_type = "bool" }\n'
        'status = { kind = "holding", address = 4, data_type = "uint16", fault_mask = 3 }\n'
        '[gauges.c]\nbus = "l"\nunit = 3\nquantity = "level_m"\n'
        'line = { scale = 0.01, offset = -1.0, command = "#03RD", pattern = "x", '
        'checksum = "sum8" }\n'
        '[gauges.d]\nbus = "l"\nunit = 0\nquantity = "rain_counter"\n',
    )
    config = load_config(path)
    assert config.buses["r"].serial == SerialSpec("/dev/ttyUSB0", 9600, "E", 2, 7)
    assert config.buses["r"].serial.bits_per_char == 11  # 1 + 7 + 1 + 2
    assert config.buses["l"].serial == SerialSpec("/dev/ttyUSB1")
    a, b = config.gauges["a"], config.gauges["b"]
    assert a.register == RegisterSpec("holding", 0, "float64", word_order="little")
    assert a.status == b.status == RegisterSpec("holding", 4, "uint16")
    assert b.register == RegisterSpec("coil", 2, "bool")
    assert config.gauges["c"].line == LineSpec(0.01, -1.0)
    assert config.gauges["c"].register is None
    assert config.gauges["d"].line == LineSpec()


def test_defaults_are_the_daemons(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '[buses.b]\nkind = "modbus_tcp"\nhost = "127.0.0.1"\n'
        '[gauges.g]\nbus = "b"\nunit = 1\nquantity = "level_m"\nregister = { address = 3 }\n'
        'status = { address = 9 }\n'
        '[gauges.h]\nbus = "b"\nunit = 2\nquantity = "level_m"\n'
        'register = { kind = "discrete", address = 0 }\n'
        '[players.p]\nkind = "sink"\nport = 15999\n',
    )
    config = load_config(path)
    assert config.buses["b"].port == 502
    assert config.gauges["g"].register == RegisterSpec("holding", 3, "uint16")
    assert config.gauges["g"].status == RegisterSpec("holding", 9, "uint16")
    assert config.gauges["h"].register == RegisterSpec("discrete", 0, "bool")
    assert config.players["p"].host == "127.0.0.1"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            RTU + '[gauges.g]\nbus = "r"\nunit = 1\nquantity = "level_m"\n'
            'register = { kind = "coil", address = 0, data_type = "int16" }\n',
            r"gauges\.g\.register\.data_type: a coil holds one bit",
        ),
        (
            RTU + '[gauges.g]\nbus = "r"\nunit = 1\nquantity = "level_m"\n'
            'register = { kind = "input", address = 0, data_type = "bool" }\n',
            r"gauges\.g\.register\.data_type: 'bool' needs kind 'coil' or 'discrete'",
        ),
        (
            RTU + '[gauges.g]\nbus = "r"\nunit = 1\nquantity = "level_m"\n'
            'register = { kind = "input", address = 0, data_type = "float64" }\n'
            'status = { kind = "input", address = 3, data_type = "uint16" }\n',
            r"gauges\.g\.status: input 3 of unit 1 on bus 'r' is also used by gauge 'g'",
        ),
        (
            RTU + '[gauges.g]\nbus = "r"\nunit = 1\nquantity = "level_m"\n'
            'register = { kind = "input", address = 0, data_type = "int16" }\n'
            'status = { kind = "input", address = 1, data_type = "uint16" }\n'
            '[gauges.h]\nbus = "r"\nunit = 1\nquantity = "level_m"\n'
            'register = { kind = "input", address = 2, data_type = "int16" }\n'
            'status = { kind = "input", address = 1, data_type = "int16" }\n',
            r"gauges\.h\.status: unit 1 on bus 'r' already has another status word",
        ),
        (
            RTU + '[gauges.g]\nbus = "r"\nunit = 1\nquantity = "level_m"\n'
            'register = { kind = "coil", address = 1, data_type = "bool" }\n'
            '[zones.z]\nsiren_relay = { bus = "r", unit = 1, coil = 1 }\n',
            r"zones\.z\.siren_relay: coil 1 of unit 1 is gauge 'g'",
        ),
        (
            LINE + '[gauges.g]\nbus = "l"\nunit = 3\nquantity = "level_m"\n'
            'register = { kind = "input", address = 0, data_type = "int16" }\n',
            r"gauges\.g\.register: bus 'l' is a serial_line bus: use line",
        ),
        (
            LINE + '[gauges.g]\nbus = "l"\nunit = 100\nquantity = "level_m"\n',
            r"gauges\.g\.unit: must be an integer in 0\.\.99, got 100",
        ),
        (
            LINE + '[gauges.g]\nbus = "l"\nunit = 3\nquantity = "level_m"\n'
            '[gauges.h]\nbus = "l"\nunit = 3\nquantity = "rain_counter"\n',
            r"gauges\.h\.unit: address 03 on bus 'l' is also used by gauge 'g'",
        ),
        (
            LINE + '[zones.z]\nsiren_relay = { bus = "l", unit = 1, coil = 0 }\n',
            r"zones\.z\.siren_relay\.bus: 'l' is a serial_line bus: no coils",
        ),
        (RTU + 'parity = "M"\n', r"buses\.r\.parity: must be one of N, E, O, got 'M'"),
        (RTU + "stopbits = 3\n", r"buses\.r\.stopbits: must be 1, 1\.5 or 2, got 3"),
        (RTU.replace("19200", "0"), r"buses\.r\.baudrate: must be an integer in 50\.\."),
        (RTU + "bytesize = 9\n", r"buses\.r\.bytesize: must be an integer in 5\.\.8"),
    ],
)
def test_serial_and_register_errors_name_file_and_field(
    tmp_path: Path, body: str, message: str
) -> None:
    path = _write(tmp_path, body)
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: ")
