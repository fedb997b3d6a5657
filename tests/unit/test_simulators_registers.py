"""Register encoding against hand-computed register values.

byte_order: order of the two bytes inside each register; word_order: order of the registers of
a 32-bit value. Values are what a Modbus client receives, lowest address first.
"""

from __future__ import annotations

import math

import pytest

from simulators.registers import (
    RegisterSpec,
    counter_raw,
    encode_counter,
    encode_level,
    encode_registers,
    encode_status,
    invalid_raw,
    level_raw,
)


@pytest.mark.parametrize(
    ("raw", "data_type", "byte_order", "word_order", "registers"),
    [
        (0x1234, "uint16", "big", "big", [0x1234]),
        (0x1234, "uint16", "little", "big", [0x3412]),
        (65535, "uint16", "big", "big", [0xFFFF]),
        (-2, "int16", "big", "big", [0xFFFE]),
        (-2, "int16", "little", "big", [0xFEFF]),
        (1234, "int16", "big", "little", [0x04D2]),  # word order means nothing for 16 bits
        (0x12345678, "int32", "big", "big", [0x1234, 0x5678]),
        (0x12345678, "int32", "big", "little", [0x5678, 0x1234]),
        (0x12345678, "int32", "little", "big", [0x3412, 0x7856]),
        (0x12345678, "int32", "little", "little", [0x7856, 0x3412]),
        (-2, "int32", "big", "big", [0xFFFF, 0xFFFE]),
        (-2, "int32", "big", "little", [0xFFFE, 0xFFFF]),
        (70000, "uint32", "big", "big", [0x0001, 0x1170]),
        (70000, "uint32", "big", "little", [0x1170, 0x0001]),
        (70000, "uint32", "little", "big", [0x0100, 0x7011]),
        (70000, "uint32", "little", "little", [0x7011, 0x0100]),
        (1.0, "float32", "big", "big", [0x3F80, 0x0000]),  # 0x3F800000
        (-1.5, "float32", "big", "big", [0xBFC0, 0x0000]),  # 0xBFC00000
        (2.5, "float32", "big", "little", [0x0000, 0x4020]),  # 0x40200000
        (2.5, "float32", "little", "big", [0x2040, 0x0000]),
        (2.5, "float32", "little", "little", [0x0000, 0x2040]),
        (4.5, "float32", "big", "big", [0x4090, 0x0000]),  # 0x40900000
    ],
)
def test_encode_registers(
    raw: float, data_type: str, byte_order: str, word_order: str, registers: list[int]
) -> None:
    assert encode_registers(raw, data_type, byte_order, word_order) == registers  # type: ignore[arg-type]


def test_level_is_the_inverse_of_raw_times_scale_plus_offset() -> None:
    shirokane = RegisterSpec("holding", 10, "int32", word_order="little", scale=0.001)
    assert level_raw(1.234, shirokane) == 1234  # 1.234 / 0.001 is 1233.999..., rounded
    assert encode_level(1.234, shirokane) == [0x04D2, 0x0000]
    assert encode_level(4.71, shirokane) == [0x1266, 0x0000]  # 4710 = 0x1266
    offset = RegisterSpec("holding", 0, "int16", scale=0.01, offset=-1.0)
    assert level_raw(2.5, offset) == 350  # (2.5 − (−1.0)) / 0.01
    assert level_raw(-0.5, offset) == 50


def test_float_level_carries_the_value_itself() -> None:
    shin_hiroo = RegisterSpec("input", 0, "float32")
    assert level_raw(4.71, shin_hiroo) == 4.71
    assert encode_level(2.5, shin_hiroo) == [0x4020, 0x0000]


def test_integer_levels_saturate_like_a_transmitter() -> None:
    assert level_raw(-0.3, RegisterSpec("holding", 0, "uint16", scale=0.001)) == 0
    assert level_raw(40.0, RegisterSpec("holding", 0, "int16", scale=0.001)) == 32767
    assert level_raw(-40.0, RegisterSpec("holding", 0, "int16", scale=0.001)) == -32768


def test_counter_counts_whole_tips() -> None:
    tips = RegisterSpec("holding", 0, "uint16", scale=0.5)
    assert counter_raw(0.0, tips) == 0
    assert counter_raw(1.5, tips) == 3
    assert counter_raw(1.9, tips) == 3  # a tip is counted only when the bucket is full
    assert encode_counter(57.5, tips) == [115]
    # 0.6 / 0.2 is 2.9999999999999996 in binary floating point: still three tips.
    assert counter_raw(0.6, RegisterSpec("holding", 0, "uint16", scale=0.2)) == 3


def test_counter_wraps_at_the_range_of_its_type() -> None:
    uint16 = RegisterSpec("holding", 0, "uint16", scale=0.5)
    assert counter_raw(65535 * 0.5, uint16) == 65535
    assert counter_raw(65538 * 0.5, uint16) == 2
    int16 = RegisterSpec("holding", 0, "int16", scale=1.0)
    assert counter_raw(40000.0, int16) == 40000 - 65536  # wraps through the negative half
    assert encode_counter(40000.0, int16) == [0x9C40]
    uint32 = RegisterSpec("input", 4, "uint32", scale=0.5)
    assert encode_counter(0.5 * 70000, uint32) == [0x0001, 0x1170]
    assert counter_raw(0.5 * (2**32 + 7), uint32) == 7


@pytest.mark.parametrize(
    ("byte_order", "word_order", "registers"),
    [
        # 2.5 as float64 is 0x4004000000000000.
        ("big", "big", [0x4004, 0x0000, 0x0000, 0x0000]),
        ("big", "little", [0x0000, 0x0000, 0x0000, 0x4004]),
        ("little", "big", [0x0440, 0x0000, 0x0000, 0x0000]),
        ("little", "little", [0x0000, 0x0000, 0x0000, 0x0440]),
    ],
)
def test_float64_in_every_order(byte_order: str, word_order: str, registers: list[int]) -> None:
    assert encode_registers(2.5, "float64", byte_order, word_order) == registers  # type: ignore[arg-type]
    spec = RegisterSpec("holding", 0, "float64", byte_order, word_order)  # type: ignore[arg-type]
    assert spec.count == 4
    assert encode_level(2.5, spec) == registers


def test_bool_gauges_are_one_bit() -> None:
    switch = RegisterSpec("discrete", 3, "bool")
    assert (switch.count, switch.bits) == (1, 1)
    assert encode_level(0.4, switch) == [0]
    assert encode_level(0.6, switch) == [1]
    assert encode_level(7.0, switch) == [1]  # saturates like any integer type
    assert encode_counter(3.0, RegisterSpec("coil", 0, "bool")) == [1]  # 3 tips wrap at 1 bit
    assert encode_counter(4.0, RegisterSpec("coil", 0, "bool")) == [0]


def test_nan_and_status_words() -> None:
    nan = encode_registers(math.nan, "float32")
    assert nan[0] & 0x7F80 == 0x7F80  # exponent all ones ...
    assert nan[0] & 0x007F or nan[1]  # ... and a mantissa that is not zero
    assert level_raw(math.nan, RegisterSpec("holding", 0, "int16")) == 0
    assert invalid_raw(RegisterSpec("holding", 0, "int16")) == -0x8000
    assert invalid_raw(RegisterSpec("holding", 0, "uint32")) == 0xFFFFFFFF
    assert math.isnan(invalid_raw(RegisterSpec("holding", 0, "float64")))
    assert invalid_raw(RegisterSpec("coil", 0, "bool")) == 0
    assert encode_status(0x8001, RegisterSpec("holding", 0, "uint16")) == [0x8001]
    assert encode_status(0x8001, RegisterSpec("holding", 0, "int16")) == [0x8001]
    assert encode_status(5, RegisterSpec("holding", 0, "uint32", word_order="little")) == [5, 0]
    assert encode_status(4, RegisterSpec("discrete", 0, "bool")) == [1]
    assert encode_status(0, RegisterSpec("coil", 0, "bool")) == [0]
