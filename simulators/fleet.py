"""The fleet: every simulated device a gauged configuration talks to.

* Modbus TCP gateways — one listener per ``modbus_tcp`` bus, one simulated device per unit id
  (:mod:`simulators.tcp`);
* Modbus RTU lines — every device of a ``modbus_rtu`` bus on the device side of a pty pair
  (:mod:`simulators.rtu`), with line-time emulation;
* text-protocol line gauges — every gauge of a ``serial_line`` bus on a pty
  (:mod:`simulators.line`);
* relay boards — coils on the same kind of Modbus device; every coil write is recorded;
* audio sinks — see :mod:`simulators.sink`;
* serial MP3 modules — every ``dfplayer`` player on the device side of a pty pair
  (:mod:`simulators.dfplayer`), each track it plays recorded like a sink's clip;
* a control channel (``control_port``) to set fault knobs from another process
  (:mod:`simulators.control`).

Gauges answer the scenario value at that instant on the simulated clock. Serial buses are
served only when their device-side path is given (``serial_paths``, keyed by bus name, or by
player name for a ``dfplayer`` module); the daemon opens the other side of the pair. Fault
knobs (:mod:`simulators.faults`) are set per device at start
(``faults`` file) or at run time (:meth:`Fleet.set_fault`, the control channel).

Records are kept in :attr:`Fleet.relay_log` and :attr:`Fleet.audio_log` and, with a record
folder, appended to ``relays.jsonl`` and ``audio.jsonl`` there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from simulators.clock import SimClock
from simulators.config import BusSpec, FleetConfig, GaugeSpec, SiteInputSpec, load_config
from simulators.control import ControlServer
from simulators.devices import ModbusDevice
from simulators.dfplayer import DfPlayerSim, build_modules
from simulators.errors import ConfigError, FaultError
from simulators.faults import DeviceFaults, Transport, load_faults
from simulators.journal import Journal, Record
from simulators.line import LineBus, LineDevice
from simulators.rtu import RtuBus
from simulators.scenario import Quantity, Scenario, load_scenario
from simulators.serialbus import SerialBus
from simulators.sink import AudioSink
from simulators.tcp import TcpBus

log = logging.getLogger(__name__)

#: Seed of the fault knobs' random generators unless one is given.
DEFAULT_SEED = 0
#: The control channel listens here only.
CONTROL_HOST = "127.0.0.1"

_TRANSPORTS: dict[str, Transport] = {"modbus_tcp": "tcp", "modbus_rtu": "rtu",
                                     "serial_line": "line"}

Device = ModbusDevice | LineDevice


class Fleet:
    """All simulators of a gauged configuration; an async context manager.

    ``__aenter__`` binds every server (gauge and relay buses, audio sinks, control channel) and
    opens every served pty, raising :class:`SimulatorError` if one cannot; ``__aexit__`` closes
    them. A fleet is single-use: entering it twice is an error. Configuration, scenario, serial
    paths and the faults file are read and validated in the constructor, so a bad file fails
    before any socket is bound (:class:`ConfigError`).
    """

    def __init__(
        self,
        config_path: str | Path,
        scenario_path: str | Path | None,
        clock: SimClock,
        record_dir: str | Path | None = None,
        *,
        serial_paths: Mapping[str, str | Path] | None = None,
        faults: str | Path | None = None,
        seed: int = DEFAULT_SEED,
        control_port: int | None = None,
    ) -> None:
        self.config: FleetConfig = load_config(config_path)
        self.scenario: Scenario | None = (
            None if scenario_path is None else load_scenario(scenario_path)
        )
        self.clock = clock
        self.seed = seed
        self.control_port = control_port
        record = None if record_dir is None else Path(record_dir)
        self._relay_journal = Journal(None if record is None else record / "relays.jsonl")
        self._audio_journal = Journal(None if record is None else record / "audio.jsonl")
        #: Every coil write: t_sim, t_real, bus, unit, coil, value, previous, applied.
        self.relay_log: list[Record] = self._relay_journal.entries
        #: Every clip started: t_sim, t_real, zone, clip, duration_s, player, path (and a
        #: module's track and volume).
        self.audio_log: list[Record] = self._audio_journal.entries
        #: Device-side paths of the served serial buses and modules.
        self.serial_paths: dict[str, Path] = {}
        self.module_paths: dict[str, Path] = {}
        self._check_serial_paths(serial_paths or {})
        self._devices: dict[str, dict[int, Device]] = {}
        self._tcp: dict[str, TcpBus] = {}
        self._serial: dict[str, SerialBus] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._entered = False
        self._stack: AsyncExitStack | None = None
        self.notes: list[str] = list(self.config.skipped)
        if self.scenario is not None:
            self._check_scenario(self.scenario, str(scenario_path))
        self._build_devices()
        #: The served MP3 modules, by player name.
        self.modules: dict[str, DfPlayerSim] = build_modules(
            self.config, self.module_paths, clock, self._audio_journal, self.notes)
        if faults is not None:
            self._apply_faults_file(Path(faults))
        for note in self.notes:
            log.info("not simulated: %s", note)

    # -- construction --------------------------------------------------------------------------

    def _check_serial_paths(self, paths: Mapping[str, str | Path]) -> None:
        for bus, path in paths.items():
            spec = self.config.buses.get(bus)
            if bus in self.config.modules:
                if spec is not None:
                    raise ConfigError(
                        f"{self.config.path}: --serial {bus}: both a bus and a dfplayer player "
                        "are named so; rename one"
                    )
                self.module_paths[bus] = Path(path)
                continue
            if spec is None:
                raise ConfigError(
                    f"{self.config.path}: --serial {bus}: no bus named {bus!r} (nor a dfplayer "
                    "player)"
                )
            if not spec.is_serial:
                raise ConfigError(
                    f"{self.config.path}: --serial {bus}: bus {bus!r} is {spec.kind}, not a "
                    "serial bus"
                )
            self.serial_paths[bus] = Path(path)

    def _check_scenario(self, scenario: Scenario, name: str) -> None:
        # A scenario row for an unknown station is almost always a typo; fail before serving.
        expected: tuple[tuple[Quantity, str], ...] = (
            ("level_m", "level_m"),
            ("rain_mm", "rain_counter"),
        )
        for quantity, gauge_quantity in expected:
            for station in sorted(scenario.stations(quantity)):
                gauge = self.config.stations.get(station)
                # ``station:gauge`` rows drive one gauge of a station that reads two
                owner, _, named = station.partition(":")
                if gauge is None and owner in self.config.second_gauges and named in (
                    self.config.stations.get(owner),
                    self.config.second_gauges.get(owner, ""),
                ):
                    gauge = named
                if gauge is None:
                    raise ConfigError(f"{name}: station {station!r} is not in {self.config.path}")
                spec = self.config.gauges.get(gauge)
                if spec is not None and spec.quantity != gauge_quantity:
                    raise ConfigError(
                        f"{name}: station {station!r} has {quantity} rows but its gauge "
                        f"{gauge!r} measures {spec.quantity}"
                    )

    def _served(self, bus: BusSpec) -> bool:
        return not bus.is_serial or bus.name in self.serial_paths

    def _build_devices(self) -> None:
        gauges_at: dict[tuple[str, int], list[GaugeSpec]] = {}
        for gauge in self.config.gauges.values():
            gauges_at.setdefault((gauge.bus, gauge.unit), []).append(gauge)
        site_at: dict[tuple[str, int], list[SiteInputSpec]] = {}
        for inp in self.config.site_inputs:
            site_at.setdefault((inp.bus, inp.unit), []).append(inp)
        coils_at: dict[tuple[str, int], dict[int, str]] = {}
        for relay in self.config.relays:
            names = coils_at.setdefault((relay.bus, relay.unit), {})
            names[relay.coil] = f"{relay.zone}.{relay.role}"
        unserved: set[str] = set()
        for bus_name in self.serial_paths:
            self._devices[bus_name] = {}  # served even without devices: a silent line
        for bus_name, unit in sorted(gauges_at.keys() | coils_at.keys() | site_at.keys()):
            bus = self.config.buses[bus_name]
            if not self._served(bus):
                unserved.add(bus_name)
                continue
            faults = DeviceFaults(bus_name, unit, _TRANSPORTS[bus.kind], self.seed)
            gauges = gauges_at.get((bus_name, unit), [])
            device: Device
            if bus.kind == "serial_line":
                (gauge,) = gauges  # the config reader allows one gauge per address
                device = LineDevice(self, bus_name, gauge, faults)
            else:
                names = coils_at.get((bus_name, unit), {})
                device = ModbusDevice(self, bus_name, unit, gauges, names, faults,
                                      site_at.get((bus_name, unit), []),
                                      self.config.system_v)
            self._devices.setdefault(bus_name, {})[unit] = device
        for bus_name in sorted(unserved):
            self.notes.append(
                f"buses.{bus_name}: no device-side path given (--serial {bus_name}=PATH)"
            )

    def _apply_faults_file(self, path: Path) -> None:
        for entry in load_faults(path):
            try:
                self.set_fault(entry.bus, entry.unit, **entry.knobs)
            except FaultError as exc:
                raise ConfigError(f"{entry.where}: {exc}") from None

    # -- values --------------------------------------------------------------------------------

    def gauge_value(self, gauge: GaugeSpec) -> float:
        """Level (m) or cumulative rain (mm) of ``gauge`` now: the scenario at the clock's time.

        0.0 without a scenario or without rows for the gauge's station. A gauge of a station
        with two gauges plays its ``station:gauge`` rows, or the station's if it has none.
        """
        if self.scenario is None or gauge.station is None:
            return 0.0
        t = self.clock.elapsed()
        if gauge.quantity == "level_m":
            level = None
            if gauge.paired:  # its own rows first, then the station's
                level = self.scenario.level_at(f"{gauge.station}:{gauge.name}", t)
            if level is None:
                level = self.scenario.level_at(gauge.station, t)
            return 0.0 if level is None else level
        return self.scenario.rain_total_at(gauge.station, t)

    def record_relay(self, record: Record) -> None:
        """Keep one coil-write record (called by the relay boards)."""
        self._relay_journal.append(record)

    def coils(self, bus: str, unit: int) -> list[bool]:
        """Current coil states of ``unit`` on ``bus`` (a copy; coil 0 first)."""
        device = self._devices.get(bus, {}).get(unit)
        if not isinstance(device, ModbusDevice):
            raise KeyError(f"no simulated unit {unit} on bus {bus!r}")
        return list(device.coil_states)

    @property
    def buses(self) -> dict[str, BusSpec]:
        """The buses this fleet serves (TCP buses with devices, serial buses with a path)."""
        return {name: self.config.buses[name] for name in self._devices}

    # -- fault knobs ---------------------------------------------------------------------------

    def _select(self, bus: str | None, unit: int | None) -> list[Device]:
        if bus is None:
            if unit is not None:
                raise FaultError("a unit needs its bus")
            return [d for devices in self._devices.values() for d in devices.values()]
        devices = self._devices.get(bus)
        if devices is None:
            raise FaultError(
                f"no simulated bus {bus!r} (simulated: {', '.join(sorted(self._devices))})"
            )
        if unit is None:
            if not devices:
                raise FaultError(f"bus {bus!r} has no simulated devices")
            return list(devices.values())
        if unit not in devices:
            raise FaultError(
                f"no simulated device {unit} on bus {bus!r} "
                f"(units: {', '.join(str(u) for u in sorted(devices))})"
            )
        return [devices[unit]]

    def set_fault(self, bus: str, unit: int | None = None, **knobs: object) -> None:
        """Set fault knobs of device ``unit`` on ``bus`` (every device of the bus without one).

        Knobs given change, others stay; ``None``, ``False`` or 0 removes a knob (``None``
        only, for a ``*_rate``). Raises
        :class:`FaultError` (nothing changed) for an unknown device or knob or a bad value.
        See :mod:`simulators.faults` for the knobs.
        """
        module = self.modules.get(bus)
        if module is not None:
            if unit not in (None, 0):
                raise FaultError(f"player {bus!r} is one module: unit 0 or none, not {unit}")
            module.set_knobs(knobs)
            return
        devices = self._select(bus, unit)
        for device in devices:
            device.faults.update(knobs, device.values_now)
        self._faults_changed(bus)

    def clear_faults(self, bus: str | None = None, unit: int | None = None) -> None:
        """Remove every knob of one device, of one bus, or (no arguments) of the fleet.

        Counts are kept (see :meth:`fault_stats`).
        """
        if bus is None:
            for module in self.modules.values():
                module.faults.clear()
        elif bus in self.modules:
            self.modules[bus].set_knobs(dict.fromkeys(self.modules[bus].faults, False))
            return
        for device in self._select(bus, unit):
            device.faults.clear()
        self._faults_changed(bus)

    def _faults_changed(self, bus: str | None) -> None:
        for name, tcp in self._tcp.items():
            if bus is None or name == bus:
                tcp.faults_changed()

    def get_faults(self) -> dict[tuple[str, int], dict[str, object]]:
        """Knobs set now, per (bus, unit); devices without knobs are left out (a module is
        (player, 0))."""
        faults: dict[tuple[str, int], dict[str, object]] = {
            (bus, unit): dict(device.faults.knobs)
            for bus, devices in sorted(self._devices.items())
            for unit, device in sorted(devices.items())
            if device.faults.knobs
        }
        for name, module in sorted(self.modules.items()):
            if module.faults:
                faults[name, 0] = dict.fromkeys(sorted(module.faults), True)
        return faults

    def fault_stats(self) -> dict[tuple[str, int], dict[str, int]]:
        """Faults injected so far per (bus, unit) and knob; devices with none are left out (a
        module is (player, 0))."""
        stats = {
            (bus, unit): dict(sorted(device.faults.counts.items()))
            for bus, devices in sorted(self._devices.items())
            for unit, device in sorted(devices.items())
            if device.faults.counts
        }
        for name, module in sorted(self.modules.items()):
            if module.counts:
                stats[name, 0] = dict(sorted(module.counts.items()))
        return stats

    def faults_injected(
        self, bus: str | None = None, unit: int | None = None, kind: str | None = None
    ) -> int:
        """Total faults injected, optionally of one bus, one device and one knob."""
        return sum(
            count
            for (b, u), counts in self.fault_stats().items()
            if (bus is None or b == bus) and (unit is None or u == unit)
            for k, count in counts.items()
            if kind is None or k == kind
        )

    def request_counts(self) -> dict[tuple[str, int], int]:
        """Requests each device has received (answered or not)."""
        return {
            (bus, unit): device.faults.requests
            for bus, devices in sorted(self._devices.items())
            for unit, device in sorted(devices.items())
        }

    def stats(self) -> dict[str, Any]:
        """Everything counted, JSON-ready (the control channel's ``stats``)."""
        devices = [
            device.faults.snapshot()
            for _bus, units in sorted(self._devices.items())
            for _unit, device in sorted(units.items())
        ]
        buses: list[dict[str, Any]] = []
        for name in sorted(self._devices):
            transport = self._tcp.get(name) or self._serial.get(name)
            counts = dict(transport.stats) if transport is not None else {}
            buses.append({"bus": name, "kind": self.config.buses[name].kind, **counts})
        for name, module in sorted(self.modules.items()):
            devices.append(module.snapshot())
            buses.append({"bus": name, "kind": "dfplayer", "frames": module.frames_in,
                          "bad_frames": module.bad_frames})
        return {
            "total_faults": sum(sum(d["faults"].values()) for d in devices),
            "devices": devices,
            "buses": buses,
        }

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError("a Fleet is single-use and has already been entered")
        self._entered = True
        stack = AsyncExitStack()
        try:
            self._relay_journal.open()
            stack.callback(self._relay_journal.close)
            self._audio_journal.open()
            stack.callback(self._audio_journal.close)
            task_group = await stack.enter_async_context(asyncio.TaskGroup())
            # Runs before the task group waits for its tasks (exit callbacks run last first).
            stack.callback(self._cancel_tasks)
            for name, devices in self._devices.items():
                await self._start_bus(stack, task_group, self.config.buses[name], devices)
            for name, module in self.modules.items():
                module.start()
                stack.callback(module.close)
                self._spawn(task_group, module.serve(), f"simulators[player:{name}].serve")
                log.info("player %s: dfplayer module on %s, tracks %s", name, module.path,
                         ", ".join(str(n) for n in sorted(module.tracks)) or "none")
            for player in self.config.players.values():
                sink = AudioSink(
                    player, self.config.base_dir, self.clock, self._audio_journal, task_group
                )
                await sink.start()
                stack.push_async_callback(sink.close)
                log.info("player %s: audio sink on %s:%d", player.name, player.host, player.port)
            if self.control_port is not None:
                control = ControlServer(self, CONTROL_HOST, self.control_port, task_group)
                await control.start()
                stack.push_async_callback(control.close)
                log.info("control channel on %s:%d", CONTROL_HOST, self.control_port)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def _start_bus(
        self,
        stack: AsyncExitStack,
        group: asyncio.TaskGroup,
        bus: BusSpec,
        devices: dict[int, Device],
    ) -> None:
        units = ", ".join(str(unit) for unit in sorted(devices)) or "none"
        if bus.kind == "modbus_tcp":
            tcp = TcpBus(bus, _modbus(devices), group)
            await tcp.start()
            stack.push_async_callback(tcp.close)
            self._tcp[bus.name] = tcp
            self._spawn(group, tcp.run(), f"simulators[bus:{bus.name}].gateway")
            log.info("bus %s: Modbus TCP on %s:%d, units %s", bus.name, bus.host, bus.port, units)
            return
        path = self.serial_paths[bus.name]
        serial: SerialBus
        if bus.kind == "modbus_rtu":
            serial = RtuBus(bus, path, _modbus(devices), group)
        else:
            serial = LineBus(bus, path, {u: d for u, d in devices.items()
                                         if isinstance(d, LineDevice)}, group)
        serial.start()
        stack.callback(serial.close)
        self._serial[bus.name] = serial
        self._spawn(group, serial.run(), f"simulators[bus:{bus.name}].serve")
        assert bus.serial is not None
        log.info(
            "bus %s: %s on %s at %d baud (%g bits per character), units %s",
            bus.name,
            bus.kind,
            path,
            bus.serial.baudrate,
            bus.serial.bits_per_char,
            units,
        )

    def _spawn(
        self, group: asyncio.TaskGroup, coro: Coroutine[Any, Any, None], name: str
    ) -> None:
        self._tasks.append(group.create_task(coro, name=name))

    def _cancel_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        stack, self._stack = self._stack, None
        if stack is None:
            return None
        return await stack.__aexit__(exc_type, exc, tb)

    async def serve_forever(self) -> None:
        """Serve until cancelled (the servers run on their own once the fleet is entered)."""
        if self._stack is None:
            raise RuntimeError("enter the Fleet (async with) before serve_forever()")
        await asyncio.get_running_loop().create_future()

    def __repr__(self) -> str:
        return (f"Fleet({str(self.config.path)!r}, buses={sorted(self._devices)!r}, "
                f"modules={sorted(self.modules)!r})")


def _modbus(devices: dict[int, Device]) -> dict[int, ModbusDevice]:
    return {unit: d for unit, d in devices.items() if isinstance(d, ModbusDevice)}


__all__ = ["DEFAULT_SEED", "Fleet"]
