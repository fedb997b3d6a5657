"""Fault knobs on the Modbus TCP gateways, seen by a pymodbus client and by raw sockets.

pymodbus shows what a daemon would see (exception codes, timeouts, values); raw sockets show the
bytes themselves (junk, split writes, foreign unit ids, late replies). The fleet serves a
temporary copy of the reference config on free ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException
from services import free_port

from simulators.clock import SimClock
from simulators.errors import ConfigError, FaultError
from simulators.fleet import Fleet

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "config" / "minato-furukawa.toml"
DEADLINE_S = 5.0

SCENARIO = """time,station,quantity,value
0,shin_hiroo,level_m,1.5
0,shirokane,level_m,1.234
"""


def _free_port() -> int:
    return free_port()  # (tests/services.py: below the ephemeral range)


@pytest.fixture
def config(tmp_path: Path) -> tuple[Path, dict[int, int]]:
    """The reference config on free ports: original port → port in the copy."""
    ports: dict[int, int] = {}

    def replace(match: re.Match[str]) -> str:
        original = int(match.group(2))
        ports.setdefault(original, _free_port())
        return f"{match.group(1)}{ports[original]}"

    text = re.sub(r"(?m)^(port\s*=\s*)(\d+)", replace, REFERENCE.read_text(encoding="utf-8"))
    path = tmp_path / "gauged.toml"
    path.write_text(text, encoding="utf-8")
    (tmp_path / "scenario.csv").write_text(SCENARIO, encoding="utf-8")
    return path, ports


@pytest.fixture
async def fleet(config: tuple[Path, dict[int, int]]) -> AsyncIterator[Fleet]:
    path, _ports = config
    async with Fleet(path, path.parent / "scenario.csv", SimClock(), seed=11) as running:
        yield running


@pytest.fixture
def river_port(config: tuple[Path, dict[int, int]]) -> int:
    return config[1][15020]


class Raw:
    """A Modbus TCP client of a few lines: the bytes as they come."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.transaction = 0

    @classmethod
    async def connect(cls, port: int) -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    def send(self, unit: int, pdu: bytes) -> int:
        self.transaction += 1
        self.writer.write(struct.pack(">HHHB", self.transaction, 0, len(pdu) + 1, unit) + pdu)
        return self.transaction

    async def chunk(self) -> tuple[float, bytes]:
        data = await asyncio.wait_for(self.reader.read(4096), DEADLINE_S)
        return time.monotonic(), data

    async def frame(self) -> tuple[int, int, bytes]:
        """(transaction, unit, PDU) of one well-formed reply."""
        header = await asyncio.wait_for(self.reader.readexactly(7), DEADLINE_S)
        transaction, protocol, length, unit = struct.unpack(">HHHB", header)
        assert protocol == 0
        pdu = await asyncio.wait_for(self.reader.readexactly(length - 1), DEADLINE_S)
        return transaction, unit, pdu

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


READ_SHIN_HIROO = struct.pack(">BHH", 4, 0, 2)  # unit 1: input 0, float32


def _float(pdu: bytes) -> float:
    value: float = struct.unpack(">f", pdu[2:6])[0]
    return value


async def _client(port: int) -> AsyncModbusTcpClient:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=0.3, retries=0)
    assert await client.connect()
    return client


async def test_exception_busy_and_silence_as_pymodbus_sees_them(
    fleet: Fleet, river_port: int
) -> None:
    client = await _client(river_port)
    try:
        fleet.set_fault("river", 1, exception=4)
        failed = await client.read_input_registers(0, count=2, device_id=1)
        assert failed.isError()
        assert failed.exception_code == 4
        fleet.set_fault("river", 1, exception=None, busy_count=1)
        busy = await client.read_input_registers(0, count=2, device_id=1)
        assert busy.exception_code == 6
        answered = await client.read_input_registers(0, count=2, device_id=1)
        assert not answered.isError()
        assert struct.unpack(">f", struct.pack(">HH", *answered.registers))[0] == 1.5
        fleet.set_fault("river", 1, nan=True)
        nan = await client.read_input_registers(0, count=2, device_id=1)
        assert math.isnan(struct.unpack(">f", struct.pack(">HH", *nan.registers))[0])
        fleet.set_fault("river", 2, spike=0.5)
        shirokane = await client.read_holding_registers(10, count=2, device_id=2)
        assert shirokane.registers == [1734, 0]  # 1.734 m in mm, little word order
        # An int32 cannot carry NaN: "no valid value" is its most negative value.
        fleet.set_fault("river", 2, spike=None, nan=True)
        shirokane = await client.read_holding_registers(10, count=2, device_id=2)
        assert shirokane.registers == [0x0000, 0x8000]  # 0x80000000, little word order
        fleet.set_fault("river", 1, nan=None, no_answer=True)
        with pytest.raises(ModbusIOException):
            await client.read_input_registers(0, count=2, device_id=1)
    finally:
        client.close()
    assert fleet.fault_stats() == {
        ("river", 1): {"busy_count": 1, "exception": 1, "nan": 1, "no_answer": 1},
        ("river", 2): {"nan": 1, "spike": 1},
    }


async def test_byte_level_knobs_on_the_wire(fleet: Fleet, river_port: int) -> None:
    raw = await Raw.connect(river_port)
    try:
        fleet.set_fault("river", 1, junk=True)
        raw.send(1, READ_SHIN_HIROO)
        _t, junk = await raw.chunk()
        assert junk[2:4] != b"\x00\x00"  # never a valid MBAP header

        fleet.set_fault("river", 1, junk=None, split=True, split_gap_s=0.05)
        transaction = raw.send(1, READ_SHIN_HIROO)
        first_at, first = await raw.chunk()
        second_at, second = await raw.chunk()
        assert second_at - first_at >= 0.04
        reply = first + second
        assert struct.unpack(">HHHB", reply[:7]) == (transaction, 0, 7, 1)
        assert _float(reply[7:]) == 1.5

        fleet.set_fault("river", 1, split=None, wrong_unit=True)
        transaction = raw.send(1, READ_SHIN_HIROO)
        assert (await raw.frame())[:2] == (transaction, 2)  # the other unit of the gateway

        fleet.set_fault("river", 1, wrong_unit=None, delay_s=0.1)
        started = time.monotonic()
        raw.send(1, READ_SHIN_HIROO)
        await raw.frame()
        assert time.monotonic() - started >= 0.1

        # late_s: the reply comes after the next request's reply, carrying its own transaction.
        fleet.set_fault("river", 1, delay_s=None, late_s=0.2)
        late = raw.send(1, READ_SHIN_HIROO)
        nxt = raw.send(2, struct.pack(">BHH", 3, 10, 2))
        assert (await raw.frame())[:2] == (nxt, 2)
        assert (await raw.frame())[:2] == (late, 1)
    finally:
        await raw.close()
    assert fleet.fault_stats()[("river", 1)] == {
        "delay_s": 1,
        "junk": 1,
        "late_s": 1,
        "split": 1,
        "wrong_unit": 1,
    }


async def _refused(port: int) -> bool:
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    await writer.wait_closed()
    return False


async def test_disconnect_drops_connections_and_refuses_until_cleared(
    fleet: Fleet, river_port: int
) -> None:
    raw = await Raw.connect(river_port)
    other = await Raw.connect(river_port)
    try:
        fleet.set_fault("river", 2, disconnect=True)  # any unit of the gateway takes it down
        _t, eof = await raw.chunk()
        assert eof == b""
        deadline = time.monotonic() + DEADLINE_S
        while not await _refused(river_port):
            assert time.monotonic() < deadline, "the gateway still accepts connections"
        fleet.clear_faults("river", 2)
        deadline = time.monotonic() + DEADLINE_S
        while await _refused(river_port):
            assert time.monotonic() < deadline, "the gateway did not come back"
    finally:
        await raw.close()
        await other.close()
    back = await Raw.connect(river_port)
    try:
        back.send(1, READ_SHIN_HIROO)
        assert _float((await back.frame())[2]) == 1.5
    finally:
        await back.close()
    assert fleet.fault_stats() == {("river", 2): {"disconnect": 2}}  # two connections dropped


async def test_stuck_relay_board_over_tcp(config: tuple[Path, dict[int, int]]) -> None:
    path, ports = config
    async with Fleet(path, None, SimClock()) as fleet:
        fleet.set_fault("relays", 1, stuck=True)
        client = await _client(ports[15030])
        try:
            assert not (await client.write_coil(0, True, device_id=1)).isError()
            assert (await client.read_coils(0, count=1, device_id=1)).bits[0] is False
            fleet.set_fault("relays", 1, stuck=False)
            assert not (await client.write_coil(0, True, device_id=1)).isError()
            assert (await client.read_coils(0, count=1, device_id=1)).bits[0] is True
        finally:
            client.close()
    assert [r["applied"] for r in fleet.relay_log] == [False, True]


async def _pattern(path: Path, port: int, seed: int) -> list[bool]:
    """Which of 40 requests a device with no_answer = 0.5 answered, for ``seed``."""
    answered: list[bool] = []
    async with Fleet(path, None, SimClock(), seed=seed) as fleet:
        fleet.set_fault("river", 1, no_answer=0.5)
        raw = await Raw.connect(port)
        try:
            for _ in range(40):
                transaction = raw.send(1, READ_SHIN_HIROO)
                marker = raw.send(2, struct.pack(">BHH", 3, 10, 2))  # always answered
                first = (await raw.frame())[0]
                if first == transaction:
                    assert (await raw.frame())[0] == marker
                answered.append(first == transaction)
        finally:
            await raw.close()
        assert fleet.faults_injected(kind="no_answer") == answered.count(False)
    return answered


async def test_random_faults_repeat_with_the_seed(config: tuple[Path, dict[int, int]]) -> None:
    path, ports = config
    first = await _pattern(path, ports[15020], seed=5)
    again = await _pattern(path, ports[15020], seed=5)
    other = await _pattern(path, ports[15020], seed=6)
    assert first == again
    assert first != other
    assert 5 < first.count(False) < 35


async def test_faults_file_applies_at_start(
    config: tuple[Path, dict[int, int]], tmp_path: Path
) -> None:
    path, _ports = config
    faults = tmp_path / "faults.toml"
    faults.write_text(
        '[[fault]]\nbus = "river"\nunit = 1\nno_answer = true\ndelay_s = 0.05\n'
        '[[fault]]\nbus = "rain"\nexception = 4\nexception_rate = 0.25\n',
        encoding="utf-8",
    )
    fleet = Fleet(path, None, SimClock(), faults=faults)
    knobs = fleet.get_faults()
    assert knobs[("river", 1)] == {"no_answer": 1.0, "delay_s": 0.05}
    assert {unit for bus, unit in knobs if bus == "rain"} == set(range(11, 20))
    assert knobs[("rain", 11)] == {"exception": 4, "exception_rate": 0.25}

    for text, message in [
        ('[[fault]]\nbus = "nowhere"\nno_answer = true\n', r"fault\[0\]: no simulated bus"),
        ('[[fault]]\nbus = "river"\nunit = 1\nbad_crc = 0.5\n', r"no meaning on a Modbus TCP"),
        ('[[fault]]\nbus = "river"\nunit = 1\nno_answer = 2\n', r"a probability is"),
        ('[[fault]]\nbus = "river"\nwobble = 1\n', r"fault\[0\]\.wobble: unknown fault knob"),
        ('[faults]\nbus = "river"\n', r"unknown top-level key"),
    ]:
        faults.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError, match=message) as caught:
            Fleet(path, None, SimClock(), faults=faults)
        assert str(caught.value).startswith(str(faults))


def test_set_fault_checks_before_it_changes_anything(config: tuple[Path, dict[int, int]]) -> None:
    path, _ports = config
    fleet = Fleet(path, None, SimClock())
    with pytest.raises(FaultError, match=r"must be an integer in 1\.\.255"):
        fleet.set_fault("river", 1, no_answer=True, exception=300)
    assert fleet.get_faults() == {}
    with pytest.raises(FaultError, match="no simulated device 9 on bus 'river'"):
        fleet.set_fault("river", 9, no_answer=True)


async def test_clearing_a_long_delay_frees_the_gateway_at_once(
    fleet: Fleet, river_port: int
) -> None:
    fleet.set_fault("river", 1, delay_s=30.0)
    raw = await Raw.connect(river_port)
    try:
        started = time.monotonic()
        raw.send(1, READ_SHIN_HIROO)
        reply = asyncio.create_task(raw.frame(), name="test.delayed-reply")
        deadline = time.monotonic() + DEADLINE_S
        while not fleet.faults_injected("river", 1, "delay_s"):  # the request is being held
            assert time.monotonic() < deadline
            await asyncio.sleep(0.005)
        fleet.set_fault("river", 1, delay_s=None)
        assert _float((await reply)[2]) == 1.5
        assert time.monotonic() - started < 2.0
    finally:
        await raw.close()
