"""The part of a gauged configuration the simulators need, read with ``tomllib``.

The simulators deliberately do not import the daemon's config models: they read the same file
independently, so a misreading on either side shows up as a disagreement on the wire. Only what
is needed is read (buses, gauges, stations, zones, players, clock speed); everything else is
ignored. Problems raise :class:`ConfigError` naming the file and the field.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast

from simulators.errors import ConfigError
from simulators.registers import (
    BIT_KINDS,
    DATA_TYPES,
    ORDERS,
    REGISTER_KINDS,
    DataTypeName,
    Order,
    RegisterKind,
    RegisterSpec,
)

GaugeQuantity = Literal["level_m", "rain_counter"]
BusKind = Literal["modbus_tcp", "modbus_rtu", "serial_line"]
BUS_KINDS: tuple[BusKind, ...] = ("modbus_tcp", "modbus_rtu", "serial_line")
SERIAL_KINDS = frozenset({"modbus_rtu", "serial_line"})
Parity = Literal["N", "E", "O"]

#: Registers and coils every simulated device offers at least (addresses 0..63).
MIN_BLOCK = 64
#: Addresses a text-protocol line gauge can have (two decimal digits).
LINE_UNITS = (0, 99)


@dataclass(frozen=True, slots=True)
class SerialSpec:
    """The line settings of a serial bus (the same fields pyserial takes)."""

    port: str = ""  # the daemon's side of the line; the simulator gets its own path
    baudrate: int = 9600
    parity: Parity = "N"
    stopbits: float = 1
    bytesize: int = 8

    @property
    def bits_per_char(self) -> float:
        """Bits one character takes on the wire: start + data + parity + stop."""
        return 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits


@dataclass(frozen=True, slots=True)
class BusSpec:
    """A bus: a Modbus TCP endpoint the simulators listen on, or a serial line (pty)."""

    name: str
    host: str = ""
    port: int = 0
    kind: BusKind = "modbus_tcp"
    serial: SerialSpec | None = None

    @property
    def is_serial(self) -> bool:
        """True for ``modbus_rtu`` and ``serial_line`` buses (served on a pty)."""
        return self.kind in SERIAL_KINDS


@dataclass(frozen=True, slots=True)
class LineSpec:
    """How a text-protocol gauge presents its value: ``value = sent × scale + offset``.

    A ``rain_counter`` sends its cumulative tips (``scale`` mm each; ``offset`` unused), which
    wrap at ``2 ** bits``.
    """

    scale: float = 1.0
    offset: float = 0.0
    bits: int = 32


@dataclass(frozen=True, slots=True)
class GaugeSpec:
    """One gauge device: where it sits and how it presents its value."""

    name: str
    bus: str
    unit: int
    quantity: GaugeQuantity
    register: RegisterSpec | None  # None for a gauge on a serial_line bus
    station: str | None = None  # the station whose scenario rows drive this gauge
    # A gauge of a station with two gauges: ``station:gauge`` rows drive it, else the
    # station's rows (a second gauge without rows of its own reads the same as the first).
    paired: bool = False
    line: LineSpec | None = None  # set for (and only for) a gauge on a serial_line bus
    status: RegisterSpec | None = None  # the device status word, if the map has one


@dataclass(frozen=True, slots=True)
class SiteInputSpec:
    """A health input of the cabinet (``[site.inputs.NAME]``): a channel of a logger."""

    name: str
    bus: str
    unit: int
    role: str
    register: RegisterSpec


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
class ModuleSpec:
    """A serial MP3 module (a ``players`` entry of kind ``dfplayer``): its card's tracks.

    The card holds, for each track number, the clip mapped to it in ``tracks``; the simulator
    plays it for the length of the clip's WAV file (``clips.NAME.file``, relative to the
    config's folder), the recording the card is made from.
    """

    name: str
    port: str  # the daemon's side of the line; the simulator gets its own path
    tracks: dict[int, str] = field(default_factory=dict)  # track number → clip id
    clip_files: dict[str, Path] = field(default_factory=dict)  # clip id → its WAV file
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
    second_gauges: dict[str, str] = field(default_factory=dict)  # station → its second gauge
    clock_speed: float | None = None
    skipped: tuple[str, ...] = ()  # human-readable notes on what cannot be simulated here
    site_inputs: tuple[SiteInputSpec, ...] = ()
    system_v: int = 12  # the cabinet battery's nominal voltage
    modules: dict[str, ModuleSpec] = field(default_factory=dict)  # dfplayer players

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
        # (bus, unit, kind, address) → the gauge using it (kind "line" for line gauges) ...
        self.used: dict[tuple[str, int, str, int], str] = {}
        # ... and → (status word, first gauge naming it).
        self.status_at: dict[tuple[str, int, str, int], tuple[RegisterSpec, str]] = {}

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
        second = self.read_second_gauges(document)
        gauges = self.read_gauges(document, buses, stations, second)
        relays = self.read_relays(document, buses)
        site, system_v = self.read_site(document, buses)
        players = self.read_players(document)
        modules = self.read_modules(document)
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
            second_gauges=second,
            clock_speed=speed,
            skipped=tuple(self.skipped),
            site_inputs=tuple(site),
            system_v=system_v,
            modules=modules,
        )

    def read_buses(self, document: dict[str, Any]) -> dict[str, BusSpec]:
        buses: dict[str, BusSpec] = {}
        for name, entry in self.table(document, "buses", "buses").items():
            where = f"buses.{name}"
            kind = self.text(entry, "kind", where)
            if kind == "modbus_tcp":
                buses[name] = BusSpec(
                    name,
                    self.text(entry, "host", where),
                    self.integer({"port": 502} | entry, "port", where, 1, 65535),
                )
            elif kind in SERIAL_KINDS:
                buses[name] = BusSpec(
                    name, kind=cast(BusKind, kind), serial=self.read_serial(entry, where)
                )
            else:
                self.skipped.append(f"{where}: kind {kind!r} is not simulated")
        return buses

    def read_serial(self, entry: dict[str, Any], where: str) -> SerialSpec:
        port = entry.get("port", "")
        if not isinstance(port, str):
            raise self.fail(f"{where}.port", f"must be a device path, got {port!r}")
        stopbits = entry.get("stopbits", 1)
        if stopbits not in (1, 1.5, 2) or isinstance(stopbits, bool):
            raise self.fail(f"{where}.stopbits", f"must be 1, 1.5 or 2, got {stopbits!r}")
        return SerialSpec(
            port=port,
            baudrate=self.integer({"baudrate": 9600} | entry, "baudrate", where, 50, 4_000_000),
            parity=cast(Parity, self.choice(entry, "parity", where, ("N", "E", "O"), "N")),
            stopbits=float(stopbits),
            bytesize=self.integer({"bytesize": 8} | entry, "bytesize", where, 5, 8),
        )

    def read_stations(self, document: dict[str, Any]) -> dict[str, str]:
        stations: dict[str, str] = {}
        for name, entry in self.table(document, "stations", "stations").items():
            stations[name] = self.text(entry, "gauge", f"stations.{name}")
        return stations

    def read_second_gauges(self, document: dict[str, Any]) -> dict[str, str]:
        """Stations that read a second gauge (``second_gauge``): station → gauge."""
        second: dict[str, str] = {}
        for name, entry in self.table(document, "stations", "stations").items():
            if "second_gauge" in entry:
                second[name] = self.text(entry, "second_gauge", f"stations.{name}")
        return second

    def read_gauges(
        self,
        document: dict[str, Any],
        buses: dict[str, BusSpec],
        stations: dict[str, str],
        second: dict[str, str] | None = None,
    ) -> dict[str, GaugeSpec]:
        gauge_tables = self.table(document, "gauges", "gauges")
        reads = [(station, gauge, "gauge") for station, gauge in stations.items()]
        reads += [(station, gauge, "second_gauge") for station, gauge in (second or {}).items()]
        for station, gauge, key in reads:
            if gauge not in gauge_tables:
                raise self.fail(f"stations.{station}.{key}", f"no gauge named {gauge!r}")
        station_of: dict[str, str] = {}
        for station, gauge, key in reads:
            if gauge in station_of:
                raise self.fail(
                    f"stations.{station}.{key}",
                    f"gauge {gauge!r} is already read by station {station_of[gauge]!r}",
                )
            station_of[gauge] = station
        paired = {gauge for station, gauge, _ in reads if station in (second or {})}

        gauges: dict[str, GaugeSpec] = {}
        for name, entry in gauge_tables.items():
            where = f"gauges.{name}"
            entry = self.with_device(document, entry, where)
            bus = self.text(entry, "bus", where)
            if bus not in buses:
                if bus in self.table(document, "buses", "buses"):
                    self.skipped.append(f"{where}: on bus {bus!r}, which is not simulated")
                    continue
                raise self.fail(f"{where}.bus", f"no bus named {bus!r}")
            quantity = cast(
                GaugeQuantity,
                self.choice(entry, "quantity", where, ("level_m", "rain_counter"), ""),
            )
            if buses[bus].kind == "serial_line":
                gauges[name] = self.read_line_gauge(entry, where, name, bus, quantity)
            else:
                unit = self.integer(entry, "unit", where, 1, 247)
                register = self.read_register(entry.get("register"), f"{where}.register")
                self.claim(bus, unit, register, name, f"{where}.register")
                status = None
                if "status" in entry:
                    status = self.read_register(entry["status"], f"{where}.status", status=True)
                    self.claim_status(bus, unit, status, name, f"{where}.status")
                gauges[name] = GaugeSpec(name, bus, unit, quantity, register, status=status)
            gauges[name] = replace(
                gauges[name], station=station_of.get(name), paired=name in paired
            )
        return gauges

    def with_device(
        self, document: dict[str, Any], entry: dict[str, Any], where: str
    ) -> dict[str, Any]:
        """A channel naming ``device`` takes the bus and unit of ``[devices.NAME]``."""
        if "device" not in entry:
            return entry
        device = self.text(entry, "device", where)
        devices = self.table(document, "devices", "devices")
        if device not in devices:
            raise self.fail(f"{where}.device", f"no device named {device!r}")
        d = devices[device]
        return {
            "bus": self.text(d, "bus", f"devices.{device}"),
            "unit": self.integer(d, "unit", f"devices.{device}", 0, 247),
        } | entry

    def read_site(
        self, document: dict[str, Any], buses: dict[str, BusSpec]
    ) -> tuple[list[SiteInputSpec], int]:
        """The cabinet inputs of loggers (``[site.inputs.NAME]``, each naming its device)."""
        site = document.get("site", {})
        if not isinstance(site, dict):
            raise self.fail("site", "must be a table")
        system_v = self.integer({"system_v": 12} | site, "system_v", "site", 12, 24)
        out = []
        for name, entry in self.table(site, "inputs", "site.inputs").items():
            where = f"site.inputs.{name}"
            entry = self.with_device(document, {"device": entry.get("device")} | entry, where)
            bus = self.text(entry, "bus", where)
            if bus not in buses:
                self.skipped.append(f"{where}: on bus {bus!r}, which is not simulated")
                continue
            unit = self.integer(entry, "unit", where, 1, 247)
            register = self.read_register(entry.get("register"), f"{where}.register")
            self.claim(bus, unit, register, f"site:{name}", f"{where}.register")
            role = self.text(entry, "role", where)
            out.append(SiteInputSpec(name, bus, unit, role, register))
        return out, system_v

    def read_line_gauge(
        self, entry: dict[str, Any], where: str, name: str, bus: str, quantity: GaugeQuantity
    ) -> GaugeSpec:
        if "register" in entry:
            raise self.fail(
                f"{where}.register", f"bus {bus!r} is a serial_line bus: use line = {{...}}"
            )
        unit = self.integer(entry, "unit", where, *LINE_UNITS)
        key = (bus, unit, "line", 0)
        if key in self.used:
            raise self.fail(
                f"{where}.unit",
                f"address {unit:02d} on bus {bus!r} is also used by gauge {self.used[key]!r}",
            )
        self.used[key] = name
        line = entry.get("line", {})
        if not isinstance(line, dict):
            raise self.fail(f"{where}.line", "must be a table")
        scale = self.number(line, "scale", f"{where}.line", 1.0)
        if scale == 0.0:
            raise self.fail(f"{where}.line.scale", "must not be 0")
        # command, pattern and checksum configure the daemon's side: the simulator speaks one
        # fixed protocol (see simulators.line) and ignores them.
        spec = LineSpec(
            scale,
            self.number(line, "offset", f"{where}.line", 0.0),
            self.integer({"bits": 32} | line, "bits", f"{where}.line", 1, 64),
        )
        return GaugeSpec(name, bus, unit, quantity, None, line=spec)

    def claim(
        self, bus: str, unit: int, register: RegisterSpec, owner: str, where: str
    ) -> None:
        """Reserve the addresses ``register`` covers for gauge ``owner``."""
        word = "" if register.kind in BIT_KINDS else "register "
        for address in range(register.address, register.address + register.count):
            key = (bus, unit, register.kind, address)
            what = f"{register.kind} {word}{address} of unit {unit} on bus {bus!r}"
            if key in self.used:
                raise self.fail(where, f"{what} is also used by gauge {self.used[key]!r}")
            if key in self.status_at:
                raise self.fail(
                    where, f"{what} is also the status word of gauge {self.status_at[key][1]!r}"
                )
            self.used[key] = owner

    def claim_status(
        self, bus: str, unit: int, status: RegisterSpec, owner: str, where: str
    ) -> None:
        """Reserve a status word; gauges of one device may share an identical one."""
        for address in range(status.address, status.address + status.count):
            key = (bus, unit, status.kind, address)
            if key in self.used:
                raise self.fail(
                    where,
                    f"{status.kind} {address} of unit {unit} on bus {bus!r} is also used by "
                    f"gauge {self.used[key]!r}",
                )
            shared = self.status_at.get(key)
            if shared is not None and shared[0] != status:
                raise self.fail(
                    where, f"unit {unit} on bus {bus!r} already has another status word at "
                    f"{status.kind} {address} (gauge {shared[1]!r})"
                )
            self.status_at[key] = (status, owner)

    def read_register(self, register: object, where: str, status: bool = False) -> RegisterSpec:
        if not isinstance(register, dict):
            raise self.fail(where, "must be a table")
        scale = self.number(register, "scale", where, 1.0)
        if scale == 0.0:
            raise self.fail(f"{where}.scale", "must not be 0")
        if status and "fault_mask" in register:
            self.integer(register, "fault_mask", where, 0, (1 << 64) - 1)  # the daemon's field
        # The same defaults as the daemon's models: a holding register of type uint16, or one
        # bit when the kind is a coil or a discrete input.
        kind = cast(RegisterKind, self.choice(register, "kind", where, REGISTER_KINDS, "holding"))
        default_type = "bool" if kind in BIT_KINDS else "uint16"
        data_type = cast(
            DataTypeName,
            self.choice(register, "data_type", where, tuple(DATA_TYPES), default_type),
        )
        if (kind in BIT_KINDS) != (data_type == "bool"):
            raise self.fail(
                f"{where}.data_type",
                f"a {kind} holds one bit: data_type must be 'bool'"
                if kind in BIT_KINDS
                else f"'bool' needs kind 'coil' or 'discrete', not {kind!r}",
            )
        return RegisterSpec(
            kind=kind,
            address=self.integer(register, "address", where, 0, 65534),
            data_type=data_type,
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
                relay = self.with_device(document, relay, where)
                bus = self.text(relay, "bus", where)
                if bus not in buses:
                    if bus in all_buses:
                        self.skipped.append(f"{where}: on bus {bus!r}, which is not simulated")
                        continue
                    raise self.fail(f"{where}.bus", f"no bus named {bus!r}")
                if buses[bus].kind == "serial_line":
                    raise self.fail(f"{where}.bus", f"{bus!r} is a serial_line bus: no coils")
                unit = self.integer(relay, "unit", where, 1, 247)
                coil = self.integer(relay, "coil", where, 0, 65535)
                key = (bus, unit, coil)
                if key in used:
                    raise self.fail(where, f"coil {coil} of unit {unit} is also {used[key]}")
                if (bus, unit, "coil", coil) in self.used:
                    owner = self.used[bus, unit, "coil", coil]
                    raise self.fail(where, f"coil {coil} of unit {unit} is gauge {owner!r}")
                if (bus, unit, "coil", coil) in self.status_at:
                    owner = self.status_at[bus, unit, "coil", coil][1]
                    raise self.fail(
                        where, f"coil {coil} of unit {unit} is the status of gauge {owner!r}"
                    )
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
            if kind == "dfplayer":
                continue  # a serial module: read_modules
            if kind != "sink":
                self.skipped.append(f"{where}: kind {kind!r} plays real audio, not simulated")
                continue
            players[name] = PlayerSpec(
                name,
                self.text({"host": "127.0.0.1"} | entry, "host", where),
                self.integer(entry, "port", where, 1, 65535),
                tuple(zones_of.get(name, ())),
            )
        return players

    def read_modules(self, document: dict[str, Any]) -> dict[str, ModuleSpec]:
        """The ``dfplayer`` players: each one's track numbers and the clip files behind them."""
        zones_of: dict[str, list[str]] = {}
        for zone, entry in self.table(document, "zones", "zones").items():
            if isinstance(entry.get("player"), str):
                zones_of.setdefault(entry["player"], []).append(zone)
        clips = self.table(document, "clips", "clips")
        modules: dict[str, ModuleSpec] = {}
        for name, entry in self.table(document, "players", "players").items():
            where = f"players.{name}"
            if entry.get("kind") != "dfplayer":
                continue
            port = self.text(entry, "port", where)
            tracks = entry.get("tracks", {})
            if not isinstance(tracks, dict):
                raise self.fail(f"{where}.tracks", "must be a table { clip = track number }")
            card: dict[int, str] = {}
            files: dict[str, Path] = {}
            for clip in sorted(tracks):
                number = self.integer(tracks, clip, f"{where}.tracks", 1, 2999)
                if number in card:
                    raise self.fail(f"{where}.tracks.{clip}",
                                    f"track {number} is also clip {card[number]!r}")
                card[number] = clip
                if clip in clips and isinstance(clips[clip].get("file"), str):
                    files[clip] = self.path.parent / clips[clip]["file"]
            modules[name] = ModuleSpec(name, port, card, files, tuple(zones_of.get(name, ())))
        return modules

    def check_endpoints(self, buses: dict[str, BusSpec], players: dict[str, PlayerSpec]) -> None:
        seen: dict[tuple[str, int], str] = {}
        endpoints = [
            (f"buses.{b.name}", b.host, b.port) for b in buses.values() if not b.is_serial
        ]
        endpoints += [(f"players.{p.name}", p.host, p.port) for p in players.values()]
        for where, host, port in endpoints:
            if (host, port) in seen:
                raise self.fail(
                    f"{where}.port", f"{host}:{port} is also used by {seen[host, port]}"
                )
            seen[host, port] = where
