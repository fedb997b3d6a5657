"""Modbus wire details shared by the TCP and RTU sides: CRC-16, PDU framing, exception codes.

Written from the Modbus Application Protocol v1.1b3 and the serial line guide v1.02, without
pymodbus, so that the simulators are an independent implementation of the protocol the daemon
speaks through pymodbus (a bug there cannot hide behind the same bug here).
"""

from __future__ import annotations

import struct
from enum import IntEnum


class Function(IntEnum):
    """The function codes the simulated devices answer."""

    READ_COILS = 1
    READ_DISCRETE_INPUTS = 2
    READ_HOLDING_REGISTERS = 3
    READ_INPUT_REGISTERS = 4
    WRITE_SINGLE_COIL = 5
    WRITE_SINGLE_REGISTER = 6
    WRITE_MULTIPLE_COILS = 15
    WRITE_MULTIPLE_REGISTERS = 16


class ExceptionCode(IntEnum):
    """Modbus exception codes (the ones a field device or gateway sends)."""

    ILLEGAL_FUNCTION = 0x01
    ILLEGAL_DATA_ADDRESS = 0x02
    ILLEGAL_DATA_VALUE = 0x03
    DEVICE_FAILURE = 0x04
    ACKNOWLEDGE = 0x05
    DEVICE_BUSY = 0x06
    GATEWAY_PATH_UNAVAILABLE = 0x0A
    GATEWAY_NO_RESPONSE = 0x0B


#: Function codes that write (unit id 0 broadcasts them on a serial line, with no answer).
WRITE_FUNCTIONS = frozenset({5, 6, 15, 16})


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16(data: bytes | bytearray) -> int:
    """CRC-16/MODBUS of ``data`` (polynomial 0xA001 reflected, initial value 0xFFFF)."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc


def with_crc(frame: bytes) -> bytes:
    """``frame`` followed by its CRC, low byte first (as RTU sends it)."""
    return frame + crc16(frame).to_bytes(2, "little")


def crc_ok(frame: bytes | bytearray) -> bool:
    """True when the last two bytes of ``frame`` are the CRC of the rest."""
    return len(frame) >= 4 and crc16(frame[:-2]) == int.from_bytes(frame[-2:], "little")


def rtu_request_length(buffer: bytes | bytearray) -> int | None:
    """Length of the RTU request at the start of ``buffer`` (unit, PDU and CRC).

    ``None`` while it cannot be known yet (too few bytes, or a function whose length the
    simulator does not know: such a frame ends at the 3.5-character silence).
    """
    if len(buffer) < 2:
        return None
    function = buffer[1]
    if 1 <= function <= 6:
        return 8  # unit, function, address (2), count or value (2), CRC (2)
    if function in (15, 16):
        if len(buffer) < 7:
            return None
        return 9 + buffer[6]  # unit, function, address, count, byte count, data, CRC
    return None


def exception_pdu(function: int, code: int) -> bytes:
    """The exception response to ``function``: function | 0x80, then the code."""
    return bytes([(function | 0x80) & 0xFF, code & 0xFF])


def pack_bits(bits: list[bool]) -> bytes:
    """Coils or discrete inputs as Modbus sends them: first bit in the LSB of the first byte."""
    packed = bytearray((len(bits) + 7) // 8)
    for index, bit in enumerate(bits):
        if bit:
            packed[index // 8] |= 1 << (index % 8)
    return bytes(packed)


def unpack_bits(data: bytes, count: int) -> list[bool]:
    """The first ``count`` bits of ``data`` (inverse of :func:`pack_bits`)."""
    return [bool(data[index // 8] >> (index % 8) & 1) for index in range(count)]


def registers_pdu(function: int, registers: list[int]) -> bytes:
    """Response to a register read: function, byte count, registers big-endian."""
    return struct.pack(f">BB{len(registers)}H", function, 2 * len(registers), *registers)


def bits_pdu(function: int, bits: list[bool]) -> bytes:
    """Response to a coil or discrete-input read: function, byte count, packed bits."""
    packed = pack_bits(bits)
    return bytes([function, len(packed)]) + packed
