"""MB-6: decoding conformance of the pinned pymodbus and of the daemon's drivers.

Everything here runs against the bundled simulators (an in-process `Fleet` on loopback and a
socat pty pair, with an injected clock), which implement Modbus without pymodbus. What is
pinned:

1. pymodbus's `AsyncModbusTcpClient` returns exactly the registers the simulator encodes for
   the scenario value, for int16/uint16/int32/uint32/float32/float64 in every byte order ×
   word order, holding and input registers, with scale and offset; `drivers.registers`
   decodes them to the scenario value; pymodbus's own `convert_from_registers` /
   `convert_to_registers` agree (they know word order only: little byte order is swapped
   here first). Expected registers are computed in this file with `struct`, independently of
   `drivers/registers.py` and `simulators/registers.py`.
2. Coil and discrete-input bit order (pymodbus flipped coil bit order in 3.10 and back in
   3.11): coils written through pymodbus land on the simulator's coils at the same addresses
   (its state and its relay journal), and reads of ranges not aligned to 8 or 16 agree.
3. Exception answers: pymodbus's raw response (`isError()`, `exception_code`), and their
   mapping through the daemon's hubs (`ModbusTcpHub`, `ModbusRtuHub`): 01–04 → DeviceError
   with the code, 06 → bounded retry then DeviceError(6), 0A → TransportError, 0B →
   DeviceTimeout.
4. The same decoding matrix through the daemon's own RTU framing (`ModbusRtuHub` +
   `ModbusGauge`) on a pty.

The pymodbus pin in pyproject.toml cannot move without this file passing (`pytest -k mb_6`).
"""

from __future__ import annotations

import contextlib
import math
import struct
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pymodbus
import pytest
from pymodbus.client import AsyncModbusTcpClient
from services import PtyPair, PtyPairFactory, free_port

from drivers.configs import ModbusRtuBusConfig, ModbusTcpBusConfig, RegisterSpec
from drivers.errors import DeviceError, DeviceTimeout, DriverError, TransportError
from drivers.modbus import ModbusGauge, ModbusTcpHub
from drivers.registers import decode_registers
from drivers.rtu import ModbusRtuHub
from simulators.clock import SimClock
from simulators.errors import SimulatorError
from simulators.fleet import Fleet

Order = Literal["big", "little"]
Kind = Literal["holding", "input"]

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 7, 1, tzinfo=UTC)
STEP_S = 180  # scenario rows at 0, 180, 360 s: the three instants every gauge is read at
INSTANTS = (0, 1, 2)
RTU_BAUD = 38400

# struct format (big endian) and register count: written here, not imported.
FORMATS: dict[str, tuple[str, int]] = {
    "int16": (">h", 1), "uint16": (">H", 1), "int32": (">i", 2), "uint32": (">I", 2),
    "float32": (">f", 2), "float64": (">d", 4),
}
TYPES = tuple(FORMATS)
ORDERS: tuple[tuple[Order, Order], ...] = (
    ("big", "big"), ("big", "little"), ("little", "big"), ("little", "little"))
KINDS: tuple[Kind, ...] = ("holding", "input")
# Every gauge has a scale and an offset: value = raw × scale + offset.
SCALE_OFFSET: dict[str, tuple[float, float]] = {
    "int16": (0.001, 0.5), "uint16": (0.01, -100.0), "int32": (0.0001, 10.0),
    "uint32": (0.001, -5.0), "float32": (0.5, -1.25), "float64": (2.0, 100.0),
}
# Integer raws at instants 0 and 1 (gauge k of a type adds k × STEP); every byte differs, so
# that each byte order and word order gives other registers. Instant 2: the ends of the range.
INT_RAWS: dict[str, tuple[int, int, int]] = {
    "int16": (-1234, 0x6A5C, 0x0101),
    "uint16": (54321, 0x1F2E, 0x0101),
    "int32": (-123456789, 0x12345678, 0x01010101),
    "uint32": (0xDEADBEEF, 0x01020304, 0x01010101),
}
INT_ENDS: dict[str, tuple[int, int]] = {
    "int16": (-(1 << 15), (1 << 15) - 1), "uint16": (0, (1 << 16) - 1),
    "int32": (-(1 << 31), (1 << 31) - 1), "uint32": (0, (1 << 32) - 1),
}


def float_levels(data_type: str, k: int) -> tuple[float, float, float]:
    """Scenario values of float gauge k of a type at the three instants."""
    if data_type == "float32":
        return (12.3456 + 1.1111 * k, -3.14159 - 0.5 * k, 1.291 + k)
    return (1234.56789012345 + 11.1111 * k, -0.000123456789 * (k + 1), 1.0e10 + 0.1 * k)


def registers_of(raw: float, data_type: str, byte_order: Order, word_order: Order) -> list[int]:
    """Registers (lowest address first) a device sends for `raw`, by `struct` alone."""
    fmt, _count = FORMATS[data_type]
    data = struct.pack(fmt, int(raw) if data_type[0] in "iu" else raw)
    words = [data[i:i + 2] for i in range(0, len(data), 2)]  # most significant first
    if word_order == "little":
        words.reverse()
    return [int.from_bytes(w, byte_order) for w in words]


def swap_bytes(registers: list[int]) -> list[int]:
    return [((r & 0xFF) << 8) | (r >> 8) for r in registers]


@dataclass(frozen=True)
class Case:
    """One gauge of the matrix on one bus."""

    bus: str
    data_type: str
    byte_order: Order
    word_order: Order
    kind: Kind
    unit: int
    address: int
    levels: tuple[float, float, float]  # the scenario value at each instant

    @property
    def name(self) -> str:
        return (f"{self.bus}_{self.data_type}_{self.byte_order[0]}{self.word_order[0]}"
                f"_{self.kind}")

    @property
    def count(self) -> int:
        return FORMATS[self.data_type][1]

    @property
    def scale(self) -> float:
        return SCALE_OFFSET[self.data_type][0]

    @property
    def offset(self) -> float:
        return SCALE_OFFSET[self.data_type][1]

    def raw(self, instant: int) -> int | float:
        """What the device sends at `instant`: (value − offset) / scale in its data type."""
        quotient = (self.levels[instant] - self.offset) / self.scale
        if self.data_type == "float32":
            return float(struct.unpack(">f", struct.pack(">f", quotient))[0])
        if self.data_type == "float64":
            return quotient
        return round(quotient)

    def registers(self, instant: int) -> list[int]:
        return registers_of(self.raw(instant), self.data_type, self.byte_order,
                            self.word_order)

    def is_raw(self, value: float, instant: int) -> bool:
        """Whether `value` is the raw number of `instant` (float32: to 7 significant digits,
        which is what the daemon keeps; integers: exactly, and still integers)."""
        raw = self.raw(instant)
        if self.data_type == "float32":
            return abs(value - raw) <= abs(raw) * 1e-6
        return value == raw and type(value) is type(raw)

    def tolerance(self, instant: int) -> float:
        """How far the decoded value may be from the scenario value."""
        if self.data_type == "float32":  # float32 carries 7 significant digits of the raw
            return abs(self.scale * self.raw(instant)) * 1e-6 + 1e-12
        return abs(self.levels[instant]) * 1e-12 + 1e-12

    def spec(self) -> RegisterSpec:
        return RegisterSpec(kind=self.kind, address=self.address, data_type=self.data_type,
                            byte_order=self.byte_order, word_order=self.word_order,
                            scale=self.scale, offset=self.offset)


def build_cases(bus: str) -> list[Case]:
    """Every type × byte order × word order × register kind; unit 1 + type index.

    Holding values start at address 1 and input values at 2, one unused register between
    neighbours, so that an address or kind mix-up reads another gauge's words.
    """
    cases = []
    for t, data_type in enumerate(TYPES):
        count = FORMATS[data_type][1]
        for o, (byte_order, word_order) in enumerate(ORDERS):
            for i, kind in enumerate(KINDS):
                k = 2 * o + i
                if data_type in INT_RAWS:
                    first, second, step = INT_RAWS[data_type]
                    scale, offset = SCALE_OFFSET[data_type]
                    raws = (first + k * step, second + k * step, INT_ENDS[data_type][k % 2])
                    levels = tuple(r * scale + offset for r in raws)
                else:
                    levels = float_levels(data_type, k)
                assert len(levels) == 3
                cases.append(Case(bus, data_type, byte_order, word_order, kind, 1 + t,
                                  1 + i + o * (count + 1), (levels[0], levels[1], levels[2])))
    return cases


TCP_CASES = build_cases("tcp")
RTU_CASES = build_cases("rs485")
MATRIX = [(t, b, w) for t in TYPES for b, w in ORDERS]
MATRIX_IDS = [f"{t}-byte_{b}-word_{w}" for t, b, w in MATRIX]

RELAY_UNIT = 100  # a relay board: coils 0..63 writable
DISCRETE_UNIT = 101  # discrete-input gauges at 0..26 with this pattern
DISCRETE = (1, 1, 0, 1, 0, 0, 0, 0, 1, 0, 1, 1, 1, 0, 0, 1, 0, 0, 0, 0, 1, 1, 0, 1, 0, 1, 1)
COIL_SPACE = 64
# Coils written with one write_coils at 3 (19 bits: not aligned to a byte at either end).
COIL_PATTERN = (True, False, False, False, False, False, True, True,
                False, True, False, True, True, False, False, True, True, True, False)
# Then single writes, some over the pattern.
COIL_SINGLES = ((30, True), (5, True), (9, False), (47, True), (63, True), (21, True))
# Ranges read back: (first, count), none aligned to 8 or 16 at both ends.
BIT_RANGES = ((0, 64), (3, 19), (0, 1), (5, 3), (7, 10), (13, 29), (21, 1), (47, 1), (50, 14),
              (61, 3), (1, 62), (9, 23))


def cases_of(cases: list[Case], data_type: str, byte_order: str, word_order: str) -> list[Case]:
    return [c for c in cases if (c.data_type, c.byte_order, c.word_order)
            == (data_type, byte_order, word_order)]


# -- the rig: simulators from a generated config, the clock injected -------------------------

def _inline(fields: dict[str, Any]) -> str:
    return "{ " + ", ".join(f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {v!r}"
                            for k, v in fields.items()) + " }"


def write_config(folder: Path, tcp_port: int) -> tuple[Path, Path]:
    """The simulators' config and scenario for both buses; returns their paths."""
    lines = [
        "[buses.tcp]", 'kind = "modbus_tcp"', 'host = "127.0.0.1"', f"port = {tcp_port}", "",
        "[buses.rs485]", 'kind = "modbus_rtu"', 'port = ""', f"baudrate = {RTU_BAUD}", "",
    ]
    rows = ["time,station,quantity,value"]
    timeline: list[list[str]] = [[] for _ in INSTANTS]

    def gauge(name: str, bus: str, unit: int, register: dict[str, Any],
              levels: tuple[float, ...]) -> None:
        lines.extend([f"[gauges.{name}]", f'bus = "{bus}"', f"unit = {unit}",
                      'quantity = "level_m"', f"register = {_inline(register)}", "",
                      f"[stations.s_{name}]", f'gauge = "{name}"', ""])
        for instant, level in enumerate(levels):
            timeline[instant].append(f"{instant * STEP_S},s_{name},level_m,{level!r}")

    for case in TCP_CASES + RTU_CASES:
        gauge(case.name, case.bus, case.unit, {
            "kind": case.kind, "address": case.address, "data_type": case.data_type,
            "byte_order": case.byte_order, "word_order": case.word_order,
            "scale": case.scale, "offset": case.offset}, case.levels)
    for bus in ("tcp", "rs485"):
        for address, bit in enumerate(DISCRETE):
            gauge(f"{bus}_di_{address}", bus, DISCRETE_UNIT,
                  {"kind": "discrete", "address": address}, (float(bit),))
        lines.extend([f"[zones.z_{bus}]",
                      f"siren_relay = {_inline({'bus': bus, 'unit': RELAY_UNIT, 'coil': 0})}",
                      f"amplifier_relay = {_inline({'bus': bus, 'unit': RELAY_UNIT, 'coil': 1})}",
                      ""])
    config = folder / "mb6.toml"
    config.write_text("\n".join(lines), encoding="utf-8")
    scenario = folder / "mb6.csv"
    scenario.write_text("\n".join(rows + [r for rs in timeline for r in rs]) + "\n",
                        encoding="utf-8")
    return config, scenario


@dataclass
class Rig:
    fleet: Fleet
    tcp_port: int
    now: list[float]
    pty: PtyPair | None

    def at(self, instant: int) -> None:
        """Move the simulators' clock to the scenario row of `instant`."""
        self.now[0] = T0.timestamp() + instant * STEP_S

    def requests(self, bus: str, unit: int) -> int:
        return self.fleet.request_counts()[bus, unit]


@contextlib.asynccontextmanager
async def simulators(tmp_path: Path, pty: PtyPair | None = None) -> AsyncIterator[Rig]:
    """The fleet on a free loopback port (and the RTU bus on `pty`'s device side)."""
    now = [T0.timestamp()]
    clock = SimClock(1.0, T0, T0.timestamp(), wall_time=lambda: now[0])
    paths = {} if pty is None else {"rs485": str(pty.device)}
    async with contextlib.AsyncExitStack() as stack:
        for attempt in range(5):  # free_port() is racy: another port if that one was taken
            port = free_port()
            config, scenario = write_config(tmp_path, port)
            try:
                fleet = await stack.enter_async_context(
                    Fleet(config, scenario, clock, serial_paths=paths))
            except SimulatorError:
                if attempt == 4:
                    raise
                continue
            break
        yield Rig(fleet, port, now, pty)


@contextlib.asynccontextmanager
async def pymodbus_client(rig: Rig) -> AsyncIterator[AsyncModbusTcpClient]:
    client = AsyncModbusTcpClient("127.0.0.1", port=rig.tcp_port, timeout=1.0, retries=0)
    assert await client.connect()
    try:
        yield client
    finally:
        client.close()


def tcp_hub(rig: Rig, retries: int = 0) -> ModbusTcpHub:
    return ModbusTcpHub("tcp", ModbusTcpBusConfig(
        host="127.0.0.1", port=rig.tcp_port, timeout_s=0.5, retries=retries,
        reconnect_max_s=0.5))


def rtu_hub(rig: Rig, retries: int = 1) -> ModbusRtuHub:
    assert rig.pty is not None
    return ModbusRtuHub("rs485", ModbusRtuBusConfig(
        port=str(rig.pty.gateway), baudrate=RTU_BAUD, timeout_s=0.5, retries=retries,
        reconnect_max_s=0.5))


@pytest.fixture
def rs485(pty_pair: PtyPairFactory) -> PtyPair:
    return pty_pair("rs485")


# -- the suite runs against the pinned pymodbus ------------------------------------------------

def test_mb_6_runs_against_the_pinned_pymodbus() -> None:
    """The installed pymodbus is the one pyproject.toml pins exactly (a stale virtualenv or a
    loosened pin would make every other result here say nothing about the pin)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    pins = [d for d in project["project"]["dependencies"] if d.startswith("pymodbus")]
    assert pins == [f"pymodbus=={pymodbus.__version__}"], (pins, pymodbus.__version__)


# -- the matrix is able to tell every order apart ---------------------------------------------

def test_mb_6_the_matrix_tells_every_order_apart() -> None:
    """Guard on the test data: a decoder that ignored or swapped an order must fail.

    At instants 0 and 1 every combination of byte and word order gives other registers (for
    16-bit types word order means nothing: byte orders differ), integer raws are exact
    (no rounding hides a wrong scale) and within their type, and all gauges differ.
    """
    for case in TCP_CASES:
        for instant in (0, 1):
            layouts = {tuple(registers_of(case.raw(instant), case.data_type, b, w))
                       for b, w in ORDERS}
            assert len(layouts) == (2 if case.count == 1 else 4), (case.name, instant)
    for case in TCP_CASES:
        for instant in INSTANTS:
            quotient = (case.levels[instant] - case.offset) / case.scale
            if case.data_type in INT_ENDS:
                low, high = INT_ENDS[case.data_type]
                assert abs(quotient - round(quotient)) < 1e-6, (case.name, instant)
                assert low <= round(quotient) <= high, (case.name, instant)
            else:
                assert math.isfinite(quotient)
    for instant in (0, 1):
        raws = [(c.unit, c.raw(instant)) for c in TCP_CASES]
        assert len(set(raws)) == len(raws)
    assert len(TCP_CASES) == len(TYPES) * len(ORDERS) * len(KINDS) == 48


# -- 1. raw pymodbus against the simulator ------------------------------------------------------

@pytest.mark.parametrize(("data_type", "byte_order", "word_order"), MATRIX, ids=MATRIX_IDS)
async def test_mb_6_pymodbus_reads_the_registers_the_simulator_encodes(
        tmp_path: Path, data_type: str, byte_order: Order, word_order: Order) -> None:
    cases = cases_of(TCP_CASES, data_type, byte_order, word_order)
    assert len(cases) == 2
    dtype = AsyncModbusTcpClient.DATATYPE[data_type.upper()]
    async with simulators(tmp_path) as rig, pymodbus_client(rig) as client, \
            tcp_hub(rig) as hub:
        for instant in INSTANTS:
            rig.at(instant)
            for case in cases:
                where = (case.name, instant)
                expected = case.registers(instant)
                read = (client.read_holding_registers if case.kind == "holding"
                        else client.read_input_registers)
                response = await read(case.address, count=case.count, device_id=case.unit)
                assert not response.isError(), where
                assert response.registers == expected, where
                assert response.dev_id == case.unit
                level = case.levels[instant]
                assert abs(decode_registers(response.registers, case.spec()) - level) \
                    <= case.tolerance(instant), where
                # pymodbus's own conversion knows word order only: big byte order as is,
                # little byte order after swapping the bytes of each register.
                words = response.registers if byte_order == "big" \
                    else swap_bytes(response.registers)
                converted = AsyncModbusTcpClient.convert_from_registers(
                    words, dtype, word_order=word_order)
                assert converted == case.raw(instant), where
                assert type(converted) is type(case.raw(instant)), where
                assert AsyncModbusTcpClient.convert_to_registers(
                    case.raw(instant), dtype, word_order=word_order) == words, where
                # And the daemon's whole path through pymodbus: hub, gauge, decoder.
                value = (await ModbusGauge(hub, case.unit, case.spec()).read()).value
                assert case.is_raw(value, instant), (where, value)


async def test_mb_6_one_block_read_puts_every_value_at_its_address(tmp_path: Path) -> None:
    """A whole unit's map in one request: each value where the config says, zeros between."""
    async with simulators(tmp_path) as rig, pymodbus_client(rig) as client:
        for instant in (0, 1):
            rig.at(instant)
            for unit in range(1, len(TYPES) + 1):
                for kind in KINDS:
                    group = [c for c in TCP_CASES if c.unit == unit and c.kind == kind]
                    end = max(c.address + c.count for c in group) + 3
                    expected = [0] * end
                    for case in group:
                        expected[case.address:case.address + case.count] = \
                            case.registers(instant)
                    read = (client.read_holding_registers if kind == "holding"
                            else client.read_input_registers)
                    response = await read(0, count=end, device_id=unit)
                    assert response.registers == expected, (unit, kind, instant)


# -- 2. bit order: coils and discrete inputs ------------------------------------------------

def _relay_writes(rig: Rig, bus: str) -> list[tuple[int, bool]]:
    return [(r["coil"], r["value"]) for r in rig.fleet.relay_log
            if r["bus"] == bus and r["unit"] == RELAY_UNIT and r["applied"]]


async def test_mb_6_coil_bit_order_through_pymodbus(tmp_path: Path) -> None:
    model = [False] * COIL_SPACE
    async with simulators(tmp_path) as rig, pymodbus_client(rig) as client, \
            tcp_hub(rig) as hub:
        response = await client.read_coils(0, count=COIL_SPACE, device_id=RELAY_UNIT)
        assert not response.isError()
        assert response.bits[:COIL_SPACE] == model

        response = await client.write_coils(3, list(COIL_PATTERN), device_id=RELAY_UNIT)
        assert not response.isError(), response
        model[3:3 + len(COIL_PATTERN)] = COIL_PATTERN
        assert rig.fleet.coils("tcp", RELAY_UNIT) == model  # the same bits, same addresses
        for address, value in COIL_SINGLES:
            response = await client.write_coil(address, value, device_id=RELAY_UNIT)
            assert not response.isError(), response
            model[address] = value
        assert rig.fleet.coils("tcp", RELAY_UNIT) == model
        # The journal: one record per coil, in wire order, first coil at the start address.
        assert _relay_writes(rig, "tcp") == \
            [(3 + i, bit) for i, bit in enumerate(COIL_PATTERN)] + list(COIL_SINGLES)

        for first, count in BIT_RANGES:
            response = await client.read_coils(first, count=count, device_id=RELAY_UNIT)
            assert not response.isError()
            assert len(response.bits) >= count
            assert response.bits[:count] == model[first:first + count], (first, count)
            assert await hub.read_coils(RELAY_UNIT, first, count) == \
                model[first:first + count], (first, count)

        # The daemon's hub writes land where pymodbus reads them, and the other way round.
        await hub.write_coil(RELAY_UNIT, 12, True)
        await hub.write_coil(RELAY_UNIT, 3, False)
        model[12], model[3] = True, False
        assert rig.fleet.coils("tcp", RELAY_UNIT) == model
        response = await client.read_coils(0, count=COIL_SPACE, device_id=RELAY_UNIT)
        assert response.bits[:COIL_SPACE] == model


async def test_mb_6_discrete_input_bit_order_through_pymodbus(tmp_path: Path) -> None:
    bits = [bool(b) for b in DISCRETE] + [False] * (COIL_SPACE - len(DISCRETE))
    async with simulators(tmp_path) as rig, pymodbus_client(rig) as client, \
            tcp_hub(rig) as hub:
        for first, count in BIT_RANGES:
            response = await client.read_discrete_inputs(first, count=count,
                                                         device_id=DISCRETE_UNIT)
            assert not response.isError()
            assert response.bits[:count] == bits[first:first + count], (first, count)
            assert await hub.read_bits(DISCRETE_UNIT, "discrete", first, count) == \
                [int(b) for b in bits[first:first + count]], (first, count)
        for address, bit in enumerate(DISCRETE):
            spec = RegisterSpec.model_validate({"kind": "discrete", "address": address})
            assert (await ModbusGauge(hub, DISCRETE_UNIT, spec).read()).value == bit, address


# -- 3. exception answers ---------------------------------------------------------------------

EXCEPTION_CODES = (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x0A, 0x0B)
FAULTED = next(c for c in TCP_CASES if c.data_type == "int32" and c.kind == "holding")


@pytest.mark.parametrize("code", EXCEPTION_CODES, ids=lambda c: f"{c:02X}")
async def test_mb_6_pymodbus_returns_the_exception_answer(tmp_path: Path, code: int) -> None:
    async with simulators(tmp_path) as rig, pymodbus_client(rig) as client:
        rig.fleet.set_fault("tcp", FAULTED.unit, exception=code)
        before = rig.requests("tcp", FAULTED.unit)
        for read, function in ((client.read_holding_registers, 0x03),
                               (client.read_input_registers, 0x04)):
            response = await read(FAULTED.address, count=FAULTED.count,
                                  device_id=FAULTED.unit)
            assert response.isError()
            assert response.exception_code == code
            assert response.function_code == function | 0x80
            assert response.dev_id == FAULTED.unit
        # pymodbus repeats nothing by itself, not even 06: the hub's retry count is the count.
        assert rig.requests("tcp", FAULTED.unit) - before == 2
        rig.fleet.clear_faults()
        response = await client.read_holding_registers(
            FAULTED.address, count=FAULTED.count, device_id=FAULTED.unit)
        assert response.registers == FAULTED.registers(0)


async def test_mb_6_pymodbus_returns_0B_for_a_unit_the_gateway_lacks(tmp_path: Path) -> None:
    async with simulators(tmp_path) as rig, pymodbus_client(rig) as client:
        response = await client.read_holding_registers(0, count=1, device_id=77)
        assert response.isError()
        assert (response.exception_code, response.function_code) == (0x0B, 0x83)


# (error class, requests the hub makes with `retries` = 1): 06 is retried twice after a pause;
# 0B is a timeout, so it gets the timeout retries; nothing else is repeated. 0A on RTU is a
# transport failure, which the serial hub retries like a garbled answer: at most the budget.
RETRIES = 1
EXPECTED: dict[int, tuple[type[DriverError], int]] = {
    0x01: (DeviceError, 1), 0x02: (DeviceError, 1), 0x03: (DeviceError, 1),
    0x04: (DeviceError, 1), 0x06: (DeviceError, 3), 0x0A: (TransportError, 1 + RETRIES),
    0x0B: (DeviceTimeout, 1 + RETRIES),
}


@pytest.mark.parametrize("bus", ["tcp", "rs485"])
@pytest.mark.parametrize("code", list(EXPECTED), ids=lambda c: f"{c:02X}")
async def test_mb_6_exception_answers_through_the_hubs(
        tmp_path: Path, pty_pair: PtyPairFactory, bus: str, code: int) -> None:
    pty = pty_pair("rs485") if bus == "rs485" else None
    case = next(c for c in (TCP_CASES if bus == "tcp" else RTU_CASES)
                if c.data_type == FAULTED.data_type and c.kind == "holding")
    error, requests = EXPECTED[code]
    async with simulators(tmp_path, pty) as rig, \
            (tcp_hub(rig, RETRIES) if bus == "tcp" else rtu_hub(rig, RETRIES)) as hub:
        gauge = ModbusGauge(hub, case.unit, case.spec())
        assert case.is_raw((await gauge.read()).value, 0)
        rig.fleet.set_fault(bus, case.unit, exception=code)
        before = rig.requests(bus, case.unit)
        injected = rig.fleet.faults_injected(bus, case.unit, "exception")
        with pytest.raises(error) as caught:
            await gauge.read()
        made = rig.requests(bus, case.unit) - before
        assert rig.fleet.faults_injected(bus, case.unit, "exception") - injected == made
        if error is DeviceError:
            assert isinstance(caught.value, DeviceError)
            assert caught.value.code == code
            assert made == requests
        elif error is DeviceTimeout:
            assert made == requests
        else:
            assert not isinstance(caught.value, DeviceTimeout)  # 0A: not a silent device
            # TCP: not repeated. RTU: the serial hub retries every transport failure, 0A
            # included, within its timeout budget; bounded either way.
            assert made == 1 if bus == "tcp" else 1 <= made <= requests
        assert f"{code:02X}" in str(caught.value)
        rig.fleet.clear_faults()
        assert case.is_raw((await gauge.read()).value, 0)  # the hub goes on
        if isinstance(hub, ModbusTcpHub):
            assert hub.connect_attempts == 1  # an exception answer is a good exchange


@pytest.mark.parametrize("bus", ["tcp", "rs485"])
async def test_mb_6_busy_is_retried_twice_then_given_up(
        tmp_path: Path, pty_pair: PtyPairFactory, bus: str) -> None:
    pty = pty_pair("rs485") if bus == "rs485" else None
    case = next(c for c in (TCP_CASES if bus == "tcp" else RTU_CASES)
                if c.data_type == "float32" and c.kind == "input")
    async with simulators(tmp_path, pty) as rig, \
            (tcp_hub(rig, RETRIES) if bus == "tcp" else rtu_hub(rig, RETRIES)) as hub:
        gauge = ModbusGauge(hub, case.unit, case.spec())
        rig.fleet.set_fault(bus, case.unit, busy_count=2)
        before = rig.requests(bus, case.unit)
        assert case.is_raw((await gauge.read()).value, 0)  # busy, busy, answer
        assert rig.requests(bus, case.unit) - before == 3
        rig.fleet.set_fault(bus, case.unit, busy_count=4)
        before = rig.requests(bus, case.unit)
        with pytest.raises(DeviceError) as caught:
            await gauge.read()
        assert caught.value.code == 0x06
        assert rig.requests(bus, case.unit) - before == 3
        assert rig.fleet.faults_injected(bus, case.unit, "busy_count") == 5
        # The fourth busy answer belongs to the next reading, which then retries and succeeds.
        assert case.is_raw((await gauge.read()).value, 0)
        assert rig.requests(bus, case.unit) - before == 5


# -- 4. the matrix through the daemon's own RTU framing ------------------------------------

@pytest.mark.parametrize(("data_type", "byte_order", "word_order"), MATRIX, ids=MATRIX_IDS)
async def test_mb_6_rtu_hub_decodes_every_type_and_order(
        tmp_path: Path, rs485: PtyPair, data_type: str, byte_order: Order,
        word_order: Order) -> None:
    cases = cases_of(RTU_CASES, data_type, byte_order, word_order)
    assert len(cases) == 2
    async with simulators(tmp_path, rs485) as rig, rtu_hub(rig) as hub:
        for instant in INSTANTS:
            rig.at(instant)
            for case in cases:
                where = (case.name, instant)
                words = await hub.read_registers(case.unit, case.kind, case.address,
                                                 case.count)
                assert words == case.registers(instant), where
                value = (await ModbusGauge(hub, case.unit, case.spec()).read()).value
                assert case.is_raw(value, instant), (where, value)
                assert abs(decode_registers(words, case.spec()) - case.levels[instant]) \
                    <= case.tolerance(instant), where
        faults = rig.fleet.fault_stats()
        assert not faults, faults


async def test_mb_6_rtu_hub_bit_order(tmp_path: Path, rs485: PtyPair) -> None:
    model = [False] * COIL_SPACE
    discrete = [int(b) for b in DISCRETE] + [0] * (COIL_SPACE - len(DISCRETE))
    async with simulators(tmp_path, rs485) as rig, rtu_hub(rig) as hub:
        writes = [(3 + i, bit) for i, bit in enumerate(COIL_PATTERN)] + list(COIL_SINGLES)
        for address, value in writes:
            await hub.write_coil(RELAY_UNIT, address, value)
            model[address] = value
        assert rig.fleet.coils("rs485", RELAY_UNIT) == model
        assert _relay_writes(rig, "rs485") == writes
        for first, count in BIT_RANGES:
            assert await hub.read_coils(RELAY_UNIT, first, count) == \
                model[first:first + count], (first, count)
            assert await hub.read_bits(DISCRETE_UNIT, "discrete", first, count) == \
                discrete[first:first + count], (first, count)
        for address, bit in enumerate(DISCRETE):
            spec = RegisterSpec.model_validate({"kind": "discrete", "address": address})
            assert (await ModbusGauge(hub, DISCRETE_UNIT, spec).read()).value == bit, address


