"""The Modbus RTU hub over real ptys against small fake devices on the other side.

The fake devices (`RtuDevices`) sit on a pty's master side and answer RTU requests from a
register map; their CRC and framing are written here independently of drivers/. Fault knobs:
a dead unit, an answer delay, exception codes to answer with, and a `shape` hook that turns a
good answer into what the wire delivers (junk, split, corrupted, stale frames first …).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import struct
import subprocess
import time
import tty
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from drivers.configs import ModbusRtuBusConfig, RegisterSpec, StatusSpec
from drivers.errors import DeviceError, DeviceTimeout, DriverError, TransportError
from drivers.modbus import ModbusGauge
from drivers.rtu import ModbusRtuHub

SOCAT = shutil.which("socat") or "/usr/bin/socat"


def crc(data: bytes) -> bytes:
    """CRC-16/MODBUS, bit by bit (drivers/ uses a table), low byte first."""
    c = 0xFFFF
    for b in data:
        c ^= b
        for _ in range(8):
            c = (c >> 1) ^ 0xA001 if c & 1 else c >> 1
    return bytes([c & 0xFF, c >> 8])


def frame(unit: int, pdu: bytes) -> bytes:
    body = bytes([unit]) + pdu
    return body + crc(body)


def f32(value: float) -> list[int]:
    data = struct.pack(">f", value)
    return [int.from_bytes(data[0:2], "big"), int.from_bytes(data[2:4], "big")]


@dataclass
class Unit:
    """One fake device: its tables and fault knobs."""

    holding: dict[int, int] = field(default_factory=dict)
    input: dict[int, int] = field(default_factory=dict)
    coils: dict[int, bool] = field(default_factory=dict)
    discrete: dict[int, bool] = field(default_factory=dict)
    dead: bool = False
    delay_s: float = 0.0
    exceptions: list[int] = field(default_factory=list)  # answered first, one per request
    requests: int = 0


Chunks = list[tuple[float, bytes]]
Shape = Callable[[int, bytes], Chunks]


class RtuDevices:
    """RTU devices on the master side of a pty."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.units: dict[int, Unit] = {}
        self.shape: Shape | None = None
        self.rx = bytearray()
        self.loop = asyncio.get_running_loop()
        os.set_blocking(fd, False)
        self.loop.add_reader(fd, self._readable)

    def close(self) -> None:
        self.loop.remove_reader(self.fd)

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, 4096)
        except OSError:  # EIO while no one has the other side open
            return
        self.rx += data
        while len(self.rx) >= 8:  # every request gauged sends is 8 bytes
            if crc(bytes(self.rx[:6])) == bytes(self.rx[6:8]):
                request = bytes(self.rx[:8])
                del self.rx[:8]
                self._answer(request)
            else:
                del self.rx[:1]

    def _answer(self, request: bytes) -> None:
        unit_id, function = request[0], request[1]
        address, quantity = struct.unpack(">HH", request[2:6])
        unit = self.units.get(unit_id)
        if unit is None:
            return
        unit.requests += 1
        if unit.dead:
            return
        if unit.exceptions:
            pdu = bytes([function | 0x80, unit.exceptions.pop(0)])
        else:
            pdu = self._pdu(unit, request[1:6], function, address, quantity)
        reply = frame(unit_id, pdu)
        chunks = self.shape(unit_id, reply) if self.shape else [(0.0, reply)]
        for delay, chunk in chunks:
            self.loop.call_later(unit.delay_s + delay, self._write, chunk)

    @staticmethod
    def _pdu(unit: Unit, pdu: bytes, function: int, address: int, quantity: int) -> bytes:
        span = range(address, address + quantity)
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
                    packed[i // 8] |= 1 << (i % 8)
            return bytes([function, len(packed)]) + bytes(packed)
        if function == 5:
            unit.coils[address] = quantity == 0xFF00
            return pdu
        return bytes([function | 0x80, 1])

    def _write(self, chunk: bytes) -> None:
        with contextlib.suppress(OSError):  # the other side may be gone
            os.write(self.fd, chunk)


@pytest.fixture
async def pty_bus() -> AsyncIterator[tuple[RtuDevices, str]]:
    """Fake devices on a pty; the hub opens the returned path."""
    master, slave = os.openpty()
    tty.setraw(slave)
    devices = RtuDevices(master)
    try:
        yield devices, os.ttyname(slave)
    finally:
        devices.close()
        os.close(master)
        os.close(slave)


def config(path: str, **kwargs: float) -> ModbusRtuBusConfig:
    fields: dict[str, object] = {"port": path, "baudrate": 115200, "timeout_s": 0.1,
                                 "retries": 1, "reconnect_max_s": 0.2}
    fields.update(kwargs)
    return ModbusRtuBusConfig.model_validate(fields)


def gauge_unit(level: float = 1.234) -> Unit:
    """A level gauge: float32 at 0, status at 4, a counter at 10 (uint32, word swapped)."""
    counter = 0x0001_E240  # 123456
    return Unit(holding={0: f32(level)[0], 1: f32(level)[1], 2: 0, 3: 0, 4: 0x0010,
                         10: counter & 0xFFFF, 11: counter >> 16},
                input={0: 0xFFFE}, coils={i: i % 3 == 0 for i in range(10)},
                discrete={0: True, 1: False})


LEVEL = RegisterSpec(address=0, data_type="float32")


async def test_reads_every_kind(pty_bus: tuple[RtuDevices, str]) -> None:
    devices, path = pty_bus
    devices.units[1] = gauge_unit(2.5)
    async with ModbusRtuHub("rs485", config(path)) as hub:
        assert hub.connected
        assert (await ModbusGauge(hub, 1, LEVEL).read()).value == 2.5
        counter = RegisterSpec(address=10, data_type="uint32", word_order="little")
        assert (await ModbusGauge(hub, 1, counter).read()).value == 123456
        signed = RegisterSpec(kind="input", address=0, data_type="int16")
        assert (await ModbusGauge(hub, 1, signed).read()).value == -2
        assert await hub.read_bits(1, "coil", 0, 10) == [1, 0, 0, 1, 0, 0, 1, 0, 0, 1]
        assert await hub.read_bits(1, "discrete", 0, 2) == [1, 0]
        assert (await ModbusGauge(hub, 1, RegisterSpec(kind="coil", address=3)).read()).value == 1
        await hub.write_coil(1, 4, True)
        assert await hub.read_coils(1, 4) == [True]
        assert devices.units[1].coils[4] is True


async def test_status_is_read_with_the_value_in_one_request(
        pty_bus: tuple[RtuDevices, str]) -> None:
    devices, path = pty_bus
    devices.units[1] = gauge_unit(0.75)
    async with ModbusRtuHub("rs485", config(path)) as hub:
        gauge = ModbusGauge(hub, 1, LEVEL, StatusSpec(address=4, fault_mask=0x10))
        reading = await gauge.read()
        assert (reading.value, reading.status) == (0.75, 0x10)
        assert devices.units[1].requests == 1


def corrupt(rng: random.Random, rate: float) -> Shape:
    """Junk or split frames on `rate` of the answers, in every way the wire can manage."""

    def shape(unit: int, reply: bytes) -> Chunks:
        if rng.random() >= rate:
            return [(0.0, reply)]
        junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        cut = rng.randint(1, len(reply) - 1)
        flipped = bytearray(reply)
        flipped[rng.randrange(len(reply))] ^= 1 << rng.randrange(8)
        choices: list[Chunks] = [
            [(0.0, junk + reply)],                                    # junk before
            [(0.0, reply + junk)],                                    # junk after
            [(0.0, reply[:cut]), (rng.uniform(0.002, 0.02), reply[cut:])],  # split, gap
            [(0.0, bytes(flipped))],                                  # bit error
            [(0.0, reply[:cut])],                                     # truncated
            [(0.0, bytes(rng.randrange(256) for _ in reply))],        # noise
            [(0.0, reply[:cut] + junk), (0.005, reply)],              # broken, then whole
            [(0.0, reply[:cut]), (0.01, junk)],                       # split with junk tail
        ]
        return rng.choice(choices)

    return shape


@pytest.mark.parametrize("rate", [0.01, 0.10])
async def test_mb_2_junk_or_split_frames_never_give_a_corrupt_value(
        pty_bus: tuple[RtuDevices, str], rate: float) -> None:
    devices, path = pty_bus
    devices.units[1] = gauge_unit(1.234)
    devices.units[2] = gauge_unit(-0.5)
    devices.shape = corrupt(random.Random(f"mb-2 {rate}"), rate)
    hub = ModbusRtuHub("rs485", config(path, timeout_s=0.05))
    counter = RegisterSpec(address=10, data_type="uint32", word_order="little")
    gauges = {1: ModbusGauge(hub, 1, LEVEL), 2: ModbusGauge(hub, 2, counter)}
    want = {1: 1.234, 2: 123456}
    good = failed = 0
    async with hub:
        for i in range(300):
            unit = 1 + i % 2
            try:
                value = (await gauges[unit].read()).value
            except TransportError:
                failed += 1
                continue
            assert value == want[unit], f"read {i}: corrupt value {value!r} accepted"
            good += 1
    assert good + failed == 300
    assert good >= 300 * (1 - rate) - 3  # retries recover most damaged answers


async def test_stale_answer_of_another_unit_is_discarded(
        pty_bus: tuple[RtuDevices, str]) -> None:
    devices, path = pty_bus
    devices.units[1] = gauge_unit(1.0)
    devices.units[1].delay_s = 0.25  # answers after its timeout, into unit 2's exchange
    devices.units[2] = gauge_unit(2.0)
    devices.units[2].delay_s = 0.15
    async with ModbusRtuHub("rs485", config(path, timeout_s=0.2, retries=0)) as hub:
        with pytest.raises(DeviceTimeout):
            await ModbusGauge(hub, 1, LEVEL).read()
        assert (await ModbusGauge(hub, 2, LEVEL).read()).value == 2.0


async def test_answer_with_another_function_is_discarded(
        pty_bus: tuple[RtuDevices, str]) -> None:
    devices, path = pty_bus
    devices.units[1] = gauge_unit(3.0)
    stale = frame(1, bytes([4, 4]) + bytes(f32(9.0)[0].to_bytes(2, "big"))
                  + f32(9.0)[1].to_bytes(2, "big"))
    other_count = frame(1, bytes([3, 2, 0x41, 0x10]))
    devices.shape = lambda unit, reply: [(0.0, stale), (0.005, other_count), (0.01, reply)]
    async with ModbusRtuHub("rs485", config(path)) as hub:
        assert (await ModbusGauge(hub, 1, LEVEL).read()).value == 3.0
        devices.shape = lambda unit, reply: [(0.0, stale)]
        with pytest.raises(DriverError):
            await ModbusGauge(hub, 1, LEVEL).read()


async def test_busy_is_retried_twice_then_given_up(pty_bus: tuple[RtuDevices, str]) -> None:
    devices, path = pty_bus
    devices.units[1] = unit = gauge_unit(4.0)
    async with ModbusRtuHub("rs485", config(path)) as hub:
        unit.exceptions = [6, 6]
        assert (await ModbusGauge(hub, 1, LEVEL).read()).value == 4.0
        assert unit.requests == 3
        unit.requests = 0
        unit.exceptions = [6, 6, 6]
        with pytest.raises(DeviceError) as caught:
            await ModbusGauge(hub, 1, LEVEL).read()
        assert caught.value.code == 6
        assert unit.requests == 3


@pytest.mark.parametrize("code", [1, 2, 3, 4])
async def test_device_exceptions_are_not_retried(pty_bus: tuple[RtuDevices, str],
                                                 code: int) -> None:
    devices, path = pty_bus
    devices.units[1] = unit = gauge_unit()
    unit.exceptions = [code]
    async with ModbusRtuHub("rs485", config(path, retries=3)) as hub:
        with pytest.raises(DeviceError) as caught:
            await ModbusGauge(hub, 1, LEVEL).read()
        assert caught.value.code == code
        assert unit.requests == 1


async def test_gateway_0b_is_a_timeout_and_a_silent_device_costs_its_retries(
        pty_bus: tuple[RtuDevices, str]) -> None:
    devices, path = pty_bus
    devices.units[1] = unit = gauge_unit()
    devices.units[2] = silent = gauge_unit()
    silent.dead = True
    async with ModbusRtuHub("rs485", config(path, retries=1)) as hub:
        unit.exceptions = [0x0B, 0x0B]
        with pytest.raises(DeviceTimeout, match="exception 0B"):
            await ModbusGauge(hub, 1, LEVEL).read()
        assert unit.requests == 2
        with pytest.raises(DeviceTimeout, match="no answer"):
            await ModbusGauge(hub, 2, LEVEL).read()
        assert silent.requests == 2
        assert (await ModbusGauge(hub, 1, LEVEL).read()).value == 1.234


async def test_mb_1_dead_devices_do_not_stall_the_bus(pty_bus: tuple[RtuDevices, str]) -> None:
    devices, path = pty_bus
    dead = {3, 6, 9}
    for unit_id in range(1, 11):
        devices.units[unit_id] = gauge_unit(unit_id / 10)
        devices.units[unit_id].dead = unit_id in dead
    cfg = config(path, timeout_s=0.05, retries=1)
    budget = (1 + cfg.retries) * (cfg.timeout_s + 8 * cfg.char_s + 9 * cfg.char_s)
    async with ModbusRtuHub("rs485", cfg) as hub:
        gauges = {u: ModbusGauge(hub, u, LEVEL) for u in devices.units}
        for _cycle in range(3):
            seen = {u: d.requests for u, d in devices.units.items()}
            started = time.monotonic()
            results = await asyncio.gather(*(g.read() for g in gauges.values()),
                                           return_exceptions=True)
            elapsed = time.monotonic() - started
            for unit_id, result in zip(gauges, results, strict=True):
                if unit_id in dead:
                    assert isinstance(result, DeviceTimeout)
                else:
                    assert not isinstance(result, BaseException)
                    assert result.value == pytest.approx(unit_id / 10)
            # Dead devices are asked 1 + retries times, the live ones once.
            assert {u: d.requests - seen[u] for u, d in devices.units.items()} \
                == {u: 2 if u in dead else 1 for u in gauges}
            # The whole cycle costs the dead devices' budgets plus a little per live one.
            assert elapsed < len(dead) * budget + 0.25


async def test_mb_7_cancelled_mid_request_propagates_and_the_next_request_is_not_confused(
        pty_bus: tuple[RtuDevices, str]) -> None:
    devices, path = pty_bus
    devices.units[1] = unit = gauge_unit(5.0)
    unit.holding |= {20: 777}
    unit.delay_s = 0.08  # within the 0.2 s timeout
    async with ModbusRtuHub("rs485", config(path, timeout_s=0.2)) as hub:
        started = asyncio.Event()

        async def poll(address: int) -> None:
            started.set()
            while True:
                await hub.read_registers(1, "holding", address, 1)

        async def group() -> None:
            async with asyncio.TaskGroup() as tg:
                for address in range(3):
                    tg.create_task(poll(address), name="gauged[bus:rs485].poll")
                await asyncio.Event().wait()

        runner = asyncio.create_task(group())
        await started.wait()
        await asyncio.sleep(0.03)  # mid-request: the device has not answered yet
        t0 = time.monotonic()
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        assert time.monotonic() - t0 < 1.0
        # The late answer (register 0, one register like the next request's) arrives
        # while the next exchange waits: it must not be read as register 20.
        assert await hub.read_registers(1, "holding", 20, 1) == [777]


# ---- the port goes away and comes back (socat pty pair, as a USB adapter) ---------------


class SocatPair:
    """`socat pty,link=A pty,link=B`: the hub opens A, the fake devices B."""

    def __init__(self, tmp: Path) -> None:
        self.a = str(tmp / "ttyGAUGE")
        self.b = str(tmp / "ttyDEVICE")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [SOCAT, f"pty,raw,echo=0,link={self.a}", f"pty,raw,echo=0,link={self.b}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while not (os.path.exists(self.a) and os.path.exists(self.b)):
            assert self.proc.poll() is None, "socat exited"
            assert time.monotonic() < deadline, "socat did not make its ptys"
            time.sleep(0.005)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(5)
            self.proc = None
        for link in (self.a, self.b):  # as when the adapter is pulled: the path is gone
            if os.path.lexists(link):
                os.unlink(link)


@pytest.fixture
def socat(tmp_path: Path) -> Iterator[SocatPair]:
    pair = SocatPair(tmp_path)
    pair.start()
    try:
        yield pair
    finally:
        pair.stop()


def open_device_side(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    tty.setraw(fd)
    return fd


async def test_mb_5_adapter_removed_and_re_added(socat: SocatPair) -> None:
    fd = open_device_side(socat.b)
    devices = RtuDevices(fd)
    devices.units[1] = gauge_unit(6.0)
    gauge_level = 6.0
    async with ModbusRtuHub("rs485", config(socat.a, reconnect_max_s=0.2)) as hub:
        gauge = ModbusGauge(hub, 1, LEVEL)
        assert (await gauge.read()).value == gauge_level
        # Pull the adapter.
        devices.close()
        os.close(fd)
        socat.stop()
        with pytest.raises(TransportError):  # cycle 1 after the removal: noticed
            await gauge.read()
        assert not hub.connected
        with pytest.raises(TransportError):  # still gone: fails fast, retried with backoff
            await gauge.read()
        # Plug it back in: the same path, a new pty behind it.
        socat.start()
        fd = open_device_side(socat.b)
        devices = RtuDevices(fd)
        devices.units[1] = gauge_unit(7.0)
        deadline = time.monotonic() + 3.0
        while True:
            try:
                value = (await gauge.read()).value
                break
            except TransportError:
                assert time.monotonic() < deadline, "the hub did not reopen the port"
                await asyncio.sleep(0.02)
        assert value == 7.0
        assert hub.connected
    devices.close()
    os.close(fd)
