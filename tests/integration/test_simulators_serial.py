"""The serial simulators over real pty pairs: Modbus RTU and text-protocol line gauges.

The fleet runs in the test's event loop on the device side of a socat pair; the test is the
gateway on the other side, a minimal client of its own (a few lines of RTU and line framing over
pyserial) run in a thread so that the event loop stays free for the simulator.
"""

from __future__ import annotations

import asyncio
import math
import struct
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import serial
from services import PtyPair, PtyPairFactory

from simulators.clock import SimClock
from simulators.errors import FaultError, SimulatorError
from simulators.fleet import Fleet

START = datetime(2024, 6, 1, 9, 0, tzinfo=UTC)
T0 = 50_000.0
BAUD = 9600
CHAR_8N1 = 10 / BAUD  # seconds per character at 8N1
CHAR_8E1 = 11 / BAUD  # at 8E1 (the line bus below)
DEADLINE_S = 5.0

T = TypeVar("T")

CONFIG = """
[buses.rs485]
kind = "modbus_rtu"
port = "{rtu_gateway}"
baudrate = 9600
parity = "N"
stopbits = 1
bytesize = 8
timeout_s = 0.3

[buses.line]
kind = "serial_line"
port = "{line_gateway}"
baudrate = 9600
parity = "E"

[gauges.level_a]
bus = "rs485"
unit = 1
quantity = "level_m"
register = {{ kind = "input", address = 0, data_type = "float32" }}
status = {{ kind = "holding", address = 2, data_type = "uint16", fault_mask = 1 }}

[gauges.level_b]
bus = "rs485"
unit = 2
quantity = "level_m"
register = {{ kind = "holding", address = 10, data_type = "int16", scale = 0.01 }}

[gauges.rain_c]
bus = "rs485"
unit = 3
quantity = "rain_counter"
register = {{ kind = "input", address = 4, data_type = "uint32", word_order = "little", \
scale = 0.5 }}

[gauges.level_d]
bus = "rs485"
unit = 4
quantity = "level_m"
register = {{ kind = "holding", address = 0, data_type = "float64", byte_order = "little", \
word_order = "little" }}

[gauges.switch_e]
bus = "rs485"
unit = 5
quantity = "level_m"
register = {{ kind = "discrete", address = 3, data_type = "bool" }}

[gauges.line_level]
bus = "line"
unit = 3
quantity = "level_m"
line = {{ scale = 0.5, offset = 1.0, command = "#{{unit:02d}}RD\\r\\n" }}

[gauges.line_rain]
bus = "line"
unit = 7
quantity = "rain_counter"
line = {{ scale = 0.5 }}

[stations.a]
gauge = "level_a"
[stations.b]
gauge = "level_b"
[stations.c]
gauge = "rain_c"
[stations.d]
gauge = "level_d"
[stations.e]
gauge = "switch_e"
[stations.la]
gauge = "line_level"
[stations.lr]
gauge = "line_rain"

[zones.riverside]
siren_relay = {{ bus = "rs485", unit = 9, coil = 0 }}
amplifier_relay = {{ bus = "rs485", unit = 9, coil = 1 }}
"""

SCENARIO = """time,station,quantity,value
0,a,level_m,1.5
0,b,level_m,2.37
0,c,rain_mm,1.5
0,d,level_m,3.25
0,e,level_m,0.2
0,la,level_m,2.5
0,lr,rain_mm,61.5
180,a,level_m,2.25
180,b,level_m,-0.5
180,c,rain_mm,2.0
180,d,level_m,0.125
180,e,level_m,0.9
180,la,level_m,0.75
180,lr,rain_mm,0.5
"""


# -- a minimal gateway-side client ----------------------------------------------------------


def crc16(data: bytes) -> int:
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def rtu(unit: int, pdu: bytes) -> bytes:
    frame = bytes([unit]) + pdu
    return frame + crc16(frame).to_bytes(2, "little")


def crc_ok(frame: bytes) -> bool:
    return len(frame) >= 4 and crc16(frame[:-2]) == int.from_bytes(frame[-2:], "little")


def read_request(function: int, address: int, count: int) -> bytes:
    return struct.pack(">BHH", function, address, count)


class Gateway:
    """The daemon's end of a pty pair, driven synchronously (from a worker thread)."""

    def __init__(self, path: Path, baudrate: int = BAUD) -> None:
        self.port = serial.Serial(str(path), baudrate, timeout=0.5)

    def send(self, data: bytes) -> None:
        self.port.reset_input_buffer()
        self.port.write(data)

    def read_exactly(self, size: int, timeout: float = 0.5) -> bytes:
        self.port.timeout = timeout
        data: bytes = self.port.read(size)
        return data

    def chunks(self, window: float) -> list[tuple[float, bytes]]:
        """Everything that arrives within ``window`` seconds, as (arrival time, bytes)."""
        got: list[tuple[float, bytes]] = []
        deadline = time.monotonic() + window
        while (remaining := deadline - time.monotonic()) > 0:
            self.port.timeout = remaining
            data = self.port.read(1)
            if data:
                arrived = time.monotonic()
                # A piece is written to the pty at once: the rest of it is already here.
                data += self.port.read(self.port.in_waiting)
                got.append((arrived, data))
        return got

    def ask(self, unit: int, pdu: bytes, window: float) -> bytes:
        """Send one request and return whatever comes back within ``window`` seconds."""
        self.send(rtu(unit, pdu))
        return self.listen(window)

    def listen(self, window: float) -> bytes:
        return b"".join(data for _t, data in self.chunks(window))

    def transact(self, unit: int, pdu: bytes, reply_size: int) -> bytes:
        self.send(rtu(unit, pdu))
        return self.read_exactly(reply_size)

    def line(self, request: bytes, timeout: float = 0.5) -> bytes:
        self.send(request)
        self.port.timeout = timeout
        data: bytes = self.port.read_until(b"\n")
        return data

    def close(self) -> None:
        self.port.close()


def registers(reply: bytes) -> list[int]:
    assert crc_ok(reply), reply.hex()
    count = reply[2] // 2
    return list(struct.unpack(f">{count}H", reply[3 : 3 + 2 * count]))


def as_bytes(words: list[int]) -> bytes:
    return b"".join(word.to_bytes(2, "big") for word in words)


def line_checksum(body: bytes) -> str:
    return f"{sum(body) % 256:02X}"


def parse_line(reply: bytes) -> tuple[int, float, int]:
    """(address, value, status) of a reply line, checking its form and checksum."""
    assert reply.endswith(b"\r\n"), reply
    body, _, checksum = reply[:-2].rpartition(b",")
    body += b","
    assert checksum.decode() == line_checksum(body), reply
    address, value, status = body[1:-1].decode().split(",")
    assert body.startswith(b"*")
    assert len(value) >= 9, value
    assert value[0] in "+-", value
    assert value[-4] == ".", value
    return int(address), float(value), int(status, 16)


# -- fixtures -------------------------------------------------------------------------------


class Wall:
    """A wall clock the test moves by hand, so gauge values are read at chosen times."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    fleet: Fleet
    wall: Wall
    rtu_pair: PtyPair
    line_pair: PtyPair
    rtu: Gateway
    line: Gateway

    async def run(self, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(call, *args)


@pytest.fixture
async def rig(tmp_path: Path, pty_pair: PtyPairFactory) -> AsyncIterator[Rig]:
    rtu_pair, line_pair = pty_pair("rs485"), pty_pair("line")
    config = tmp_path / "gauged.toml"
    config.write_text(
        CONFIG.format(rtu_gateway=rtu_pair.gateway, line_gateway=line_pair.gateway),
        encoding="utf-8",
    )
    scenario = tmp_path / "scenario.csv"
    scenario.write_text(SCENARIO, encoding="utf-8")
    wall = Wall(T0)
    clock = SimClock(speed=1.0, start=START, anchor_unix=T0, wall_time=wall)
    fleet = Fleet(
        config,
        scenario,
        clock,
        serial_paths={"rs485": rtu_pair.device, "line": line_pair.device},
        seed=7,
    )
    async with fleet:
        rtu_gateway = Gateway(rtu_pair.gateway)
        # The line is configured 8E1 (its timing counts 11 bits a character), but the client
        # opens the pty without parity: a Linux pty refuses PARENB once open (pyserial's open
        # passes, any later reconfigure such as a new timeout raises termios.error 22).
        line_gateway = Gateway(line_pair.gateway)
        try:
            yield Rig(fleet, wall, rtu_pair, line_pair, rtu_gateway, line_gateway)
        finally:
            rtu_gateway.close()
            line_gateway.close()


# -- values ---------------------------------------------------------------------------------


async def test_rtu_devices_answer_the_scenario_values(rig: Rig) -> None:
    def read_all() -> tuple[float, int, int, float, bool, int]:
        a = registers(rig.rtu.transact(1, read_request(4, 0, 2), 9))
        (level_a,) = struct.unpack(">f", as_bytes(a))
        (b,) = registers(rig.rtu.transact(2, read_request(3, 10, 1), 7))
        c = registers(rig.rtu.transact(3, read_request(4, 4, 2), 9))
        tips = c[1] << 16 | c[0]  # little word order
        d = registers(rig.rtu.transact(4, read_request(3, 0, 4), 13))
        # little byte order and little word order: the bytes reversed as a whole.
        (level_d,) = struct.unpack("<d", as_bytes(d))  # every byte reversed
        e = rig.rtu.transact(5, read_request(2, 0, 8), 6)
        assert crc_ok(e)
        switch = bool(e[3] >> 3 & 1)
        (status,) = registers(rig.rtu.transact(1, read_request(3, 2, 1), 7))
        return level_a, struct.unpack(">h", b.to_bytes(2, "big"))[0], tips, level_d, switch, status

    level_a, b, tips, level_d, switch, status = await rig.run(read_all)
    assert level_a == pytest.approx(1.5)
    assert b == 237
    assert tips == 3
    assert level_d == 3.25
    assert switch is False  # 0.2 rounds to 0
    assert status == 0

    rig.wall.now = T0 + 200
    level_a, b, tips, level_d, switch, status = await rig.run(read_all)
    assert level_a == pytest.approx(2.25)
    assert b == -50
    assert tips == 7  # 3.5 mm in 0.5 mm tips
    assert level_d == 0.125
    assert switch is True


async def test_rtu_silence_for_unknown_units_and_bad_crc(rig: Rig) -> None:
    def exchange() -> tuple[bytes, bytes, bytes]:
        rig.rtu.send(rtu(42, read_request(3, 0, 1)))
        unknown = rig.rtu.listen(0.1)
        bad = bytearray(rtu(1, read_request(4, 0, 2)))
        bad[-1] ^= 0xFF
        rig.rtu.send(bytes(bad))
        ignored = rig.rtu.listen(0.1)
        good = rig.rtu.transact(1, read_request(4, 0, 2), 9)
        return unknown, ignored, good

    unknown, ignored, good = await rig.run(exchange)
    assert unknown == b""
    assert ignored == b""
    assert crc_ok(good)
    assert good[:3] == b"\x01\x04\x04"
    stats = {bus["bus"]: bus for bus in rig.fleet.stats()["buses"]}
    assert stats["rs485"]["bad_frames"] == 1
    assert stats["rs485"]["foreign_frames"] == 1


async def test_rtu_relay_board_writes_reads_back_and_refuses(rig: Rig) -> None:
    def exchange() -> dict[str, bytes]:
        return {
            "write_coil": rig.rtu.transact(9, struct.pack(">BHH", 5, 1, 0xFF00), 8),
            "write_coils": rig.rtu.transact(9, struct.pack(">BHHB", 15, 0, 3, 1) + b"\x05", 8),
            "read_coils": rig.rtu.transact(9, read_request(1, 0, 10), 7),
            "write_register": rig.rtu.transact(9, struct.pack(">BHH", 6, 0, 1), 5),
            "beyond": rig.rtu.transact(9, read_request(1, 64, 1), 5),
            "bad_value": rig.rtu.transact(9, struct.pack(">BHH", 5, 1, 0x1234), 5),
        }

    replies = await rig.run(exchange)
    assert all(crc_ok(reply) for reply in replies.values()), replies
    assert replies["write_coil"] == rtu(9, struct.pack(">BHH", 5, 1, 0xFF00))
    assert replies["write_coils"] == rtu(9, struct.pack(">BHH", 15, 0, 3))
    # coils 0 and 2 on (0b101), coil 1 switched off again by the multiple write.
    assert replies["read_coils"][2:5] == b"\x02\x05\x00"
    assert replies["write_register"][1:3] == b"\x86\x01"
    assert replies["beyond"][1:3] == b"\x81\x02"
    assert replies["bad_value"][1:3] == b"\x85\x03"
    assert rig.fleet.coils("rs485", 9)[:3] == [True, False, True]
    assert [(r["coil"], r["value"], r["previous"]) for r in rig.fleet.relay_log] == [
        (1, True, False),
        (0, True, False),
        (1, False, True),
        (2, True, False),
    ]


async def test_line_gauges_answer_the_scenario_values(rig: Rig) -> None:
    def read_both() -> tuple[bytes, bytes]:
        return rig.line.line(b"#03RD\r\n"), rig.line.line(b"#07RD\r\n")

    level, rain = await rig.run(read_both)
    # (2.5 − 1.0) / 0.5 = 3.0; the form is exactly the documented one.
    body = b"*03,+0003.000,00,"
    assert level == body + line_checksum(body).encode() + b"\r\n"
    assert parse_line(rain) == (7, 123.0, 0)  # 61.5 mm in 0.5 mm tips

    rig.wall.now = T0 + 200
    level, rain = await rig.run(read_both)
    assert parse_line(level) == (3, -0.5, 0)  # (0.75 − 1.0) / 0.5
    assert parse_line(rain) == (7, 124.0, 0)

    def silent() -> tuple[bytes, bytes]:
        rig.line.send(b"#05RD\r\n")
        unknown = rig.line.listen(0.1)
        rig.line.send(b"#03XX\r\n")
        return unknown, rig.line.listen(0.1)

    assert await rig.run(silent) == (b"", b"")


# -- line time ------------------------------------------------------------------------------


async def test_rtu_exchanges_take_their_wire_time(rig: Rig) -> None:
    exchanges = 20
    request, reply = 8, 9  # read two input registers

    def poll() -> float:
        started = time.monotonic()
        for _ in range(exchanges):
            answer = rig.rtu.transact(1, read_request(4, 0, 2), reply)
            assert len(answer) == reply
        return time.monotonic() - started

    elapsed = await rig.run(poll)
    silence = 3.5 * CHAR_8N1
    wire = exchanges * ((request + reply) * CHAR_8N1 + 2 * silence)
    # The last exchange needs no silence after its reply.
    assert wire - silence - 0.001 <= elapsed <= 1.1 * wire, (elapsed, wire)


async def test_line_exchanges_take_their_wire_time_with_parity(rig: Rig) -> None:
    exchanges = 20

    def poll() -> tuple[float, int, int]:
        started = time.monotonic()
        sizes = set()
        for _ in range(exchanges):
            answer = rig.line.line(b"#07RD\r\n")
            sizes.add(len(answer))
        (size,) = sizes
        return time.monotonic() - started, 7, size

    elapsed, request, reply = await rig.run(poll)
    silence = 3.5 * CHAR_8E1  # 8E1: 11 bits per character
    wire = exchanges * ((request + reply) * CHAR_8E1 + 2 * silence)
    assert wire - silence - 0.001 <= elapsed <= 1.1 * wire, (elapsed, wire)


# -- fault knobs over RTU -------------------------------------------------------------------


async def test_rtu_fault_knobs_are_observable_and_counted(rig: Rig) -> None:
    fleet = rig.fleet
    read_a = read_request(4, 0, 2)

    def level(reply: bytes) -> float:
        value: float = struct.unpack(">f", as_bytes(registers(reply)))[0]
        return value

    fleet.set_fault("rs485", 1, no_answer=True)
    assert await rig.run(lambda: rig.rtu.transact(1, read_a, 9)) == b""

    fleet.set_fault("rs485", 1, no_answer=None, exception=4)
    assert await rig.run(lambda: rig.rtu.transact(1, read_a, 5)) == rtu(1, b"\x84\x04")

    fleet.set_fault("rs485", 1, exception=None, busy_count=2)
    replies = await rig.run(lambda: [rig.rtu.transact(1, read_a, 5) for _ in range(2)])
    assert replies == [rtu(1, b"\x84\x06")] * 2
    assert level(await rig.run(lambda: rig.rtu.transact(1, read_a, 9))) == 1.5
    assert "busy_count" not in fleet.get_faults().get(("rs485", 1), {})

    fleet.set_fault("rs485", 1, junk=1.0)
    junk = await rig.run(rig.rtu.ask, 1, read_a, 0.1)
    assert junk
    assert not crc_ok(junk)

    fleet.set_fault("rs485", 1, junk=None, bad_crc=True)
    bad = await rig.run(lambda: rig.rtu.transact(1, read_a, 9))
    assert len(bad) == 9
    assert bad[:7] == rtu(1, bytes(bad[1:7]))[:7]
    assert not crc_ok(bad)

    fleet.set_fault("rs485", 1, bad_crc=None, wrong_unit=1)
    foreign = await rig.run(lambda: rig.rtu.transact(1, read_a, 9))
    assert crc_ok(foreign)
    assert foreign[0] in {2, 3, 4, 5, 9}  # another device of the bus

    fleet.set_fault("rs485", 1, wrong_unit=None, split=1)

    def split() -> list[tuple[float, bytes]]:
        rig.rtu.send(rtu(1, read_a))
        return rig.rtu.chunks(0.15)

    pieces = await rig.run(split)
    assert len(pieces) == 2, pieces
    assert crc_ok(pieces[0][1] + pieces[1][1])
    # The gap is longer than the 3.5-character silence (the second piece's own wire time adds
    # to it): a reader that frames by silence sees two frames.
    assert pieces[1][0] - pieces[0][0] > 3.5 * CHAR_8N1

    fleet.set_fault("rs485", 1, split=None, delay_s=0.1)

    def timed() -> tuple[float, bytes]:
        started = time.monotonic()
        reply = rig.rtu.transact(1, read_a, 9)
        return time.monotonic() - started, reply

    elapsed, reply = await rig.run(timed)
    assert crc_ok(reply)
    assert elapsed >= 0.1 + (8 + 9 + 3.5) * CHAR_8N1

    # late_s: nothing within the client's 0.3 s timeout; the reply lands during the next
    # exchange (with another device), after that device's own reply.
    fleet.set_fault("rs485", 1, delay_s=None, late_s=0.4)
    assert await rig.run(rig.rtu.ask, 1, read_a, 0.3) == b""
    fleet.clear_faults("rs485", 1)

    def next_exchange() -> bytes:
        rig.rtu.port.write(rtu(2, read_request(3, 10, 1)))  # no input flush: keep what lands
        return rig.rtu.listen(0.3)

    afterwards = await rig.run(next_exchange)
    answer_b = rtu(2, b"\x03\x02" + (237).to_bytes(2, "big"))
    assert afterwards.startswith(answer_b)
    stale = afterwards[len(answer_b) :]
    assert crc_ok(stale)
    assert stale[:3] == b"\x01\x04\x04"

    fleet.set_fault("rs485", 1, disconnect=True)
    assert await rig.run(rig.rtu.ask, 1, read_a, 0.1) == b""
    fleet.set_fault("rs485", 1, disconnect=False)

    fleet.set_fault("rs485", 1, stuck=True, spike=0.5, nan=None, status=5)
    rig.wall.now = T0 + 200  # the scenario moves to 2.25; the stuck gauge stays at 1.5
    assert level(await rig.run(lambda: rig.rtu.transact(1, read_a, 9))) == 2.0
    status = registers(await rig.run(lambda: rig.rtu.transact(1, read_request(3, 2, 1), 7)))
    assert status == [5]
    fleet.set_fault("rs485", 1, stuck=None, spike=None, status=None, nan=1)
    assert math.isnan(level(await rig.run(lambda: rig.rtu.transact(1, read_a, 9))))
    fleet.clear_faults()
    assert level(await rig.run(lambda: rig.rtu.transact(1, read_a, 9))) == 2.25
    assert fleet.get_faults() == {}

    # One count per reply a knob changed (the status read did not cover the level registers,
    # so it carried neither stuck nor spike).
    assert fleet.fault_stats()[("rs485", 1)] == {
        "bad_crc": 1,
        "busy_count": 2,
        "delay_s": 1,
        "disconnect": 1,
        "exception": 1,
        "junk": 1,
        "late_s": 1,
        "nan": 1,
        "no_answer": 1,
        "spike": 1,
        "split": 1,
        "status": 1,
        "stuck": 1,
        "wrong_unit": 1,
    }
    assert fleet.faults_injected() == 15
    assert fleet.faults_injected("rs485", 1, "busy_count") == 2


async def test_stuck_relay_board_acknowledges_but_ignores_writes(rig: Rig) -> None:
    rig.fleet.set_fault("rs485", 9, stuck=True)

    def exchange() -> tuple[bytes, bytes]:
        write = rig.rtu.transact(9, struct.pack(">BHH", 5, 0, 0xFF00), 8)
        return write, rig.rtu.transact(9, read_request(1, 0, 8), 6)

    write, read = await rig.run(exchange)
    assert write == rtu(9, struct.pack(">BHH", 5, 0, 0xFF00))
    assert read[3] == 0  # the coil did not move
    (record,) = rig.fleet.relay_log
    assert (record["coil"], record["value"], record["applied"]) == (0, True, False)
    assert rig.fleet.fault_stats()[("rs485", 9)] == {"stuck": 1}


# -- fault knobs on line gauges -------------------------------------------------------------


async def test_line_fault_knobs_are_observable(rig: Rig) -> None:
    fleet = rig.fleet
    fleet.set_fault("line", 3, bad_checksum=True)
    bad = await rig.run(rig.line.line, b"#03RD\r\n")
    body, _, checksum = bad[:-2].rpartition(b",")
    assert bad.startswith(b"*03,+0003.000,00,")
    assert checksum.decode() != line_checksum(body + b",")

    fleet.set_fault("line", 3, bad_checksum=None, wrong_unit=True, status=0x41, spike=1.0)
    assert parse_line(await rig.run(rig.line.line, b"#03RD\r\n")) == (7, 5.0, 0x41)

    fleet.set_fault("line", 3, wrong_unit=None, status=None, spike=None, junk=True)
    junk = await rig.run(rig.line.line, b"#03RD\r\n")
    assert junk.endswith(b"\r\n")
    assert not junk.startswith(b"*")

    fleet.set_fault("line", 3, junk=None, split=True, split_gap_s=0.03)

    def split() -> list[tuple[float, bytes]]:
        rig.line.send(b"#03RD\r\n")
        return rig.line.chunks(0.2)

    pieces = await rig.run(split)
    assert len(pieces) == 2
    assert parse_line(pieces[0][1] + pieces[1][1]) == (3, 3.0, 0)
    assert pieces[1][0] - pieces[0][0] >= 0.03

    fleet.set_fault("line", 3, split=None, no_answer=True)
    assert await rig.run(rig.line.line, b"#03RD\r\n", 0.2) == b""
    fleet.clear_faults("line")
    assert parse_line(await rig.run(rig.line.line, b"#03RD\r\n")) == (3, 3.0, 0)

    with pytest.raises(FaultError, match="no meaning on a serial_line device"):
        fleet.set_fault("line", 3, exception=4)
    with pytest.raises(FaultError, match="no simulated device 4 on bus 'line'"):
        fleet.set_fault("line", 4, no_answer=True)
    assert fleet.fault_stats()[("line", 3)] == {
        "bad_checksum": 1,
        "junk": 1,
        "no_answer": 1,
        "spike": 1,
        "split": 1,
        "status": 1,
        "wrong_unit": 1,
    }


# -- the adapter pulled out and plugged back in ---------------------------------------------


async def test_simulator_survives_the_pty_vanishing_and_reopens_it(rig: Rig) -> None:
    rig.rtu.close()
    await rig.run(rig.rtu_pair.stop)
    assert not rig.rtu_pair.device.exists()
    await rig.run(rig.rtu_pair.start)

    def poll_until_answered() -> bytes:
        gateway = Gateway(rig.rtu_pair.gateway)
        try:
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                reply = gateway.transact(1, read_request(4, 0, 2), 9)
                if reply:
                    return reply
            return b""
        finally:
            gateway.close()

    reply = await rig.run(poll_until_answered)
    assert crc_ok(reply)
    assert reply[:3] == b"\x01\x04\x04"
    stats = {bus["bus"]: bus for bus in rig.fleet.stats()["buses"]}
    assert stats["rs485"]["reopened"] == 1
    # The other line was never disturbed.
    assert parse_line(await rig.run(rig.line.line, b"#07RD\r\n"))[0] == 7


async def test_a_missing_device_path_fails_at_start(tmp_path: Path) -> None:
    config = tmp_path / "gauged.toml"
    config.write_text(
        CONFIG.format(rtu_gateway=tmp_path / "gw", line_gateway=tmp_path / "gw2"),
        encoding="utf-8",
    )
    fleet = Fleet(config, None, SimClock(), serial_paths={"rs485": tmp_path / "nothing"})
    with pytest.raises(SimulatorError, match=r"buses\.rs485: cannot open the device side"):
        async with fleet:
            pass  # pragma: no cover


async def test_clearing_a_long_delay_frees_the_bus_at_once(rig: Rig) -> None:
    rig.fleet.set_fault("rs485", 1, delay_s=30.0)

    def timed() -> tuple[float, bytes]:
        started = time.monotonic()
        rig.rtu.send(rtu(1, read_request(4, 0, 2)))
        rig.rtu.port.timeout = 10.0
        reply = rig.rtu.port.read(9)
        return time.monotonic() - started, reply

    exchange = asyncio.create_task(rig.run(timed), name="test.delayed-exchange")
    deadline = time.monotonic() + DEADLINE_S
    while not rig.fleet.faults_injected("rs485", 1, "delay_s"):  # the device is thinking
        assert time.monotonic() < deadline
        await asyncio.sleep(0.005)
    rig.fleet.clear_faults("rs485", 1)
    elapsed, reply = await exchange
    assert crc_ok(reply)
    assert elapsed < 2.0
