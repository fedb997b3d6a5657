"""The part of a gauged configuration the simulators need, read with ``tomllib``.

The simulators deliberately do not import the daemon's config models: they read the same file
independently, so a misreading on either side shows up as a disagreement on the wire. Only what
is needed is read (buses, gauges, stations, zones, players, clock speed); everything else is
ignored. Problems raise :class:`ConfigError` naming the file and the field.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from simulators.errors import ConfigError
from simulators.registers import DATA_TYPES, ORDERS, DataTypeName, Order, RegisterSpec

GaugeQuantity = Literal["level_m", "rain_counter"]

#: Registers and coils every simulated device offers at least (addresses 0..63).
MIN_BLOCK = 64


@dataclass(frozen=True, slots=True)
class BusSpec:
    """A Modbus TCP endpoint the simulators listen on."""

    name: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class GaugeSpec:
    """One gauge device: where it sits and how it presents its value."""

    name: str
    bus: str
    unit: int
    quantity: GaugeQuantity
    register: RegisterSpec
    station: str | None = None  # the station whose scenario rows drive this gauge


@dataclass(frozen=True, slots=True)
class RelaySpec:
    """One relay (a coil) that a zone drives."""

    zone: str
    role: str  # "siren_relay" or "amplifier_relay"
    bus: str
    unit: int
    coil: int


@dataclass(frozen=True, slots=True)
class PlayerSpec:
    """An audio sink (a ``players`` entry of kind ``sink``)."""

    name: str
    host: str
    port: int
    zones: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """Everything the fleet serves, validated."""

    path: Path
    buses: dict[str, BusSpec] = field(default_factory=dict)
    gauges: dict[str, GaugeSpec] = field(default_factory=dict)
    relays: tuple[RelaySpec, ...] = ()
    players: dict[str, PlayerSpec] = field(default_factory=dict)
    stations: dict[str, str] = field(default_factory=dict)  # station → gauge
    clock_speed: float | None = None
    skipped: tuple[str, ...] = ()  # human-readable notes on what cannot be simulated here

    @property
    def base_dir(self) -> Path:
        """The config file's folder, against which clip paths are resolved."""
        return self.path.parent


def load_config(path: str | Path) -> FleetConfig:
    """Read ``path`` and return what the simulators serve; raise :class:`ConfigError`."""
    path = Path(path)
    try:
        with path.open("rb") as stream:
            document = tomllib.load(stream)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return _Reader(path).read(document)


class _Reader:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.skipped: list[str] = []

    def fail(self, where: str, message: str) -> ConfigError:
        return ConfigError(f"{self.path}: {where}: {message}")

    def table(self, parent: dict[str, Any], key: str, where: str) -> dict[str, dict[str, Any]]:
        value = parent.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(where, "must be a table")
        for name, entry in value.items():
            if not isinstance(entry, dict):
                raise self.fail(f"{where}.{name}", "must be a table")
        return cast(dict[str, dict[str, Any]], value)

    def text(self, entry: dict[str, Any], key: str, where: str) -> str:
        value = entry.get(key)
        if not isinstance(value, str) or not value:
            raise self.fail(f"{where}.{key}", f"must be a non-empty string, got {value!r}")
        return value

    def integer(self, entry: dict[str, Any], key: str, where: str, low: int, high: int) -> int:
        value = entry.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(f"{where}.{key}", f"must be an integer in {low}..{high}, got {value!r}")
        return value

    def number(self, entry: dict[str, Any], key: str, where: str, default: float) -> float:
        value = entry.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(f"{where}.{key}", f"must be a number, got {value!r}")
        return float(value)

    def choice(
        self, entry: dict[str, Any], key: str, where: str, options: tuple[str, ...], default: str
    ) -> str:
        value = entry.get(key, default)
        if value not in options:
            raise self.fail(f"{where}.{key}", f"must be one of {', '.join(options)}, got {value!r}")
        return cast(str, value)

    def read(self, document: dict[str, Any]) -> FleetConfig:
        buses = self.read_buses(document)
        stations = self.read_stations(document)
        gauges = self.read_gauges(document, buses, stations)
        relays = self.read_relays(document, buses)
        players = self.read_players(document)
        clock = document.get("clock", {})
        speed = None
        if isinstance(clock, dict) and "speed" in clock:
            speed = self.number(clock, "speed", "clock", 1.0)
            if speed <= 0:
                raise self.fail("clock.speed", f"must be > 0, got {speed}")
        self.check_endpoints(buses, players)
        return FleetConfig(
            path=self.path,
            buses=buses,
            gauges=gauges,
            relays=tuple(relays),
            players=players,
            stations=stations,
            clock_speed=speed,
            skipped=tuple(self.skipped),
        )

    def read_buses(self, document: dict[str, Any]) -> dict[str, BusSpec]:
        buses: dict[str, BusSpec] = {}
        for name, entry in self.table(document, "buses", "buses").items():
            where = f"buses.{name}"
            kind = self.text(entry, "kind", where)
            if kind != "modbus_tcp":
                # RTU and serial-line buses need pty pairs, not a TCP listener.
                self.skipped.append(f"{where}: kind {kind!r} is not simulated over TCP")
                continue
            buses[name] = BusSpec(
                name,
                self.text(entry, "host", where),
                self.integer(entry, "port", where, 1, 65535),
            )
        return buses

    def read_stations(self, document: dict[str, Any]) -> dict[str, str]:
        stations: dict[str, str] = {}
        for name, entry in self.table(document, "stations", "stations").items():
            stations[name] = self.text(entry, "gauge", f"stations.{name}")
        return stations

    def read_gauges(
        self, document: dict[str, Any], buses: dict[str, BusSpec], stations: dict[str, str]
    ) -> dict[str, GaugeSpec]:
        gauge_tables = self.table(document, "gauges", "gauges")
        for station, gauge in stations.items():
            if gauge not in gauge_tables:
                raise self.fail(f"stations.{station}.gauge", f"no gauge named {gauge!r}")
        station_of: dict[str, str] = {}
        for station, gauge in stations.items():
            if gauge in station_of:
                raise self.fail(
                    f"stations.{station}.gauge",
                    f"gauge {gauge!r} is already read by station {station_of[gauge]!r}",
                )
            station_of[gauge] = station

        gauges: dict[str, GaugeSpec] = {}
        used: dict[tuple[str, int, str, int], str] = {}  # (bus, unit, kind, register) → gauge
        for name, entry in gauge_tables.items():
            where = f"gauges.{name}"
            bus = self.text(entry, "bus", where)
            if bus not in buses:
                if bus in self.table(document, "buses", "buses"):
                    self.skipped.append(f"{where}: on bus {bus!r}, which is not simulated")
                    continue
                raise self.fail(f"{where}.bus", f"no bus named {bus!r}")
            unit = self.integer(entry, "unit", where, 1, 247)
            quantity = self.choice(entry, "quantity", where, ("level_m", "rain_counter"), "")
            register = self.read_register(entry, where)
            for address in range(register.address, register.address + register.count):
                key = (bus, unit, register.kind, address)
                if key in used:
                    raise self.fail(
                        f"{where}.register",
                        f"{register.kind} register {address} of unit {unit} on bus {bus!r} "
                        f"is also used by gauge {used[key]!r}",
                    )
                used[key] = name
            gauges[name] = GaugeSpec(
                name=name,
                bus=bus,
                unit=unit,
                quantity=cast(GaugeQuantity, quantity),
                register=register,
                station=station_of.get(name),
            )
        return gauges

    def read_register(self, entry: dict[str, Any], where: str) -> RegisterSpec:
        register = entry.get("register")
        where = f"{where}.register"
        if not isinstance(register, dict):
            raise self.fail(where, "must be a table")
        scale = self.number(register, "scale", where, 1.0)
        if scale == 0.0:
            raise self.fail(f"{where}.scale", "must not be 0")
        return RegisterSpec(
            kind=cast(
                Literal["holding", "input"],
                self.choice(register, "kind", where, ("holding", "input"), ""),
            ),
            address=self.integer(register, "address", where, 0, 65534),
            data_type=cast(
                DataTypeName, self.choice(register, "data_type", where, tuple(DATA_TYPES), "")
            ),
            byte_order=cast(Order, self.choice(register, "byte_order", where, ORDERS, "big")),
            word_order=cast(Order, self.choice(register, "word_order", where, ORDERS, "big")),
            scale=scale,
            offset=self.number(register, "offset", where, 0.0),
        )

    def read_relays(self, document: dict[str, Any], buses: dict[str, BusSpec]) -> list[RelaySpec]:
        relays: list[RelaySpec] = []
        used: dict[tuple[str, int, int], str] = {}
        all_buses = self.table(document, "buses", "buses")
        for zone, entry in self.table(document, "zones", "zones").items():
            for role in ("siren_relay", "amplifier_relay"):
                if role not in entry:
                    continue
                where = f"zones.{zone}.{role}"
                relay = entry[role]
                if not isinstance(relay, dict):
                    raise self.fail(where, "must be a table {bus, unit, coil}")
                bus = self.text(relay, "bus", where)
                if bus not in buses:
                    if bus in all_buses:
                        self.skipped.append(f"{where}: on bus {bus!r}, which is not simulated")
                        continue
                    raise self.fail(f"{where}.bus", f"no bus named {bus!r}")
                unit = self.integer(relay, "unit", where, 1, 247)
                coil = self.integer(relay, "coil", where, 0, 65535)
                key = (bus, unit, coil)
                if key in used:
                    raise self.fail(where, f"coil {coil} of unit {unit} is also {used[key]}")
                used[key] = where
                relays.append(RelaySpec(zone, role, bus, unit, coil))
        return relays

    def read_players(self, document: dict[str, Any]) -> dict[str, PlayerSpec]:
        zones_of: dict[str, list[str]] = {}
        for zone, entry in self.table(document, "zones", "zones").items():
            if isinstance(entry.get("player"), str):
                zones_of.setdefault(entry["player"], []).append(zone)
        players: dict[str, PlayerSpec] = {}
        for name, entry in self.table(document, "players", "players").items():
            where = f"players.{name}"
            kind = self.text(entry, "kind", where)
            if kind != "sink":
                self.skipped.append(f"{where}: kind {kind!r} plays real audio, not simulated")
                continue
            players[name] = PlayerSpec(
                name,
                self.text(entry, "host", where),
                self.integer(entry, "port", where, 1, 65535),
                tuple(zones_of.get(name, ())),
            )
        return players

    def check_endpoints(self, buses: dict[str, BusSpec], players: dict[str, PlayerSpec]) -> None:
        seen: dict[tuple[str, int], str] = {}
        endpoints = [(f"buses.{b.name}", b.host, b.port) for b in buses.values()]
        endpoints += [(f"players.{p.name}", p.host, p.port) for p in players.values()]
        for where, host, port in endpoints:
            if (host, port) in seen:
                raise self.fail(
                    f"{where}.port", f"{host}:{port} is also used by {seen[host, port]}"
                )
            seen[host, port] = where
