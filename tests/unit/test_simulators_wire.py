"""Modbus framing helpers, the device model's PDU answers, the line protocol and line timing."""

from __future__ import annotations

import math
import struct
from datetime import UTC, datetime

import pytest

from simulators.clock import SimClock
from simulators.config import GaugeSpec, LineSpec, SerialSpec
from simulators.devices import ModbusDevice
from simulators.faults import DeviceFaults, Plan
from simulators.journal import Record
from simulators.line import checksum, format_reply, sent_value
from simulators.modbus import crc16, crc_ok, pack_bits, rtu_request_length, unpack_bits, with_crc
from simulators.registers import RegisterSpec
from simulators.serialport import LineTiming


def test_crc16_matches_the_specification_example() -> None:
    # Modbus over serial line v1.02, §6.2.2: read holding registers of slave 1.
    assert with_crc(bytes.fromhex("0103006B0003")) == bytes.fromhex("0103006B00037417")
    assert crc16(b"123456789") == 0x4B37  # the CRC-16/MODBUS check value
    assert crc_ok(bytes.fromhex("0103006B00037417"))
    assert not crc_ok(bytes.fromhex("0103006B00037418"))
    assert not crc_ok(b"\x01\x03")


@pytest.mark.parametrize(
    ("buffer", "length"),
    [
        (b"\x01", None),
        (b"\x01\x03", 8),
        (b"\x01\x05\x00", 8),
        (b"\x01\x10\x00\x00\x00\x02", None),  # byte count not there yet
        (b"\x01\x10\x00\x00\x00\x02\x04", 13),
        (b"\x01\x0f\x00\x00\x00\x0a\x02", 11),
        (b"\x01\x2b\x0e", None),  # unknown length: ends at the silence
    ],
)
def test_rtu_request_length(buffer: bytes, length: int | None) -> None:
    assert rtu_request_length(buffer) == length


def test_bits_are_packed_least_significant_first() -> None:
    bits = [True, False, True, True, False, False, False, False, True]
    assert pack_bits(bits) == b"\x0d\x01"
    assert unpack_bits(b"\x0d\x01", 9) == bits


@pytest.mark.parametrize(
    ("baudrate", "parity", "stopbits", "bits", "silence_ms"),
    [
        (9600, "N", 1, 10, 3.5 * 10 / 9.6),
        (9600, "E", 1, 11, 3.5 * 11 / 9.6),
        (9600, "N", 2, 11, 3.5 * 11 / 9.6),
        (19200, "O", 1, 11, 3.5 * 11 / 19.2),
        (38400, "N", 1, 10, 1.75),  # fixed above 19200 baud
    ],
)
def test_line_timing(
    baudrate: int, parity: str, stopbits: float, bits: int, silence_ms: float
) -> None:
    timing = LineTiming.of(SerialSpec(baudrate=baudrate, parity=parity, stopbits=stopbits))  # type: ignore[arg-type]
    assert timing.bits_per_char == bits
    assert timing.char_s == pytest.approx(bits / baudrate)
    assert timing.silence_s * 1000 == pytest.approx(silence_ms)
    assert timing.wire_s(8) == pytest.approx(8 * bits / baudrate)
    assert timing.transaction_s(8, 9) == pytest.approx(17 * bits / baudrate + 2 * silence_ms / 1000)


def test_line_reply_format_and_checksum() -> None:
    body = b"*03,+0001.234,00,"
    assert checksum(body) == sum(body) % 256
    assert format_reply(3, 1.234, 0) == body + f"{sum(body) % 256:02X}\r\n".encode()
    assert format_reply(12, -0.5, 0x8A).startswith(b"*12,-0000.500,8A,")
    assert format_reply(7, 123.0, 0).startswith(b"*07,+0123.000,00,")
    assert format_reply(7, 12345.0, 0).startswith(b"*07,+12345.000,00,")
    # a gauge without a valid value (the `nan` knob) sends NaN in place of its number
    nan = b"*07,NaN,00,"
    assert format_reply(7, float("nan"), 0) == nan + f"{sum(nan) % 256:02X}\r\n".encode()
    wrong = format_reply(3, 1.234, 0, corrupt=True)
    assert wrong[-4:-2] != format_reply(3, 1.234, 0)[-4:-2]


def test_line_sent_value() -> None:
    assert sent_value(2.5, "level_m", LineSpec(0.5, 1.0)) == 3.0
    assert sent_value(1.5, "rain_counter", LineSpec(0.5)) == 3.0
    assert sent_value(1.9, "rain_counter", LineSpec(0.5)) == 3.0  # whole tips only
    assert sent_value(260.0, "rain_counter", LineSpec(1.0, bits=8)) == 4.0  # wraps at 2**8


class Host:
    """A fleet stand-in for the device model: fixed values, a list for relay records."""

    def __init__(self, values: dict[str, float]) -> None:
        self.clock = SimClock(start=datetime(2024, 6, 1, tzinfo=UTC))
        self.values = values
        self.records: list[Record] = []

    def gauge_value(self, gauge: GaugeSpec) -> float:
        return self.values[gauge.name]

    def record_relay(self, record: Record) -> None:
        self.records.append(record)


def _device(host: Host) -> ModbusDevice:
    level = GaugeSpec(
        "level",
        "b",
        1,
        "level_m",
        RegisterSpec("holding", 4, "float32"),
        status=RegisterSpec("holding", 0, "uint16"),
    )
    switch = GaugeSpec("switch", "b", 1, "level_m", RegisterSpec("coil", 70, "bool"))
    faults = DeviceFaults("b", 1, "rtu", seed=0)
    return ModbusDevice(host, "b", 1, [level, switch], {0: "z.siren_relay"}, faults)


def _read(function: int, address: int, count: int) -> bytes:
    return struct.pack(">BHH", function, address, count)


def test_device_answers_reads_writes_and_exceptions() -> None:
    host = Host({"level": 2.5, "switch": 1.0})
    device = _device(host)
    assert len(device.coil_states) == 80  # coil 70 is a gauge: the block grows to 5 × 16
    reply = device.respond(_read(3, 0, 6), Plan())
    assert reply[:2] == b"\x03\x0c"
    words = struct.unpack(">6H", reply[2:])
    assert words[0] == 0  # status word
    assert struct.unpack(">f", struct.pack(">HH", *words[4:6]))[0] == 2.5
    assert device.respond(_read(1, 64, 8), Plan()) == b"\x01\x01\x40"  # coil 70 = bit 6
    assert device.respond(_read(3, 64, 1), Plan()) == b"\x83\x02"
    assert device.respond(_read(3, 0, 126), Plan()) == b"\x83\x03"
    assert device.respond(_read(3, 0, 0), Plan()) == b"\x83\x03"
    assert device.respond(b"\x03\x00", Plan()) == b"\x83\x03"
    assert device.respond(b"\x2b\x0e\x01\x00", Plan()) == b"\xab\x01"
    assert device.respond(struct.pack(">BHH", 6, 0, 1), Plan()) == b"\x86\x01"
    assert device.respond(struct.pack(">BHH", 5, 70, 0xFF00), Plan()) == b"\x85\x01"
    assert device.respond(struct.pack(">BHH", 5, 80, 0xFF00), Plan()) == b"\x85\x02"
    write = struct.pack(">BHH", 5, 0, 0xFF00)
    assert device.respond(write, Plan()) == write
    assert device.coil_states[0] is True
    assert device.respond(struct.pack(">BHHB", 15, 0, 9, 1) + b"\x00", Plan()) == b"\x8f\x03"
    assert device.respond(struct.pack(">BHHB", 15, 0, 2, 1) + b"\x02", Plan()) == (
        b"\x0f\x00\x00\x00\x02"
    )
    assert device.coil_states[:2] == [False, True]
    assert [(r["coil"], r["value"]) for r in host.records] == [(0, True), (0, False), (1, True)]
    assert device.respond(_read(3, 0, 1), Plan(exception=0x0B)) == b"\x83\x0b"


def test_device_value_faults_apply_where_the_reply_carries_them() -> None:
    host = Host({"level": 2.5, "switch": 0.0})
    device = _device(host)
    plan = Plan(spike=1.0, nan=False, status=0x21)
    words = struct.unpack(">6H", device.respond(_read(3, 0, 6), plan)[2:])
    assert words[0] == 0x21
    assert struct.unpack(">f", struct.pack(">HH", *words[4:6]))[0] == 3.5
    assert plan.applied == {"spike", "status"}
    plan = Plan(nan=True, status=0x21)
    device.respond(_read(3, 4, 2), plan)
    assert plan.applied == {"nan"}  # the status word was not read
    reply = device.respond(_read(3, 4, 2), Plan(nan=True))
    assert math.isnan(struct.unpack(">f", reply[2:])[0])
    device.faults.update({"stuck": True}, device.values_now)
    host.values["level"] = 4.0
    plan = device.faults.plan()
    reply = device.respond(_read(3, 4, 2), plan)
    assert struct.unpack(">f", reply[2:])[0] == 2.5
    assert plan.applied == {"stuck"}
