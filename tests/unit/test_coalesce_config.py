"""Devices in the configuration: channels, relays and site inputs take their device's bus and
unit, in the daemon's models and in the simulators' reading of the same file."""

from __future__ import annotations

from pathlib import Path

import pytest

from gauged.config.load import load_config
from gauged.config.settings import Config
from gauged.errors import ConfigError
from simulators.config import load_config as load_simulated

ROOT = Path(__file__).resolve().parents[2]
IO_GATEWAY = """
[devices.io]
bus = "tcp"
unit = 9
model = "I/O gateway: inputs and relay coils at one unit id"

[zones.riverside]
amplifier_relay = { device = "io", coil = 0 }
player = "sink"

[players.sink]
kind = "sink"
port = 15040
"""


def config(tmp_path: Path, extra: str = IO_GATEWAY) -> Path:
    text = (ROOT / "tests" / "data" / "logger.toml").read_text(encoding="utf-8")
    text = text.replace("@TCP_PORT@", "15020").replace("@RTU_PATH@", "/dev/null") + extra
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_channels_relays_and_inputs_take_their_device_s_bus_and_unit(tmp_path: Path) -> None:
    path = config(tmp_path)
    c: Config = load_config(path)
    assert (c.gauges["rtu_rain"].bus, c.gauges["rtu_rain"].unit) == ("rs485", 5)
    relay = c.zones["riverside"].amplifier_relay
    assert relay is not None
    assert (relay.bus, relay.unit, relay.coil) == ("tcp", 9, 0)
    sim = load_simulated(path)
    assert (sim.gauges["tcp_level"].bus, sim.gauges["tcp_level"].unit) == ("tcp", 5)
    assert [(r.bus, r.unit, r.coil) for r in sim.relays] == [("tcp", 9, 0)]
    assert {(s.name, s.bus, s.unit) for s in sim.site_inputs if s.role == "battery_v"} == {
        ("tcp_battery", "tcp", 5), ("rtu_battery", "rs485", 5)}


def test_a_relay_on_a_channel_s_coil_is_refused(tmp_path: Path) -> None:
    clash = IO_GATEWAY + """
[site.inputs.io_door]
device = "io"
role = "door"
register = { kind = "coil", address = 0 }
"""
    with pytest.raises(ConfigError) as refused:
        load_config(config(tmp_path, clash))
    assert any("zone riverside: amplifier_relay: coil 0…0 of unit 9 on bus tcp overlaps "
               "site input io_door register" in p for p in refused.value.problems), \
        refused.value.problems
