"""Register decoding: every data type in every byte and word order, scale and offset."""

from __future__ import annotations

import struct

import pytest

from drivers.configs import RegisterSpec
from drivers.registers import decode_raw, decode_registers

FORMATS = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I", "float32": ">f"}
VALUES = {
    "int16": [0, 1, -1, 32767, -32768, 1234],
    "uint16": [0, 1, 65535, 40000],
    "int32": [0, -1, 2147483647, -2147483648, 123456789, -98765],
    "uint32": [0, 4294967295, 65536, 305419896],
    "float32": [0.0, 1.5, -2.25, 4.6e3, 3.0e-5],
}


def encode(value: float, data_type: str, byte_order: str, word_order: str) -> list[int]:
    """Registers as a device would send them (written independently of the decoder)."""
    data = struct.pack(FORMATS[data_type], value)
    words = [data[i:i + 2] for i in range(0, len(data), 2)]
    if word_order == "little":
        words.reverse()
    return [int.from_bytes(w, byte_order) for w in words]  # type: ignore[arg-type]


@pytest.mark.parametrize("byte_order", ["big", "little"])
@pytest.mark.parametrize("word_order", ["big", "little"])
@pytest.mark.parametrize("data_type", list(FORMATS))
def test_decode_every_type_and_order(data_type: str, byte_order: str, word_order: str) -> None:
    spec = RegisterSpec(address=0, data_type=data_type, byte_order=byte_order,  # type: ignore[arg-type]
                        word_order=word_order)  # type: ignore[arg-type]
    for value in VALUES[data_type]:
        got = decode_raw(encode(value, data_type, byte_order, word_order), spec)
        if data_type == "float32":
            assert got == pytest.approx(value, rel=1e-6)
        else:
            assert got == value


def test_known_register_images() -> None:
    # 0x12345678 as uint32: big words [0x1234, 0x5678]; little words [0x5678, 0x1234];
    # with bytes swapped inside each register: [0x3412, 0x7856].
    assert decode_raw([0x1234, 0x5678], RegisterSpec(address=0, data_type="uint32")) \
        == 0x12345678
    assert decode_raw([0x5678, 0x1234], RegisterSpec(
        address=0, data_type="uint32", word_order="little")) == 0x12345678
    assert decode_raw([0x3412, 0x7856], RegisterSpec(
        address=0, data_type="uint32", byte_order="little")) == 0x12345678
    assert decode_raw([0xFFFF], RegisterSpec(address=0, data_type="int16")) == -1
    assert decode_raw([0x4093, 0x3333], RegisterSpec(address=0, data_type="float32")) \
        == pytest.approx(4.6)


def test_scale_and_offset() -> None:
    spec = RegisterSpec(address=0, data_type="int16", scale=0.01, offset=-1.0)
    assert decode_registers([460], spec) == pytest.approx(3.6)
    assert decode_registers([0xFFFF], spec) == pytest.approx(-1.01)


def test_wrong_register_count_is_an_error() -> None:
    with pytest.raises(ValueError, match="needs 2 registers"):
        decode_raw([1], RegisterSpec(address=0, data_type="float32"))
