"""Encoding of gauge values into Modbus registers, the way field devices lay them out.

Conventions (the same words the gauged configuration uses):

* ``byte_order`` is the order of the two bytes inside each 16-bit register (``big``: most
  significant byte first, as the Modbus standard says; ``little``: swapped);
* ``word_order`` is the order of the registers of a 32-bit value (``big``: most significant
  register at the lower address; ``little``: least significant register first).

This module is written independently of ``drivers/`` so that the simulators check the
daemon's decoder instead of mirroring it.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Literal

DataTypeName = Literal["int16", "uint16", "int32", "uint32", "float32"]
Order = Literal["big", "little"]

#: Data type → (struct format of the big-endian value, number of registers, signed).
DATA_TYPES: dict[str, tuple[str, int, bool]] = {
    "int16": (">h", 1, True),
    "uint16": (">H", 1, False),
    "int32": (">i", 2, True),
    "uint32": (">I", 2, False),
    "float32": (">f", 2, True),
}
ORDERS = ("big", "little")


@dataclass(frozen=True, slots=True)
class RegisterSpec:
    """Where and how one gauge value sits in a device's register map."""

    kind: Literal["holding", "input"]
    address: int
    data_type: DataTypeName
    byte_order: Order = "big"
    word_order: Order = "big"
    scale: float = 1.0
    offset: float = 0.0

    @property
    def count(self) -> int:
        """Number of 16-bit registers the value occupies."""
        return DATA_TYPES[self.data_type][1]

    @property
    def bits(self) -> int:
        """Width of the value in bits."""
        return 16 * self.count


def encode_registers(
    raw: int | float, data_type: DataTypeName, byte_order: Order = "big", word_order: Order = "big"
) -> list[int]:
    """Encode one raw value into 16-bit register values (lowest address first).

    Integer raws must fit the data type (see :func:`level_raw` and :func:`counter_raw`, which
    saturate or wrap first); a float32 raw is packed as IEEE 754 single precision.
    """
    fmt, count, _signed = DATA_TYPES[data_type]
    value: int | float = float(raw) if data_type == "float32" else int(raw)
    packed = struct.pack(fmt, value)  # most significant byte first
    words = [packed[2 * i : 2 * i + 2] for i in range(count)]  # most significant word first
    if word_order == "little":
        words.reverse()
    if byte_order == "little":
        words = [word[::-1] for word in words]
    return [int.from_bytes(word, "big") for word in words]


def _integer_range(data_type: DataTypeName) -> tuple[int, int]:
    _fmt, count, signed = DATA_TYPES[data_type]
    bits = 16 * count
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def level_raw(level_m: float, spec: RegisterSpec) -> int | float:
    """Raw register value for a level: the inverse of ``value = raw × scale + offset``.

    Integer types round to the nearest count and saturate at the type's range, as a real
    transmitter pins at its end of scale instead of wrapping; float32 carries the unrounded
    quotient (the level itself with the default scale 1 and offset 0).
    """
    quotient = (level_m - spec.offset) / spec.scale
    if spec.data_type == "float32":
        return quotient
    low, high = _integer_range(spec.data_type)
    return min(high, max(low, round(quotient)))


def counter_raw(total_mm: float, spec: RegisterSpec) -> int | float:
    """Raw tip-counter value for a cumulative rain total.

    The counter counts whole tips (``scale`` mm each; the epsilon keeps 1.5 mm / 0.5 mm at 3
    tips despite binary floating point) and wraps at the range of its data type, which is the
    rollover the daemon must handle. Signed integer types wrap through their negative half.
    """
    tips = math.floor(total_mm / spec.scale + 1e-9)
    if spec.data_type == "float32":
        return float(tips)
    wrapped = tips % (1 << spec.bits)
    _low, high = _integer_range(spec.data_type)
    return wrapped - (1 << spec.bits) if wrapped > high else wrapped


def encode_level(level_m: float, spec: RegisterSpec) -> list[int]:
    """Registers a level gauge presents for ``level_m``."""
    return encode_registers(
        level_raw(level_m, spec), spec.data_type, spec.byte_order, spec.word_order
    )


def encode_counter(total_mm: float, spec: RegisterSpec) -> list[int]:
    """Registers a rain tip counter presents after ``total_mm`` of rain."""
    return encode_registers(
        counter_raw(total_mm, spec), spec.data_type, spec.byte_order, spec.word_order
    )
