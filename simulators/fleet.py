"""The fleet: every simulated device a gauged configuration talks to, on real TCP sockets.

* gauge servers — one pymodbus ``ModbusTcpServer`` per Modbus TCP bus, one simulated device per
  unit id; each read is answered with the scenario value at that instant on the simulated clock;
* relay boards — coils on the same kind of device; every coil write is recorded;
* audio sinks — see :mod:`simulators.sink`.

Records are kept in :attr:`Fleet.relay_log` and :attr:`Fleet.audio_log` and, with a record
folder, appended to ``relays.jsonl`` and ``audio.jsonl`` there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import Self

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from simulators.clock import SimClock
from simulators.config import MIN_BLOCK, BusSpec, FleetConfig, GaugeSpec, load_config
from simulators.errors import ConfigError, SimulatorError
from simulators.journal import Journal, Record
from simulators.registers import encode_counter, encode_level
from simulators.scenario import Quantity, Scenario, load_scenario
from simulators.sink import AudioSink

log = logging.getLogger(__name__)

# Modbus function codes, by the block they address.
_READ_COILS, _WRITE_COIL, _WRITE_COILS = 1, 5, 15
_READ_HOLDING, _READ_INPUT = 3, 4
_REGISTER_WRITES = frozenset({6, 16, 22, 23})


def _bits_to_registers(bits: list[bool]) -> list[int]:
    # Coil n is bit (n % 16) of register n // 16, least significant bit first, which is how
    # pymodbus 3.16 stores non-shared bit blocks.
    registers = [0] * ((len(bits) + 15) // 16)
    for index, bit in enumerate(bits):
        if bit:
            registers[index // 16] |= 1 << (index % 16)
    return registers


def _round_up(count: int, step: int) -> int:
    return -(-count // step) * step


class _Unit:
    """One simulated Modbus device (unit id) on a bus: gauges in registers, relays in coils.

    pymodbus calls :meth:`on_request` before every access; this object is the single source of
    truth (the values it writes into pymodbus's register lists are what the client receives).
    """

    def __init__(
        self,
        fleet: Fleet,
        bus: str,
        unit: int,
        gauges: list[GaugeSpec],
        coil_count: int,
        register_count: int,
        relay_names: dict[int, str],
    ) -> None:
        self.fleet = fleet
        self.bus = bus
        self.unit = unit
        self.gauges = gauges
        self.coil_states = [False] * coil_count
        self.register_count = register_count
        self.relay_names = relay_names

    def sim_device(self) -> SimDevice:
        """The pymodbus device description (non-shared blocks: coils and registers apart)."""
        return SimDevice(
            id=self.unit,
            simdata=(
                [SimData(0, count=len(self.coil_states), values=False, datatype=DataType.BITS)],
                [SimData(0, count=16, values=False, datatype=DataType.BITS)],
                [SimData(0, count=self.register_count, datatype=DataType.REGISTERS)],
                [SimData(0, count=self.register_count, datatype=DataType.REGISTERS)],
            ),
            action=self.on_request,
        )

    async def on_request(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus action hook: refresh registers before a read, record coil writes."""
        if function_code in (_READ_HOLDING, _READ_INPUT):
            kind = "holding" if function_code == _READ_HOLDING else "input"
            for gauge in self.gauges:
                if gauge.register.kind == kind:
                    first = gauge.register.address - start_address
                    values = self.fleet.gauge_registers(gauge)
                    current_registers[first : first + len(values)] = values
            return None
        if function_code in _REGISTER_WRITES:
            return ExcCodes.ILLEGAL_FUNCTION  # gauges are sensors: nothing to write
        if function_code in (_WRITE_COIL, _WRITE_COILS) and set_values is not None:
            # For bit blocks pymodbus passes the bit address and the count of 16-bit registers
            # spanned, so the coils written are address .. address + len(set_values) - 1.
            for offset, value in enumerate(set_values):
                self._write_coil(address + offset, bool(value))
        if function_code in (_READ_COILS, _WRITE_COIL, _WRITE_COILS):
            # Make pymodbus's copy agree with ours before it answers (or applies the write).
            # Our coil blocks start at coil 0, so register 0 of the block holds coils 0..15.
            registers = _bits_to_registers(self.coil_states)
            current_registers[: len(registers)] = registers
        return None

    def _write_coil(self, coil: int, value: bool) -> None:
        previous = self.coil_states[coil]
        self.coil_states[coil] = value
        now = self.fleet.clock.now()
        self.fleet.record_relay(
            {
                "t_sim": now.isoformat(),
                "t_real": time.monotonic(),
                "bus": self.bus,
                "unit": self.unit,
                "coil": coil,
                "value": value,
                "previous": previous,
            }
        )
        label = self.relay_names.get(coil, "not referenced by any zone")
        if value != previous:
            log.info(
                "bus %s unit %d coil %d (%s): %s -> %s at %s",
                self.bus,
                self.unit,
                coil,
                label,
                "ON" if previous else "OFF",
                "ON" if value else "OFF",
                now.isoformat(timespec="seconds"),
            )
        else:
            log.debug(
                "bus %s unit %d coil %d (%s): rewritten %s",
                self.bus,
                self.unit,
                coil,
                label,
                "ON" if value else "OFF",
            )


class _NoSuchUnit:
    """Catch-all device (unit id 0 in pymodbus terms) for unit ids that are not configured.

    Without it pymodbus 3.16.1 answers exception 04 (device failure), which a daemon would read
    as a station fault; a real TCP gateway answers 0B (gateway target failed to respond).
    """

    async def on_request(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus action hook: refuse every request."""
        return ExcCodes.GATEWAY_NO_RESPONSE


class Fleet:
    """All simulators of a gauged configuration; an async context manager.

    ``__aenter__`` binds every server (gauge and relay buses, audio sinks) on the ports of the
    configuration and raises :class:`SimulatorError` if one cannot listen; ``__aexit__`` closes
    them. A fleet is single-use: entering it twice is an error. Configuration and scenario are
    read and validated in the constructor, so a bad file fails before any socket is bound.
    """

    def __init__(
        self,
        config_path: str | Path,
        scenario_path: str | Path | None,
        clock: SimClock,
        record_dir: str | Path | None = None,
    ) -> None:
        self.config: FleetConfig = load_config(config_path)
        self.scenario: Scenario | None = (
            None if scenario_path is None else load_scenario(scenario_path)
        )
        self.clock = clock
        record = None if record_dir is None else Path(record_dir)
        self._relay_journal = Journal(None if record is None else record / "relays.jsonl")
        self._audio_journal = Journal(None if record is None else record / "audio.jsonl")
        #: Every coil write: t_sim, t_real, bus, unit, coil, value, previous.
        self.relay_log: list[Record] = self._relay_journal.entries
        #: Every clip started: t_sim, t_real, zone, clip, duration_s, player, path.
        self.audio_log: list[Record] = self._audio_journal.entries
        self._units: dict[str, dict[int, _Unit]] = {}
        self._entered = False
        self._stack: AsyncExitStack | None = None
        if self.scenario is not None:
            self._check_scenario(self.scenario, str(scenario_path))
        self._build_units()
        for note in self.config.skipped:
            log.info("not simulated: %s", note)

    def _check_scenario(self, scenario: Scenario, name: str) -> None:
        # A scenario row for an unknown station is almost always a typo; fail before serving.
        expected: tuple[tuple[Quantity, str], ...] = (
            ("level_m", "level_m"),
            ("rain_mm", "rain_counter"),
        )
        for quantity, gauge_quantity in expected:
            for station in sorted(scenario.stations(quantity)):
                gauge = self.config.stations.get(station)
                if gauge is None:
                    raise ConfigError(f"{name}: station {station!r} is not in {self.config.path}")
                spec = self.config.gauges.get(gauge)
                if spec is not None and spec.quantity != gauge_quantity:
                    raise ConfigError(
                        f"{name}: station {station!r} has {quantity} rows but its gauge "
                        f"{gauge!r} measures {spec.quantity}"
                    )

    def _build_units(self) -> None:
        gauges_at: dict[tuple[str, int], list[GaugeSpec]] = {}
        for gauge in self.config.gauges.values():
            gauges_at.setdefault((gauge.bus, gauge.unit), []).append(gauge)
        coils_at: dict[tuple[str, int], dict[int, str]] = {}
        for relay in self.config.relays:
            names = coils_at.setdefault((relay.bus, relay.unit), {})
            names[relay.coil] = f"{relay.zone}.{relay.role}"
        for bus, unit in sorted(gauges_at.keys() | coils_at.keys()):
            gauges = gauges_at.get((bus, unit), [])
            names = coils_at.get((bus, unit), {})
            register_count = max(
                [MIN_BLOCK] + [g.register.address + g.register.count for g in gauges]
            )
            coil_count = _round_up(max([MIN_BLOCK] + [coil + 1 for coil in names]), 16)
            self._units.setdefault(bus, {})[unit] = _Unit(
                self, bus, unit, gauges, coil_count, register_count, names
            )

    # -- values -------------------------------------------------------------------------------

    def gauge_registers(self, gauge: GaugeSpec) -> list[int]:
        """The registers ``gauge`` presents now (scenario value at the clock's elapsed time)."""
        t = self.clock.elapsed()
        station = gauge.station
        if gauge.quantity == "level_m":
            level = None
            if self.scenario is not None and station is not None:
                level = self.scenario.level_at(station, t)
            return encode_level(0.0 if level is None else level, gauge.register)
        total = 0.0
        if self.scenario is not None and station is not None:
            total = self.scenario.rain_total_at(station, t)
        return encode_counter(total, gauge.register)

    def record_relay(self, record: Record) -> None:
        """Keep one coil-write record (called by the relay boards)."""
        self._relay_journal.append(record)

    def coils(self, bus: str, unit: int) -> list[bool]:
        """Current coil states of ``unit`` on ``bus`` (a copy; coil 0 first)."""
        try:
            return list(self._units[bus][unit].coil_states)
        except KeyError:
            raise KeyError(f"no simulated unit {unit} on bus {bus!r}") from None

    @property
    def buses(self) -> dict[str, BusSpec]:
        """The Modbus TCP buses this fleet serves (those carrying gauges or relays)."""
        return {name: self.config.buses[name] for name in self._units}

    # -- lifecycle ----------------------------------------------------------------------------

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
            for name, units in self._units.items():
                await self._start_bus(stack, self.config.buses[name], units)
            for player in self.config.players.values():
                sink = AudioSink(
                    player, self.config.base_dir, self.clock, self._audio_journal, task_group
                )
                await sink.start()
                stack.push_async_callback(sink.close)
                log.info("player %s: audio sink on %s:%d", player.name, player.host, player.port)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def _start_bus(
        self, stack: AsyncExitStack, bus: BusSpec, units: dict[int, _Unit]
    ) -> None:
        devices = [unit.sim_device() for unit in units.values()]
        size = max(unit.register_count for unit in units.values())
        devices.append(
            SimDevice(
                id=0,
                simdata=(
                    [SimData(0, count=16, values=False, datatype=DataType.BITS)],
                    [SimData(0, count=16, values=False, datatype=DataType.BITS)],
                    [SimData(0, count=size, datatype=DataType.REGISTERS)],
                    [SimData(0, count=size, datatype=DataType.REGISTERS)],
                ),
                action=_NoSuchUnit().on_request,
            )
        )
        server = ModbusTcpServer(context=devices, address=(bus.host, bus.port))
        try:
            # background=True returns once listening; the foreground variant would swallow
            # CancelledError (pymodbus 3.16.1 suppresses it in serve_forever).
            await server.serve_forever(background=True)
        except RuntimeError as exc:  # pymodbus logs the OSError and raises this instead
            raise SimulatorError(
                f"buses.{bus.name}: cannot listen on {bus.host}:{bus.port} (port in use?)"
            ) from exc
        stack.push_async_callback(server.shutdown)
        log.info(
            "bus %s: Modbus TCP on %s:%d, units %s",
            bus.name,
            bus.host,
            bus.port,
            ", ".join(str(unit) for unit in sorted(units)),
        )

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
        return f"Fleet({str(self.config.path)!r}, buses={sorted(self._units)!r})"


__all__ = ["Fleet"]
