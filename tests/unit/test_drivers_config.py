"""Bus config models, the registry table, and reconnect backoff."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from drivers.backoff import Backoff
from drivers.configs import (
    BusConfig,
    LineSpec,
    ModbusRtuBusConfig,
    ModbusTcpBusConfig,
    RegisterSpec,
    SerialLineBusConfig,
    StatusSpec,
)
from drivers.errors import TransportError
from drivers.line import LineGauge, SerialLineHub
from drivers.modbus import ModbusGauge, ModbusTcpHub
from drivers.registry import BUS_KINDS, make_gauge, make_hub
from drivers.rtu import ModbusRtuHub

BUS = TypeAdapter(BusConfig)


def test_rtu_defaults_and_silence() -> None:
    c = ModbusRtuBusConfig(port="/dev/serial/by-id/usb-FTDI_FT232R-if00-port0")
    assert (c.baudrate, c.parity, c.stopbits, c.bytesize) == (9600, "N", 1, 8)
    assert (c.timeout_s, c.retries) == (0.5, 1)
    assert c.char_s == pytest.approx(10 / 9600)
    assert c.silence_s == pytest.approx(3.5 * 10 / 9600)  # 3.65 ms
    assert ModbusRtuBusConfig(port="p", parity="E").silence_s == pytest.approx(3.5 * 11 / 9600)
    assert ModbusRtuBusConfig(port="p", baudrate=115200).silence_s == 0.00175
    assert ModbusRtuBusConfig(port="p", inter_frame_s=0.01).silence_s == 0.01


@pytest.mark.parametrize(("fields", "message"), [
    ({"bytesize": 7}, "bytesize"),
    ({"parity": "M"}, "parity"),
    ({"stopbits": 3}, "stopbits"),
    ({"baudrate": 0}, "baudrate"),
    ({"timeout_s": 0}, "timeout_s"),
    ({"port": ""}, "port"),
    ({"host": "x"}, "host"),  # extra fields are refused
])
def test_bad_rtu_configs(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ModbusRtuBusConfig.model_validate({"port": "/dev/ttyUSB0", **fields})


def test_tcp_defaults() -> None:
    c = ModbusTcpBusConfig(host="127.0.0.1")
    assert (c.port, c.timeout_s, c.retries, c.inter_request_s) == (502, 1.0, 0, 0.0)


def test_line_bus_accepts_seven_bits() -> None:
    c = SerialLineBusConfig(port="/dev/ttyS0", bytesize=7, parity="E")
    assert c.char_s == pytest.approx(10 / 9600)


def test_bus_config_is_chosen_by_kind() -> None:
    assert isinstance(BUS.validate_python({"kind": "modbus_tcp", "host": "h"}),
                      ModbusTcpBusConfig)
    assert isinstance(BUS.validate_python({"kind": "modbus_rtu", "port": "/dev/x"}),
                      ModbusRtuBusConfig)
    assert isinstance(BUS.validate_python({"kind": "serial_line", "port": "/dev/x"}),
                      SerialLineBusConfig)
    with pytest.raises(ValidationError, match="modbus_tcp"):
        BUS.validate_python({"kind": "can_bus", "port": "x"})
    with pytest.raises(ValidationError, match="host"):
        BUS.validate_python({"kind": "modbus_rtu", "port": "/dev/x", "host": "h"})


def test_the_table_names_every_kind() -> None:
    assert set(BUS_KINDS) == {"modbus_tcp", "modbus_rtu", "serial_line"}
    for kind, row in BUS_KINDS.items():
        assert row.config.model_fields["kind"].default == kind


async def test_make_hub_and_gauge() -> None:
    tcp = make_hub("gw", ModbusTcpBusConfig(host="127.0.0.1"))
    rtu = make_hub("rs485", ModbusRtuBusConfig(port="/dev/null-port"))
    line = make_hub("line", SerialLineBusConfig(port="/dev/null-port"))
    assert isinstance(tcp, ModbusTcpHub)
    assert isinstance(rtu, ModbusRtuHub)
    assert isinstance(line, SerialLineHub)
    status = StatusSpec(address=4, fault_mask=0xFF)
    assert isinstance(make_gauge(tcp, 1, RegisterSpec(address=0), status), ModbusGauge)
    assert isinstance(make_gauge(rtu, 1, RegisterSpec(address=0)), ModbusGauge)
    assert isinstance(make_gauge(line, 3, LineSpec()), LineGauge)
    with pytest.raises(TypeError, match="needs a `register`"):
        make_gauge(rtu, 1, LineSpec())
    with pytest.raises(TypeError, match="needs a `line`"):
        make_gauge(line, 1, RegisterSpec(address=0))
    with pytest.raises(TypeError, match="no Modbus status"):
        make_gauge(line, 1, LineSpec(), status)


async def test_hubs_refuse_reentry_and_calls_after_close() -> None:
    hubs: list[ModbusTcpHub | ModbusRtuHub] = [
        ModbusTcpHub("gw", ModbusTcpBusConfig(host="127.0.0.1")),
        ModbusRtuHub("rs485", ModbusRtuBusConfig(port="/nonexistent/port"))]
    for hub in hubs:
        async with hub:
            with pytest.raises(RuntimeError, match="already open"):
                await hub.__aenter__()
        with pytest.raises(TransportError, match="closed"):
            await hub.read_registers(1, "holding", 0, 1)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    clock = FakeClock()
    draws = iter([0.0, 1.0, 0.5, 1.0, 1.0, 0.0, 1.0])
    b = Backoff(4.0, first_s=0.5, clock=clock, rng=lambda: next(draws))
    assert b.remaining() == 0
    delays = [b.failed() for _ in range(6)]
    # steps 0.5, 1, 2, 4, 4, 4; each delay in [½, 1] × step
    assert delays == [0.25, 1.0, 1.5, 4.0, 4.0, 2.0]
    assert b.remaining() == 2.0
    clock.now += 2.0
    assert b.remaining() == 0
    b.succeeded()
    assert b.failures == 0
    assert b.failed() == 0.5  # from the first step again


def test_backoff_jitter_spreads_gateways() -> None:
    delays = {Backoff(60.0).failed() for _ in range(20)}
    assert len(delays) > 1
    assert all(0.25 <= d <= 0.5 for d in delays)


def test_backoff_cap_below_the_first_step() -> None:
    b = Backoff(0.2, rng=lambda: 1.0)
    assert [b.failed() for _ in range(3)] == [0.2, 0.2, 0.2]


async def test_rtu_broadcast_unit_is_refused_as_a_transport_error() -> None:
    async with ModbusRtuHub("rs485", ModbusRtuBusConfig(port="/nonexistent/port")) as hub:
        with pytest.raises(TransportError, match="broadcast"):
            await hub.write_coil(0, 1, True)
