"""Register decoding: every data type in every byte and word order, bits, status, merging.

Register images are built here with `struct` from the value, independently of the decoder.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from pydantic import ValidationError

from drivers.configs import RegisterSpec, StatusSpec
from drivers.registers import (
    decode_raw,
    decode_registers,
    decode_status,
    merged_read,
)

FORMATS = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I",
           "float32": ">f", "float64": ">d"}
VALUES: dict[str, list[Any]] = {
    "int16": [0, 1, -1, 32767, -32768, 1234],
    "uint16": [0, 1, 65535, 40000],
    "int32": [0, -1, 2147483647, -2147483648, 123456789, -98765],
    "uint32": [0, 4294967295, 65536, 305419896],
    "float32": [0.0, 1.5, -2.25, 4.6e3, 3.0e-5, 1.291],
    "float64": [0.0, 1.5, -2.25, 4.6e3, 3.0e-5, 1.2345678901234567, -1e300],
}


def encode(value: float, data_type: str, byte_order: str, word_order: str) -> list[int]:
    """Registers as a device would send them."""
    data = struct.pack(FORMATS[data_type], value)
    words = [data[i:i + 2] for i in range(0, len(data), 2)]
    if word_order == "little":
        words.reverse()
    return [int.from_bytes(w, "little" if byte_order == "little" else "big") for w in words]


def spec(**kwargs: Any) -> RegisterSpec:
    return RegisterSpec.model_validate({"address": 0, **kwargs})


@pytest.mark.parametrize("byte_order", ["big", "little"])
@pytest.mark.parametrize("word_order", ["big", "little"])
@pytest.mark.parametrize("data_type", list(FORMATS))
def test_every_type_in_every_order(data_type: str, byte_order: str, word_order: str) -> None:
    s = spec(data_type=data_type, byte_order=byte_order, word_order=word_order)
    for value in VALUES[data_type]:
        got = decode_raw(encode(value, data_type, byte_order, word_order), s)
        if data_type == "float32":
            assert got == pytest.approx(value, rel=1e-6)
        else:
            assert got == value  # float64 and integers: exact
            assert type(got) is type(value)


def test_known_images_of_the_four_orders() -> None:
    # 0x11223344: ABCD, CDAB (word swap), BADC (byte swap), DCBA.
    assert decode_raw([0x1122, 0x3344], spec(data_type="uint32")) == 0x11223344
    assert decode_raw([0x3344, 0x1122], spec(data_type="uint32", word_order="little")) \
        == 0x11223344
    assert decode_raw([0x2211, 0x4433], spec(data_type="uint32", byte_order="little")) \
        == 0x11223344
    assert decode_raw([0x4433, 0x2211], spec(data_type="uint32", byte_order="little",
                                             word_order="little")) == 0x11223344
    # 1.0 as float64 is 3FF0 0000 0000 0000.
    assert decode_raw([0x3FF0, 0, 0, 0], spec(data_type="float64")) == 1.0
    assert decode_raw([0, 0, 0, 0x3FF0], spec(data_type="float64", word_order="little")) == 1.0
    assert decode_raw([0xF03F, 0, 0, 0], spec(data_type="float64", byte_order="little")) == 1.0


def test_float32_keeps_the_digits_the_gauge_sent() -> None:
    assert decode_raw(encode(1.291, "float32", "big", "big"), spec(data_type="float32")) \
        == 1.291


def test_non_finite_floats_pass_through() -> None:
    assert math.isnan(decode_raw([0x7FC0, 0], spec(data_type="float32")))
    assert decode_raw([0x7FF0, 0, 0, 0], spec(data_type="float64")) == math.inf


def test_bits_decode_to_zero_or_one() -> None:
    coil = spec(kind="coil", address=3)
    assert coil.data_type == "bool"  # the default for bit kinds
    assert coil.count == 1
    assert coil.bits == 1
    assert decode_raw([1], coil) == 1
    assert decode_raw([0], coil) == 0
    assert decode_raw([True], spec(kind="discrete")) == 1


@pytest.mark.parametrize(("kind", "data_type"), [
    ("coil", "uint16"), ("discrete", "float32"), ("holding", "bool"), ("input", "bool")])
def test_bits_and_registers_do_not_mix(kind: str, data_type: str) -> None:
    with pytest.raises(ValidationError, match="does not fit"):
        spec(kind=kind, data_type=data_type)


def test_a_value_cannot_run_past_the_last_address() -> None:
    with pytest.raises(ValidationError, match="runs past"):
        spec(address=65534, data_type="float64")


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError):
        spec(data_type="uint16", wordorder="big")


def test_counts_and_widths() -> None:
    assert [spec(data_type=t).count for t in FORMATS] == [1, 1, 2, 2, 2, 4]
    assert spec(data_type="uint32").bits == 32
    assert spec(data_type="float64").bits == 64


def test_scale_and_offset() -> None:
    s = spec(data_type="int16", scale=0.01, offset=-1.0)
    assert decode_registers([460], s) == pytest.approx(3.6)
    assert decode_registers([0xFFFF], s) == pytest.approx(-1.01)


def test_wrong_register_count_is_an_error() -> None:
    with pytest.raises(ValueError, match="needs 4 registers"):
        decode_raw([1, 2], spec(data_type="float64"))


def test_status_words() -> None:
    assert decode_status([0x0102], StatusSpec(address=0, fault_mask=1)) == 0x0102
    assert decode_status([0x0001, 0x8000], StatusSpec(
        address=0, data_type="uint32", fault_mask=1)) == 0x00018000
    assert decode_status([0x8000, 0x0001], StatusSpec(
        address=0, data_type="uint32", word_order="little", fault_mask=1)) == 0x00018000
    with pytest.raises(ValueError, match="needs 2"):
        decode_status([1], StatusSpec(address=0, data_type="uint32", fault_mask=1))


def test_status_fault_mask_defaults_to_every_bit() -> None:
    assert StatusSpec.model_validate({"address": 4}).fault_mask == 0xFFFFFFFF
    with pytest.raises(ValidationError, match="fault_mask"):
        StatusSpec.model_validate({"address": 4, "fault_mask": -1})


@pytest.mark.parametrize(("value", "status", "plan"), [
    (dict(address=0, data_type="float32"), dict(address=2), (0, 3)),     # adjacent
    (dict(address=10, data_type="uint32"), dict(address=4), (4, 8)),     # status first
    (dict(address=0), dict(address=9), (0, 10)),                          # gap of 8
    (dict(address=0), dict(address=10), None),                            # gap of 9
    (dict(address=0, kind="input"), dict(address=1), None),               # other kind
    (dict(address=0, kind="coil"), dict(address=1), None),                # bits never merge
    (dict(address=0), dict(address=0), (0, 1)),                           # same register
    (dict(address=0, data_type="float64"), dict(address=4), (0, 5)),
])
def test_merged_read_plan(value: dict[str, Any], status: dict[str, Any],
                          plan: tuple[int, int] | None) -> None:
    status_spec = StatusSpec.model_validate({**status, "fault_mask": 1})
    assert merged_read(spec(**value), status_spec) == plan
