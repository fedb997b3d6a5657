"""Modbus PDUs, the RTU CRC, finding an RTU answer among junk, and exception mapping."""

from __future__ import annotations

import pytest

from drivers.errors import DeviceError, DeviceTimeout, TransportError
from drivers.pdu import (
    Request,
    crc16,
    decode_reply,
    exception_error,
    find_rtu_reply,
    read_request,
    reply_fits,
    rtu_frame,
    write_coil_request,
)


def test_crc16_modbus_known_vectors() -> None:
    assert crc16(b"123456789") == 0x4B37  # the CRC catalogue's check value
    assert rtu_frame(0x01, bytes.fromhex("0300000001")) == bytes.fromhex("010300000001840a")
    assert rtu_frame(0x11, bytes.fromhex("03006b0003")) == bytes.fromhex("1103006b00037687")


def test_requests() -> None:
    r = read_request("holding", 0x6B, 3)
    assert r.pdu == bytes.fromhex("03006b0003")
    assert r.reply_length == 2 + 6
    assert read_request("input", 0, 1).pdu[0] == 0x04
    coils = read_request("coil", 19, 19)
    assert coils.pdu == bytes.fromhex("0100130013")
    assert coils.reply_length == 2 + 3
    assert read_request("discrete", 0, 8).reply_length == 3
    assert write_coil_request(172, True).pdu == bytes.fromhex("0500acff00")
    assert write_coil_request(172, False).pdu == bytes.fromhex("0500ac0000")


@pytest.mark.parametrize(("kind", "address", "count"), [
    ("holding", 0, 0), ("holding", 0, 126), ("coil", 0, 2001), ("input", 65535, 2)])
def test_impossible_reads_are_refused(kind: str, address: int, count: int) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        read_request(kind, address, count)


def test_coil_bit_order_is_least_significant_first() -> None:
    # Modbus spec example: coils 20…38 read as CD 6B 05 → 1011 0011, 1101 0110, 101.
    request = read_request("coil", 19, 19)
    bits = decode_reply(request, bytes.fromhex("0103cd6b05"), "test")
    assert bits == [1, 0, 1, 1, 0, 0, 1, 1,  1, 1, 0, 1, 0, 1, 1, 0,  1, 0, 1]


def test_registers_decode_big_endian() -> None:
    request = read_request("holding", 0x6B, 3)
    assert decode_reply(request, bytes.fromhex("0306022b00000064"), "t") == [0x022B, 0, 0x64]


@pytest.mark.parametrize(("code", "error"), [
    (0x01, DeviceError), (0x02, DeviceError), (0x03, DeviceError), (0x04, DeviceError),
    (0x06, DeviceError), (0x0A, TransportError), (0x0B, DeviceTimeout)])
def test_exception_codes_map_to_errors(code: int, error: type[Exception]) -> None:
    exc = exception_error(code, "bus b unit 1 read")
    assert type(exc) is error
    assert f"exception {code:02X}" in str(exc)
    if isinstance(exc, DeviceError):
        assert exc.code == code
    request = read_request("holding", 0, 1)
    with pytest.raises(error):
        decode_reply(request, bytes([0x83, code]), "t")


def test_reply_must_fit_its_request() -> None:
    read = read_request("holding", 0, 2)
    assert reply_fits(read, bytes.fromhex("030400010002"))
    assert not reply_fits(read, bytes.fromhex("040400010002"))   # another function
    assert not reply_fits(read, bytes.fromhex("0302ffff"))       # another count
    assert reply_fits(read, bytes.fromhex("8302"))                # its exception
    assert not reply_fits(read, bytes.fromhex("8402"))
    write = write_coil_request(5, True)
    assert reply_fits(write, write.pdu)
    assert not reply_fits(write, write_coil_request(5, False).pdu)  # not the echo
    assert not reply_fits(write, b"")


READ = read_request("holding", 0, 1)
GOOD = rtu_frame(7, bytes.fromhex("03021234"))


def find(data: bytes, unit: int = 7, request: Request = READ) -> tuple[int, bytes | None, bool]:
    return find_rtu_reply(bytearray(data), unit, request)


def test_find_a_clean_reply() -> None:
    assert find(GOOD) == (len(GOOD), bytes.fromhex("03021234"), False)


def test_junk_before_the_reply_is_skipped() -> None:
    for junk in (b"\x00", b"\x07\x03\x02\xff", b"\x13\x37\x07", b"\x07" * 5, b"\xff" * 30):
        drop, reply, _ = find(junk + GOOD)
        assert reply == bytes.fromhex("03021234"), junk
        assert drop == len(junk + GOOD)


def test_a_partial_reply_waits_for_more() -> None:
    for cut in range(1, len(GOOD)):
        drop, reply, garbled = find(GOOD[:cut])
        assert reply is None
        assert drop == 0  # keep the start: the rest may come
        assert not garbled
        assert find(GOOD[:cut] + GOOD[cut:])[1] is not None


def test_a_corrupted_reply_is_never_accepted() -> None:
    for i in range(len(GOOD)):
        for bit in range(8):
            bad = bytearray(GOOD)
            bad[i] ^= 1 << bit
            _, reply, _ = find(bytes(bad))
            assert reply is None, (i, bit)


def test_corruption_is_reported_as_garbled() -> None:
    bad = GOOD[:-1] + bytes([GOOD[-1] ^ 0xFF])
    assert find(bad) == (len(bad), None, True)
    assert find(b"\x01\x02\x03") == (3, None, False)  # not even our unit


def test_other_units_and_stale_answers_are_skipped() -> None:
    other_unit = rtu_frame(8, bytes.fromhex("03021234"))
    other_function = rtu_frame(7, bytes.fromhex("04021234"))
    other_count = rtu_frame(7, bytes.fromhex("030400010002"))
    for stale in (other_unit, other_function, other_count):
        assert find(stale)[1] is None
        assert find(stale + GOOD)[1] == bytes.fromhex("03021234")


def test_exception_answer_is_found() -> None:
    frame = rtu_frame(7, bytes([0x83, 0x02]))
    assert find(frame) == (5, bytes([0x83, 0x02]), False)
    assert find(rtu_frame(7, bytes([0x84, 0x02])))[1] is None  # another function's exception


def test_write_coil_echo() -> None:
    write = write_coil_request(3, True)
    assert find(rtu_frame(7, write.pdu), request=write)[1] == write.pdu
    wrong = write_coil_request(4, True)
    assert find(rtu_frame(7, wrong.pdu), request=write)[1] is None
