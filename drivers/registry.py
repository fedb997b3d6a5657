"""The one table of bus kinds: config model, hub class and gauge spec of each (STYLE 4).

A bus section of the configuration names its `kind`; `BusConfig` (drivers.configs) validates
it against the model of that kind, `make_hub` builds its hub, `make_gauge` builds a gauge on
a hub and `make_device` every channel of one unit id (drivers/device.py). Adding a kind
means adding its config model to drivers.configs (and to `BusConfig` there), a module with
its hub, and one row here.

    kind          config model          hub             gauge spec   gauge
    modbus_tcp    ModbusTcpBusConfig    ModbusTcpHub    RegisterSpec ModbusGauge
    modbus_rtu    ModbusRtuBusConfig    ModbusRtuHub    RegisterSpec ModbusGauge
    serial_line   SerialLineBusConfig   SerialLineHub   LineSpec     LineGauge
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from drivers.base import Gauge
from drivers.configs import (
    DeviceConfig,
    LineSpec,
    ModbusRtuBusConfig,
    ModbusTcpBusConfig,
    RegisterSpec,
    SerialLineBusConfig,
    StatusSpec,
)
from drivers.device import Channel, GaugeDevice, ModbusDevice
from drivers.line import LineGauge, SerialLineHub
from drivers.modbus import ModbusGauge, ModbusTcpHub
from drivers.rtu import ModbusRtuHub

AnyHub = ModbusTcpHub | ModbusRtuHub | SerialLineHub


@dataclass(frozen=True)
class BusKind:
    """One row of the table."""

    config: type[BaseModel]
    hub: type[Any]
    gauge_spec: type[BaseModel]
    """What a gauge on this kind of bus is configured with (`register` or `line`)."""


BUS_KINDS: dict[str, BusKind] = {
    "modbus_tcp": BusKind(ModbusTcpBusConfig, ModbusTcpHub, RegisterSpec),
    "modbus_rtu": BusKind(ModbusRtuBusConfig, ModbusRtuHub, RegisterSpec),
    "serial_line": BusKind(SerialLineBusConfig, SerialLineHub, LineSpec),
}


def make_hub(name: str, config: ModbusTcpBusConfig | ModbusRtuBusConfig
             | SerialLineBusConfig) -> AnyHub:
    """The hub of the bus `name` (not open yet: enter it with `async with`)."""
    kind = BUS_KINDS[config.kind]
    if not isinstance(config, kind.config):
        raise TypeError(f"bus {name}: kind {config.kind} needs {kind.config.__name__}")
    hub: AnyHub = kind.hub(name, config)
    return hub


def make_gauge(hub: AnyHub, unit: int, spec: RegisterSpec | LineSpec,
               status: StatusSpec | None = None) -> Gauge:
    """A gauge at `unit` on `hub`, read as `spec` says (with a status word for Modbus).

    Raises TypeError when the spec does not fit the kind of bus (a `line` gauge on a Modbus
    bus, a status word on a serial line): the configuration check should have said so.
    """
    if isinstance(hub, SerialLineHub):
        if not isinstance(spec, LineSpec) or status is not None:
            raise TypeError(f"bus {hub.name} is a serial_line bus: a gauge on it needs a "
                            f"`line` spec and no Modbus status")
        return LineGauge(hub, unit, spec)
    if not isinstance(spec, RegisterSpec):
        raise TypeError(f"bus {hub.name} is a Modbus bus: a gauge on it needs a `register`")
    return ModbusGauge(hub, unit, spec, status)


def make_device(hub: AnyHub, unit: int,
                channels: Mapping[str, tuple[RegisterSpec | LineSpec, StatusSpec | None]],
                device: DeviceConfig | None = None) -> ModbusDevice | GaugeDevice:
    """The device at `unit` on `hub` with its channels (key → value spec and status word),
    its reads planned as `device` says (defaults without one).

    A serial-line device has one channel (the configuration check says so).
    """
    name = f"{hub.name}:{unit}"
    if isinstance(hub, SerialLineHub):
        if len(channels) != 1:
            raise TypeError(f"bus {hub.name} unit {unit}: a serial_line gauge is one channel")
        (key, (spec, status)), = channels.items()
        return GaugeDevice(name, key, make_gauge(hub, unit, spec, status))
    out: dict[str, Channel] = {}
    for key, (spec, status) in channels.items():
        if not isinstance(spec, RegisterSpec):
            raise TypeError(f"bus {hub.name} is a Modbus bus: channel {key} needs a `register`")
        out[key] = Channel(spec, status)
    if device is None:
        return ModbusDevice(hub, unit, out, name=name)
    return ModbusDevice(hub, unit, out, max_gap=device.max_gap,
                        max_registers=device.max_registers, name=name)
