"""Serial line text gauges over a real pty, against small fake gauges on the master side.

The fake gauges speak the default protocol (request `#03RD` CR LF, answer
`*03,+0001.234,00,CS` CR LF with CS the sum8 of the bytes before it) written here from the
protocol description, independently of drivers/line.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import time
import tty
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from drivers.configs import LineSpec, SerialLineBusConfig
from drivers.errors import DeviceTimeout, TransportError
from drivers.line import LineGauge, SerialLineHub
from drivers.registry import make_gauge, make_hub

Chunks = list[tuple[float, bytes]]


def answer(unit: int, value: str, status: int) -> bytes:
    body = f"*{unit:02d},{value},{status:02X},"
    return f"{body}{sum(body.encode()) % 256:02X}\r\n".encode()


@dataclass
class TextGauge:
    value: str
    status: int = 0
    dead: bool = False
    delay_s: float = 0.0
    requests: int = 0


class LineDevices:
    """Text gauges on the master side of a pty."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.gauges: dict[int, TextGauge] = {}
        self.shape: Callable[[int, bytes], Chunks] | None = None
        self.rx = bytearray()
        self.loop = asyncio.get_running_loop()
        os.set_blocking(fd, False)
        self.loop.add_reader(fd, self._readable)

    def close(self) -> None:
        self.loop.remove_reader(self.fd)

    def _readable(self) -> None:
        try:
            self.rx += os.read(self.fd, 4096)
        except OSError:
            return
        while (end := self.rx.find(b"\n")) >= 0:
            line = bytes(self.rx[:end]).rstrip(b"\r").decode(errors="replace")
            del self.rx[:end + 1]
            m = re.fullmatch(r"#(\d{2})RD", line)
            gauge = self.gauges.get(int(m[1])) if m else None
            if m is None or gauge is None:
                continue
            gauge.requests += 1
            if gauge.dead:
                continue
            reply = answer(int(m[1]), gauge.value, gauge.status)
            chunks = self.shape(int(m[1]), reply) if self.shape else [(0.0, reply)]
            for delay, chunk in chunks:
                self.loop.call_later(gauge.delay_s + delay, self._write, chunk)

    def _write(self, chunk: bytes) -> None:
        with contextlib.suppress(OSError):  # the other side may be gone
            os.write(self.fd, chunk)


@pytest.fixture
async def line() -> AsyncIterator[tuple[LineDevices, str, int]]:
    master, slave = os.openpty()
    tty.setraw(slave)
    devices = LineDevices(master)
    try:
        yield devices, os.ttyname(slave), master
    finally:
        devices.close()
        for fd in (master, slave):
            with contextlib.suppress(OSError):
                os.close(fd)


def config(path: str, **kwargs: float) -> SerialLineBusConfig:
    fields: dict[str, object] = {"kind": "serial_line", "port": path, "baudrate": 115200,
                                 "timeout_s": 0.1, "retries": 0, "reconnect_max_s": 0.2}
    fields.update(kwargs)
    return SerialLineBusConfig.model_validate(fields)


async def test_default_protocol(line: tuple[LineDevices, str, int]) -> None:
    devices, path, _ = line
    devices.gauges = {3: TextGauge("+0001.234"), 4: TextGauge("-0000.500", 0x1F),
                      5: TextGauge("0012345")}
    hub = make_hub("line", config(path))
    assert isinstance(hub, SerialLineHub)
    async with hub:
        readings = await asyncio.gather(
            *(make_gauge(hub, u, LineSpec()).read() for u in (3, 4, 5)))
    assert [(r.value, r.status) for r in readings] == [(1.234, 0), (-0.5, 0x1F), (12345, 0)]
    assert isinstance(readings[2].value, int)


@pytest.mark.parametrize("chunks", [
    pytest.param(lambda r: [(0.0, answer(4, "+0009.999", 0) + r)], id="other unit first"),
    pytest.param(lambda r: [(0.0, b"\x00\xff*junk\r\n" + r)], id="junk line first"),
    pytest.param(lambda r: [(0.0, r[:7]), (0.02, r[7:])], id="split with a gap"),
    pytest.param(lambda r: [(0.0, r[:5] + b"\r\n" + r)], id="broken line first"),
    pytest.param(lambda r: [(0.0, r.replace(b"1.234", b"1.235")), (0.01, r)],
                 id="corrupted line first"),
])
async def test_foreign_and_broken_lines_are_skipped(
        line: tuple[LineDevices, str, int], chunks: Callable[[bytes], Chunks]) -> None:
    devices, path, _ = line
    devices.gauges = {3: TextGauge("+0001.234", 0x02)}
    devices.shape = lambda unit, reply: chunks(reply)
    async with SerialLineHub("line", config(path)) as hub:
        reading = await LineGauge(hub, 3, LineSpec()).read()
    assert (reading.value, reading.status) == (1.234, 2)


@pytest.mark.parametrize(("damage", "reason"), [
    pytest.param(lambda r: r.replace(b"1.234", b"1.235"), "bad checksum", id="checksum"),
    pytest.param(lambda r: answer(4, "+0001.234", 0), "unit 04", id="other unit"),
    pytest.param(lambda r: r[:-6] + b"\r\n", "no match", id="no checksum"),
    pytest.param(lambda r: r[:-3], "incomplete line", id="truncated"),
])
async def test_a_bad_answer_is_never_a_reading(
        line: tuple[LineDevices, str, int], damage: Callable[[bytes], bytes],
        reason: str) -> None:
    devices, path, _ = line
    devices.gauges = {3: TextGauge("+0001.234")}
    devices.shape = lambda unit, reply: [(0.0, damage(reply))]
    async with SerialLineHub("line", config(path)) as hub:
        gauge = LineGauge(hub, 3, LineSpec())
        with pytest.raises(TransportError, match=reason):
            await gauge.read()
        devices.shape = None
        assert (await gauge.read()).value == 1.234  # the line was flushed; all is well


@pytest.mark.parametrize("rate", [0.01, 0.10])
async def test_mb_2_junk_or_split_answers_never_give_a_corrupt_value_on_a_serial_line(
        line: tuple[LineDevices, str, int], rate: float) -> None:
    devices, path, _ = line
    devices.gauges = {1: TextGauge("+0002.500", 0x01), 2: TextGauge("-0000.125")}
    rng = random.Random(f"line {rate}")

    def shape(unit: int, reply: bytes) -> Chunks:
        if rng.random() >= rate:
            return [(0.0, reply)]
        cut = rng.randint(1, len(reply) - 1)
        noise = bytes(rng.randrange(256) for _ in range(rng.randint(1, 12)))
        flipped = bytearray(reply)
        flipped[rng.randrange(len(reply) - 2)] ^= 1 << rng.randrange(8)
        return rng.choice([
            [(0.0, noise + reply)], [(0.0, reply + noise)],
            [(0.0, reply[:cut]), (rng.uniform(0.002, 0.02), reply[cut:])],
            [(0.0, bytes(flipped))], [(0.0, reply[:cut])], [(0.0, noise + b"\n")],
        ])

    devices.shape = shape
    want = {1: (2.5, 1), 2: (-0.125, 0)}
    good = 0
    async with SerialLineHub("line", config(path, timeout_s=0.05, retries=1)) as hub:
        gauges = {u: LineGauge(hub, u, LineSpec()) for u in want}
        for i in range(300):
            unit = 1 + i % 2
            try:
                reading = await gauges[unit].read()
            except TransportError:
                continue
            assert (reading.value, reading.status) == want[unit], f"read {i}: corrupt value"
            good += 1
    assert good >= 300 * (1 - rate) - 3


async def test_a_silent_gauge_costs_its_retries(line: tuple[LineDevices, str, int]) -> None:
    devices, path, _ = line
    devices.gauges = {3: TextGauge("+0001.000", dead=True), 4: TextGauge("+0002.000")}
    async with SerialLineHub("line", config(path, retries=1)) as hub:
        with pytest.raises(DeviceTimeout):
            await LineGauge(hub, 3, LineSpec()).read()
        assert devices.gauges[3].requests == 2
        assert (await LineGauge(hub, 4, LineSpec()).read()).value == 2.0


async def test_cancelled_mid_request_then_the_next_request_works(
        line: tuple[LineDevices, str, int]) -> None:
    devices, path, _ = line
    devices.gauges = {3: TextGauge("+0001.000", delay_s=0.05), 4: TextGauge("+0002.000")}
    async with SerialLineHub("line", config(path, timeout_s=0.2)) as hub:
        task = asyncio.create_task(LineGauge(hub, 3, LineSpec()).read())
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await LineGauge(hub, 4, LineSpec()).read()).value == 2.0


async def test_a_vanished_port_is_noticed(line: tuple[LineDevices, str, int]) -> None:
    devices, path, master = line
    devices.gauges = {3: TextGauge("+0001.000")}
    async with SerialLineHub("line", config(path)) as hub:
        assert (await LineGauge(hub, 3, LineSpec()).read()).value == 1.0
        devices.close()
        os.close(master)  # the other side of the pty is gone, as with a pulled adapter
        deadline = time.monotonic() + 2
        while hub.connected:  # noticed even between requests
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        with pytest.raises(TransportError):
            await LineGauge(hub, 3, LineSpec()).read()


def test_custom_command_is_sent_as_configured() -> None:
    spec = LineSpec(command="?{unit}\r", pattern=r"(?P<value>\d+)", checksum="none")
    hub = SerialLineHub("line", config("/dev/null"))
    gauge = LineGauge(hub, 12, spec)
    assert gauge.command == b"?12\r"
