"""The Modbus TCP hub (pymodbus underneath) against a small fake gateway on loopback.

The fake gateway speaks MBAP written here from the spec, independently of pymodbus and
drivers/, so that these tests also pin what gauged relies on in the pinned pymodbus (decoding
through it, coil bit order, what it accepts). Fault knobs: per-request faults in a queue
(answer with transaction id 0, another transaction id, another function code, late, not at
all), exception codes per unit, dead units, and a "drop" mode in which the port accepts and
hangs up at once (a gateway whose Modbus service is down).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from drivers.configs import ModbusTcpBusConfig, RegisterSpec, StatusSpec
from drivers.errors import DeviceError, DeviceTimeout, TransportError
from drivers.modbus import ModbusGauge, ModbusTcpHub
from drivers.registers import decode_raw

FORMATS = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I",
           "float32": ">f", "float64": ">d"}
SAMPLES: dict[str, Any] = {"int16": -1234, "uint16": 54321, "int32": -123456789,
                           "uint32": 0xDEADBEEF, "float32": -2.75, "float64": 1.2345678901234}


def encode(value: float, data_type: str, byte_order: str, word_order: str) -> list[int]:
    data = struct.pack(FORMATS[data_type], value)
    words = [data[i:i + 2] for i in range(0, len(data), 2)]
    if word_order == "little":
        words.reverse()
    return [int.from_bytes(w, "little" if byte_order == "little" else "big") for w in words]


@dataclass
class Unit:
    holding: dict[int, int] = field(default_factory=dict)
    input: dict[int, int] = field(default_factory=dict)
    coils: dict[int, bool] = field(default_factory=dict)
    discrete: dict[int, bool] = field(default_factory=dict)
    dead: bool = False
    exceptions: list[int] = field(default_factory=list)
    requests: int = 0


def answer_pdu(unit: Unit, pdu: bytes) -> bytes:
    function = pdu[0]
    address, quantity = struct.unpack(">HH", pdu[1:5])
    span = range(address, address + quantity)
    if unit.exceptions:
        return bytes([function | 0x80, unit.exceptions.pop(0)])
    if function in (3, 4):
        table = unit.holding if function == 3 else unit.input
        if any(a not in table for a in span):
            return bytes([function | 0x80, 2])
        data = b"".join(table[a].to_bytes(2, "big") for a in span)
        return bytes([function, len(data)]) + data
    if function in (1, 2):
        bits = unit.coils if function == 1 else unit.discrete
        if any(a not in bits for a in span):
            return bytes([function | 0x80, 2])
        packed = bytearray((quantity + 7) // 8)
        for i, a in enumerate(span):
            if bits[a]:
                packed[i // 8] |= 1 << (i % 8)  # the first coil in the lowest bit
        return bytes([function, len(packed)]) + bytes(packed)
    if function == 5:
        unit.coils[address] = quantity == 0xFF00
        return pdu
    return bytes([function | 0x80, 1])


def mbap(tid: int, unit: int, pdu: bytes) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


class Gateway:
    """A fake Modbus TCP gateway on 127.0.0.1."""

    def __init__(self) -> None:
        self.units: dict[int, Unit] = {}
        self.faults: list[str] = []  # applied to the next requests, one each
        self.drop = False
        self.accepts = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._writers):
                w.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepts += 1
        if self.drop:
            writer.close()
            return
        self._writers.add(writer)
        try:
            while True:
                header = await reader.readexactly(7)
                tid, _, length, unit_id = struct.unpack(">HHHB", header)
                pdu = await reader.readexactly(length - 1)
                unit = self.units.get(unit_id)
                if unit is None:
                    continue
                unit.requests += 1
                fault = self.faults.pop(0) if self.faults else ""
                if unit.dead or fault == "silent":
                    continue
                reply = answer_pdu(unit, pdu)
                if fault == "tid0":
                    writer.write(mbap(0, unit_id, reply))
                elif fault == "other_tid":
                    writer.write(mbap(tid + 100, unit_id, reply))
                elif fault == "other_tid_then_right":
                    writer.write(mbap(tid + 100, unit_id, bytes([pdu[0], 2, 0x12, 0x34])))
                    writer.write(mbap(tid, unit_id, reply))
                elif fault == "other_function":
                    writer.write(mbap(tid, unit_id, bytes([4]) + reply[1:]))
                elif fault.startswith("late"):
                    asyncio.get_running_loop().call_later(
                        float(fault.split()[1]), writer.write, mbap(tid, unit_id, reply))
                else:
                    writer.write(mbap(tid, unit_id, reply))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    gw = Gateway()
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


def config(gw: Gateway, **kwargs: float) -> ModbusTcpBusConfig:
    fields: dict[str, object] = {"host": "127.0.0.1", "port": gw.port, "timeout_s": 0.2,
                                 "reconnect_max_s": 0.3}
    fields.update(kwargs)
    return ModbusTcpBusConfig.model_validate(fields)


def level_unit(level: float) -> Unit:
    words = encode(level, "float32", "big", "big")
    return Unit(holding={0: words[0], 1: words[1], 2: 0, 3: 0, 4: 0x0003, 20: 777})


LEVEL = RegisterSpec(address=0, data_type="float32")


async def test_decoding_conformance_through_pymodbus(gateway: Gateway) -> None:
    unit = Unit()
    specs = []
    address = 0
    for data_type, value in SAMPLES.items():
        for byte_order in ("big", "little"):
            for word_order in ("big", "little"):
                words = encode(value, data_type, byte_order, word_order)
                unit.holding |= {address + i: w for i, w in enumerate(words)}
                unit.input |= {address + i: w for i, w in enumerate(words)}
                specs.append((value, address, dict(data_type=data_type, byte_order=byte_order,
                                                   word_order=word_order)))
                address += len(words)
    pattern = [i % 3 == 0 or i == 9 for i in range(20)]  # 1001001001 0100100100
    unit.coils = dict(enumerate(pattern))
    unit.discrete = dict(enumerate(reversed(pattern)))
    gateway.units[7] = unit
    async with ModbusTcpHub("gw", config(gateway)) as hub:
        for value, addr, orders in specs:
            for kind in ("holding", "input"):
                spec = RegisterSpec.model_validate({"kind": kind, "address": addr, **orders})
                got = (await ModbusGauge(hub, 7, spec).read()).value
                assert got == pytest.approx(value, rel=1e-6), (kind, orders)
        assert await hub.read_bits(7, "coil", 0, 20) == [int(b) for b in pattern]
        assert await hub.read_bits(7, "discrete", 0, 20) == [int(b) for b in reversed(pattern)]
        assert await hub.read_bits(7, "coil", 3, 7) == [int(b) for b in pattern[3:10]]
        for i in range(20):
            coil = RegisterSpec(kind="coil", address=i)
            assert (await ModbusGauge(hub, 7, coil).read()).value == int(pattern[i])
        await hub.write_coil(7, 1, True)
        assert await hub.read_coils(7, 0, 2) == [True, True]


@pytest.mark.parametrize(("fault", "error"), [
    ("tid0", TransportError), ("other_function", TransportError),
    ("other_tid", DeviceTimeout)])
async def test_an_answer_for_another_request_is_never_accepted(
        gateway: Gateway, fault: str, error: type[Exception]) -> None:
    gateway.units[1] = level_unit(1.5)
    async with ModbusTcpHub("gw", config(gateway)) as hub:
        gauge = ModbusGauge(hub, 1, LEVEL)
        assert (await gauge.read()).value == 1.5
        gateway.faults = [fault]
        with pytest.raises(error):
            await gauge.read()
        assert not hub.connected  # dropped: nothing stale can reach the next request
        assert (await gauge.read()).value == 1.5
        assert gateway.accepts == 2


async def test_a_stray_answer_before_the_right_one_is_skipped(gateway: Gateway) -> None:
    gateway.units[1] = level_unit(2.5)
    async with ModbusTcpHub("gw", config(gateway)) as hub:
        gateway.faults = ["other_tid_then_right"]
        assert (await ModbusGauge(hub, 1, LEVEL).read()).value == 2.5


async def test_a_late_answer_does_not_reach_the_next_request(gateway: Gateway) -> None:
    gateway.units[1] = level_unit(3.5)
    async with ModbusTcpHub("gw", config(gateway, timeout_s=0.1)) as hub:
        gateway.faults = ["late 0.15"]
        with pytest.raises(DeviceTimeout):
            await hub.read_registers(1, "holding", 0, 1)
        gateway.faults = ["late 0.08"]
        assert await hub.read_registers(1, "holding", 20, 1) == [777]


async def test_a_timeout_is_retried_within_the_budget(gateway: Gateway) -> None:
    gateway.units[1] = unit = level_unit(4.5)
    async with ModbusTcpHub("gw", config(gateway, retries=1)) as hub:
        gateway.faults = ["silent"]
        assert (await ModbusGauge(hub, 1, LEVEL).read()).value == 4.5
        assert unit.requests == 2
        gateway.faults = ["silent", "silent"]
        with pytest.raises(DeviceTimeout):
            await ModbusGauge(hub, 1, LEVEL).read()
        assert unit.requests == 4


@pytest.mark.parametrize(("codes", "error", "requests"), [
    ([6, 6], None, 3), ([6, 6, 6], DeviceError, 3), ([1], DeviceError, 1),
    ([2], DeviceError, 1), ([3], DeviceError, 1), ([4], DeviceError, 1),
    ([0x0A], TransportError, 1), ([0x0B], DeviceTimeout, 1)])
async def test_exception_codes(gateway: Gateway, codes: list[int],
                               error: type[Exception] | None, requests: int) -> None:
    gateway.units[1] = unit = level_unit(5.5)
    unit.exceptions = list(codes)
    async with ModbusTcpHub("gw", config(gateway)) as hub:
        if error is None:
            assert (await ModbusGauge(hub, 1, LEVEL).read()).value == 5.5
        else:
            with pytest.raises(error) as caught:
                await ModbusGauge(hub, 1, LEVEL).read()
            if isinstance(caught.value, DeviceError):
                assert caught.value.code == codes[-1]
        assert unit.requests == requests
        assert hub.connected  # an exception answer is a good exchange


async def test_a_dead_unit_costs_the_live_units_nothing(gateway: Gateway) -> None:
    gateway.units = {u: level_unit(u) for u in range(1, 6)}
    gateway.units[3].dead = True
    async with ModbusTcpHub("gw", config(gateway, timeout_s=0.1)) as hub:
        for _cycle in range(2):
            results = await asyncio.gather(
                *(ModbusGauge(hub, u, LEVEL).read() for u in gateway.units),
                return_exceptions=True)
            for u, result in zip(gateway.units, results, strict=True):
                if u == 3:
                    assert isinstance(result, DeviceTimeout)
                else:
                    assert not isinstance(result, BaseException)
                    assert result.value == u


async def test_value_and_status_merge_until_the_device_refuses(gateway: Gateway) -> None:
    gateway.units[1] = level_unit(6.5)
    holey = level_unit(7.5)
    del holey.holding[2], holey.holding[3]  # a hole between value and status
    gateway.units[2] = holey
    status = StatusSpec(address=4, fault_mask=0x01)
    async with ModbusTcpHub("gw", config(gateway)) as hub:
        whole = ModbusGauge(hub, 1, LEVEL, status)
        assert await whole.read() == await whole.read()
        assert (await whole.read()).status == 3
        assert gateway.units[1].requests == 3  # one request per reading
        gauge = ModbusGauge(hub, 2, LEVEL, status)
        reading = await gauge.read()
        assert (reading.value, reading.status) == (7.5, 3)
        assert holey.requests == 3  # the refused merged read, then value and status
        assert not gauge.merge
        await gauge.read()
        assert holey.requests == 5  # separately from now on


async def test_inter_request_gap(gateway: Gateway) -> None:
    gateway.units[1] = level_unit(8.5)
    async with ModbusTcpHub("gw", config(gateway, inter_request_s=0.05)) as hub:
        await hub.read_registers(1, "holding", 0, 1)
        started = time.monotonic()
        for _ in range(4):
            await hub.read_registers(1, "holding", 0, 1)
        assert time.monotonic() - started >= 4 * 0.05 * 0.9


async def test_mb_4_gateway_down_one_attempt_at_a_time_and_back_within_two_caps(
        gateway: Gateway) -> None:
    cap = 0.3
    gateway.units = {u: level_unit(u) for u in range(1, 6)}
    async with ModbusTcpHub("gw", config(gateway, reconnect_max_s=cap)) as hub:
        gauges = [ModbusGauge(hub, u, LEVEL) for u in gateway.units]
        assert all(not isinstance(r, BaseException) for r in
                   await asyncio.gather(*(g.read() for g in gauges), return_exceptions=True))
        # Down: the gateway's port accepts and hangs up at once; every station keeps polling.
        await gateway.stop()
        gateway.drop = True
        await gateway.start()
        accepts = gateway.accepts
        attempts = hub.connect_attempts
        results = await asyncio.gather(*(g.read() for g in gauges for _ in range(4)),
                                       return_exceptions=True)
        assert all(isinstance(r, TransportError) for r in results)
        assert hub.connect_attempts - attempts <= 1  # 20 reads, at most one connect
        down_for = 1.2
        started = time.monotonic()
        while time.monotonic() - started < down_for:
            await asyncio.gather(*(g.read() for g in gauges), return_exceptions=True)
            await asyncio.sleep(0.01)
        tried = gateway.accepts - accepts
        # Backoff with jitter: delays of at least cap / 2 once the cap is reached.
        assert 2 <= tried <= 2 + down_for / (cap / 2)
        assert hub.connect_attempts - attempts == tried
        # Back up: every station answers again within two backoff caps.
        gateway.drop = False
        back = time.monotonic()
        waiting = set(range(len(gauges)))
        while waiting:
            assert time.monotonic() - back < 2 * cap + 0.2, f"still down: {waiting}"
            for i in list(waiting):
                with contextlib.suppress(TransportError):
                    await gauges[i].read()
                    waiting.discard(i)
            await asyncio.sleep(0.01)


async def test_mb_7_cancelled_mid_request_propagates_and_the_hub_still_works(
        gateway: Gateway) -> None:
    gateway.units[1] = level_unit(9.5)
    async with ModbusTcpHub("gw", config(gateway, timeout_s=5.0)) as hub:
        gateway.faults = ["silent"] * 3
        started = asyncio.Event()

        async def poll() -> None:
            started.set()
            await ModbusGauge(hub, 1, LEVEL).read()

        async def group() -> None:
            async with asyncio.TaskGroup() as tg:
                for _ in range(3):
                    tg.create_task(poll(), name="gauged[bus:gw].poll")
                await asyncio.Event().wait()

        runner = asyncio.create_task(group())
        await started.wait()
        await asyncio.sleep(0.05)
        t0 = time.monotonic()
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        assert time.monotonic() - t0 < 1.0
        gateway.faults = []
        assert (await ModbusGauge(hub, 1, LEVEL).read()).value == 9.5


async def test_calls_after_close_fail(gateway: Gateway) -> None:
    gateway.units[1] = level_unit(1.0)
    hub = ModbusTcpHub("gw", config(gateway))
    async with hub:
        await hub.read_registers(1, "holding", 0, 2)
    with pytest.raises(TransportError, match="closed"):
        await hub.read_registers(1, "holding", 0, 2)
    assert decode_raw([0x3F80, 0], LEVEL) == 1.0
