"""Encoding of gauge values into Modbus registers and bits, the way field devices lay them out.

Conventions (the same words the gauged configuration uses):

* ``byte_order`` is the order of the two bytes inside each 16-bit register (``big``: most
  significant byte first, as the Modbus standard says; ``little``: swapped);
* ``word_order`` is the order of the registers of a 32- or 64-bit value (``big``: most
  significant register at the lower address; ``little``: least significant register first);
* ``bool`` values sit in one coil or discrete input (kind ``coil`` or ``discrete``); every other
  data type sits in holding or input registers.

This module is written independently of ``drivers/`` so that the simulators check the
daemon's decoder instead of mirroring it.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Literal

DataTypeName = Literal["bool", "int16", "uint16", "int32", "uint32", "float32", "float64"]
RegisterKind = Literal["holding", "input", "coil", "discrete"]
Order = Literal["big", "little"]


@dataclass(frozen=True, slots=True)
class DataType:
    """How one data type is packed: struct format (big-endian), registers, sign, width."""

    fmt: str
    count: int  # 16-bit registers, or 1 for a single bit
    signed: bool
    bits: int
    is_float: bool = False


DATA_TYPES: dict[str, DataType] = {
    "bool": DataType("", 1, False, 1),
    "int16": DataType(">h", 1, True, 16),
    "uint16": DataType(">H", 1, False, 16),
    "int32": DataType(">i", 2, True, 32),
    "uint32": DataType(">I", 2, False, 32),
    "float32": DataType(">f", 2, True, 32, is_float=True),
    "float64": DataType(">d", 4, True, 64, is_float=True),
}
ORDERS = ("big", "little")
REGISTER_KINDS = ("holding", "input", "coil", "discrete")
#: Kinds that hold single bits (data type ``bool``) rather than 16-bit registers.
BIT_KINDS = frozenset({"coil", "discrete"})


@dataclass(frozen=True, slots=True)
class RegisterSpec:
    """Where and how one gauge value (or a status word) sits in a device's map."""

    kind: RegisterKind
    address: int
    data_type: DataTypeName
    byte_order: Order = "big"
    word_order: Order = "big"
    scale: float = 1.0
    offset: float = 0.0

    @property
    def count(self) -> int:
        """Number of 16-bit registers (or bits, for ``bool``) the value occupies."""
        return DATA_TYPES[self.data_type].count

    @property
    def bits(self) -> int:
        """Width of the value in bits."""
        return DATA_TYPES[self.data_type].bits

    @property
    def is_float(self) -> bool:
        """True for IEEE 754 types (the only ones that can carry NaN)."""
        return DATA_TYPES[self.data_type].is_float


def encode_registers(
    raw: int | float, data_type: DataTypeName, byte_order: Order = "big", word_order: Order = "big"
) -> list[int]:
    """Encode one raw value into 16-bit register values (lowest address first).

    Integer raws must fit the data type (see :func:`level_raw` and :func:`counter_raw`, which
    saturate or wrap first); float raws are packed as IEEE 754 (NaN included). A ``bool`` is
    one bit: ``[1]`` or ``[0]``.
    """
    spec = DATA_TYPES[data_type]
    if data_type == "bool":
        return [1 if raw else 0]
    value: int | float = float(raw) if spec.is_float else int(raw)
    packed = struct.pack(spec.fmt, value)  # most significant byte first
    words = [packed[2 * i : 2 * i + 2] for i in range(spec.count)]  # most significant first
    if word_order == "little":
        words.reverse()
    if byte_order == "little":
        words = [word[::-1] for word in words]
    return [int.from_bytes(word, "big") for word in words]


def _integer_range(data_type: DataTypeName) -> tuple[int, int]:
    spec = DATA_TYPES[data_type]
    bits = spec.bits
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if spec.signed else (0, (1 << bits) - 1)


def level_raw(level_m: float, spec: RegisterSpec) -> int | float:
    """Raw register value for a level: the inverse of ``value = raw × scale + offset``.

    Integer types (and ``bool``, a one-bit integer) round to the nearest count and saturate at
    the type's range, as a real transmitter pins at its end of scale instead of wrapping; float
    types carry the unrounded quotient (the level itself with the default scale 1, offset 0).
    """
    quotient = (level_m - spec.offset) / spec.scale
    if spec.is_float:
        return quotient
    if math.isnan(quotient):
        return 0
    low, high = _integer_range(spec.data_type)
    if math.isinf(quotient):
        return high if quotient > 0 else low
    return min(high, max(low, round(quotient)))


def counter_raw(total_mm: float, spec: RegisterSpec) -> int | float:
    """Raw tip-counter value for a cumulative rain total.

    The counter counts whole tips (``scale`` mm each; the epsilon keeps 1.5 mm / 0.5 mm at 3
    tips despite binary floating point) and wraps at the range of its data type, which is the
    rollover the daemon must handle. Signed integer types wrap through their negative half.
    """
    tips = math.floor(total_mm / spec.scale + 1e-9)
    if spec.is_float:
        return float(tips)
    wrapped = tips % (1 << spec.bits)
    _low, high = _integer_range(spec.data_type)
    return wrapped - (1 << spec.bits) if wrapped > high else wrapped


def invalid_raw(spec: RegisterSpec) -> int | float:
    """What a transmitter sends when it has no valid value: NaN for float types; for integer
    types the usual sentinel, the most negative value of a signed type (0x8000, 0x80000000) or
    the largest of an unsigned one (0xFFFF, 0xFFFFFFFF). ``bool`` has none: 0.
    """
    if spec.is_float:
        return math.nan
    if spec.data_type == "bool":
        return 0
    low, high = _integer_range(spec.data_type)
    return low if DATA_TYPES[spec.data_type].signed else high


def status_raw(status: int, spec: RegisterSpec) -> int | float:
    """Raw value of a device status word ``status`` in ``spec``'s data type.

    Integer types keep the low bits (two's complement for signed types); float types carry the
    number itself; a ``bool`` status is 1 when any bit is set.
    """
    if spec.data_type == "bool":
        return 1 if status else 0
    if spec.is_float:
        return float(status)
    wrapped = status % (1 << spec.bits)
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


def encode_status(status: int, spec: RegisterSpec) -> list[int]:
    """Registers (or the bit) a device status word ``status`` presents in ``spec``."""
    return encode_registers(status_raw(status, spec), spec.data_type, spec.byte_order,
                            spec.word_order)
