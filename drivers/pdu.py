"""Modbus PDUs, the RTU frame check and the mapping of exception codes (STYLE 6).

The few function codes gauged speaks: 01 read coils, 02 read discrete inputs, 03 read holding
registers, 04 read input registers, 05 write single coil. A request PDU is built here, the
length of its normal answer is known before it arrives (which is how an RTU reply is framed),
and an answer is checked against its request before any of it is decoded.
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.errors import DeviceError, DeviceTimeout, DriverError, TransportError

READ_COILS = 0x01
READ_DISCRETE = 0x02
READ_HOLDING = 0x03
READ_INPUT = 0x04
WRITE_COIL = 0x05

READ_FUNCTION = {"coil": READ_COILS, "discrete": READ_DISCRETE,
                 "holding": READ_HOLDING, "input": READ_INPUT}

EXCEPTION_NAMES = {
    0x01: "illegal function",
    0x02: "illegal data address",
    0x03: "illegal data value",
    0x04: "server device failure",
    0x05: "acknowledge",
    0x06: "server device busy",
    0x08: "memory parity error",
    0x0A: "gateway path unavailable",
    0x0B: "gateway target device failed to respond",
}
BUSY = 0x06

# "Busy" (06) is the one exception worth repeating: twice, after a short pause.
BUSY_RETRIES = 2
BUSY_PAUSE_S = 0.05


def exception_error(code: int, where: str) -> DriverError:
    """The error a Modbus exception answer stands for.

    0A and 0B come from a gateway, not from the device: they are transport failures (0B is a
    timeout behind the gateway). Every other code is the device's answer: DeviceError.
    """
    text = f"{where}: exception {code:02X} ({EXCEPTION_NAMES.get(code, 'unknown')})"
    if code == 0x0B:
        return DeviceTimeout(text)
    if code == 0x0A:
        return TransportError(text)
    return DeviceError(text, code)


@dataclass(frozen=True, slots=True)
class Request:
    """One request PDU and what its normal answer must look like."""

    function: int
    pdu: bytes
    count: int = 0  # registers or bits asked for (reads)

    @property
    def reply_length(self) -> int:
        """Length of the normal answer PDU (function code included)."""
        if self.function in (READ_COILS, READ_DISCRETE):
            return 2 + (self.count + 7) // 8
        if self.function in (READ_HOLDING, READ_INPUT):
            return 2 + 2 * self.count
        return len(self.pdu)  # write single coil: the answer echoes the request


def read_request(kind: str, address: int, count: int) -> Request:
    """Read `count` registers or bits of `kind` from `address`."""
    function = READ_FUNCTION[kind]
    limit = 2000 if function in (READ_COILS, READ_DISCRETE) else 125
    if not 1 <= count <= limit or not 0 <= address <= 65535 or address + count > 65536:
        raise ValueError(f"cannot read {count} {kind} at {address}")
    return Request(function, bytes([function]) + address.to_bytes(2, "big")
                   + count.to_bytes(2, "big"), count)


def write_coil_request(address: int, value: bool) -> Request:
    """Write one coil (FF00 on, 0000 off)."""
    return Request(WRITE_COIL, bytes([WRITE_COIL]) + address.to_bytes(2, "big")
                   + (b"\xff\x00" if value else b"\x00\x00"))


def reply_fits(request: Request, reply: bytes) -> bool:
    """Whether `reply` (a CRC-checked PDU) can be the answer to `request`.

    The function code must match, a read must carry exactly the byte count asked for, and a
    write must echo the request. Anything else is someone else's (or an earlier) answer.
    """
    if not reply:
        return False
    if reply[0] == request.function | 0x80:
        return len(reply) == 2
    if reply[0] != request.function or len(reply) != request.reply_length:
        return False
    if request.function == WRITE_COIL:
        return reply == request.pdu
    return reply[1] == request.reply_length - 2


def decode_reply(request: Request, reply: bytes, where: str) -> list[int]:
    """Registers (or bits, 0/1) of a reply that fits `request`; raises its exception error."""
    if reply[0] & 0x80:
        raise exception_error(reply[1], where)
    data = reply[2:]
    if request.function in (READ_HOLDING, READ_INPUT):
        return [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]
    if request.function in (READ_COILS, READ_DISCRETE):
        # Bit i of the request is bit (i mod 8), least significant first, of byte i // 8.
        return [(data[i // 8] >> (i % 8)) & 1 for i in range(request.count)]
    return []


def crc16(data: bytes) -> int:
    """CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF); sent low byte first."""
    crc = 0xFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc_table()


def rtu_frame(unit: int, pdu: bytes) -> bytes:
    """An RTU frame: unit, PDU, CRC (low byte first)."""
    body = bytes([unit]) + pdu
    return body + crc16(body).to_bytes(2, "little")


def find_rtu_reply(buffer: bytes | bytearray, unit: int,
                   request: Request) -> tuple[int, bytes | None, bool]:
    """Look for the answer to `request` from `unit` in the bytes received so far.

    Returns (bytes to drop from the front, the reply PDU or None, whether a frame start of
    this unit and function failed its CRC or shape check: a garbled answer). The scan moves one byte
    at a time past anything that is not a CRC-valid frame of the expected unit, function and
    length: junk before the reply, a corrupted reply, another unit's answer and a stale
    answer with another function or length are all skipped, never decoded. The expected
    length is known from the request, so a frame start that is still incomplete means
    "wait for more bytes": any frame that could start later would end later.
    """
    normal = 1 + request.reply_length + 2
    exception = 5
    dropped_garbage = False
    i = 0
    n = len(buffer)
    while i < n:
        if buffer[i] != unit:
            i += 1
            continue
        if i + 2 > n:
            return i, None, dropped_garbage
        function = buffer[i + 1]
        if function == request.function | 0x80:
            size = exception
        elif function == request.function:
            size = normal
            if request.function != WRITE_COIL and i + 3 <= n \
                    and buffer[i + 2] != request.reply_length - 2:
                i += 1  # a read answer with another byte count: not ours
                continue
        else:
            i += 1
            continue
        if i + size > n:
            return i, None, dropped_garbage
        frame = bytes(buffer[i:i + size])
        if int.from_bytes(frame[-2:], "little") == crc16(frame[:-2]) \
                and reply_fits(request, frame[1:-2]):
            return i + size, frame[1:-2], dropped_garbage
        dropped_garbage = True
        i += 1
    return n, None, dropped_garbage
