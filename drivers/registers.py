"""Register maps: where a value lives on a Modbus device and how its words decode.

A 32-bit value spans two 16-bit registers. `byte_order` is the order of the two bytes inside
each register (Modbus says big endian; some devices swap them), `word_order` the order of the
registers (big: the most significant word first). Everything else is scale and offset:
value = raw × scale + offset.
"""

from __future__ import annotations

import math
import struct
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

RegisterKind = Literal["holding", "input"]
DataType = Literal["int16", "uint16", "int32", "uint32", "float32"]
Order = Literal["big", "little"]

# struct format (big endian) and register count of each data type
_FORMATS: dict[str, tuple[str, int]] = {
    "int16": (">h", 1),
    "uint16": (">H", 1),
    "int32": (">i", 2),
    "uint32": (">I", 2),
    "float32": (">f", 2),
}


class RegisterSpec(BaseModel):
    """One value on a device: its address, register kind, data type, orders, scale and unit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: RegisterKind = "holding"
    address: int = Field(ge=0, le=65535)
    data_type: DataType = "uint16"
    byte_order: Order = "big"
    word_order: Order = "big"
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""

    @property
    def count(self) -> int:
        """Number of 16-bit registers the value spans."""
        return register_count(self.data_type)

    @property
    def bits(self) -> int:
        """Width of the raw value in bits (a counter wraps at 2**bits)."""
        return 16 * self.count


def register_count(data_type: str) -> int:
    """Registers taken by `data_type`."""
    return _FORMATS[data_type][1]


def decode_raw(registers: list[int], spec: RegisterSpec) -> int | float:
    """Decode the raw number (before scale and offset) from `registers`.

    Raises ValueError when the number of registers does not match the data type.
    """
    fmt, count = _FORMATS[spec.data_type]
    if len(registers) != count:
        raise ValueError(f"{spec.data_type} needs {count} registers, got {len(registers)}")
    words = list(registers)
    if spec.word_order == "little":
        words.reverse()
    data = b"".join(
        (w & 0xFFFF).to_bytes(2, "little" if spec.byte_order == "little" else "big")
        for w in words
    )
    raw: int | float = struct.unpack(fmt, data)[0]
    if isinstance(raw, float) and math.isfinite(raw):
        raw = float(f"{raw:.7g}")  # float32 holds ~7 digits: 1.291, not 1.2910000085830688
    return raw


def decode_registers(registers: list[int], spec: RegisterSpec) -> float:
    """Decode the engineering value: raw × scale + offset."""
    return float(decode_raw(registers, spec)) * spec.scale + spec.offset
