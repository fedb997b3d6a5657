"""Register maps: where a value lives on a Modbus device and how its words decode.

Kinds: `holding` and `input` registers (16 bits each), `coil` and `discrete` inputs (one bit
each, data type `bool`). A 32-bit value spans two registers and a 64-bit value four.
`byte_order` is the order of the two bytes inside each register (Modbus says big endian; some
devices swap them), `word_order` the order of the registers (big: the most significant word
first). For a 32-bit value 0x11223344 the four combinations are, register by register:

    byte big,    word big     [0x1122, 0x3344]   "ABCD", the Modbus default
    byte big,    word little  [0x3344, 0x1122]   "CDAB", word swap
    byte little, word big     [0x2211, 0x4433]   "BADC", byte swap
    byte little, word little  [0x4433, 0x2211]   "DCBA", fully little endian

64-bit values follow the same rules over four registers. Everything else is scale and
offset: value = raw × scale + offset. Bits (coils, discrete inputs) decode to 0 or 1.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

RegisterKind = Literal["holding", "input", "coil", "discrete"]
WordKind = Literal["holding", "input"]
DataType = Literal["int16", "uint16", "int32", "uint32", "float32", "float64", "bool"]
Order = Literal["big", "little"]

BIT_KINDS = frozenset({"coil", "discrete"})

# struct format (big endian) and register count of each data type; bool is one bit
_FORMATS: dict[str, tuple[str, int]] = {
    "int16": (">h", 1),
    "uint16": (">H", 1),
    "int32": (">i", 2),
    "uint32": (">I", 2),
    "float32": (">f", 2),
    "float64": (">d", 4),
    "bool": ("", 1),
}

# Largest read in one request (Modbus: 125 registers, 2000 bits) and the widest gap of unused
# registers worth reading to save a request.
MAX_READ_REGISTERS = 125
MAX_READ_BITS = 2000
MERGE_MAX_GAP = 8


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

    @model_validator(mode="before")
    @classmethod
    def _bits_default_to_bool(cls, data: Any) -> Any:
        # A coil or discrete input holds one bit: `data_type` may be left out.
        if isinstance(data, dict) and data.get("kind") in BIT_KINDS and "data_type" not in data:
            return {**data, "data_type": "bool"}
        return data

    @model_validator(mode="after")
    def _kind_matches_type(self) -> RegisterSpec:
        if (self.kind in BIT_KINDS) != (self.data_type == "bool"):
            raise ValueError(f"data_type {self.data_type} does not fit kind {self.kind}: "
                             f"coils and discrete inputs are bool, registers are not")
        if self.address + self.count > 65536:
            raise ValueError(f"{self.data_type} at {self.address} runs past address 65535")
        return self

    @property
    def count(self) -> int:
        """Number of registers (or bits) the value spans."""
        return register_count(self.data_type)

    @property
    def bits(self) -> int:
        """Width of the raw value in bits (a counter wraps at 2**bits)."""
        return 1 if self.data_type == "bool" else 16 * self.count


class StatusSpec(BaseModel):
    """A device's status word beside its value: `status = { address = 20, fault_mask = 0x0F }`.

    The gauge returns the raw word; the daemon flags the reading when `word & fault_mask` is
    not zero (by default every bit is a fault bit).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: WordKind = "holding"
    address: int = Field(ge=0, le=65535)
    data_type: Literal["uint16", "uint32"] = "uint16"
    word_order: Order = "big"
    fault_mask: int = Field(default=0xFFFFFFFF, ge=0, le=0xFFFFFFFF)

    @property
    def count(self) -> int:
        """Number of registers the status word spans."""
        return register_count(self.data_type)


def register_count(data_type: str) -> int:
    """Registers (or bits, for bool) taken by `data_type`."""
    return _FORMATS[data_type][1]


def decode_raw(registers: Sequence[int], spec: RegisterSpec) -> int | float:
    """Decode the raw number (before scale and offset) from `registers` (or bits).

    Raises ValueError when the number of registers does not match the data type.
    """
    fmt, count = _FORMATS[spec.data_type]
    if len(registers) != count:
        raise ValueError(f"{spec.data_type} needs {count} registers, got {len(registers)}")
    if spec.data_type == "bool":
        return 1 if registers[0] else 0
    words = list(registers)
    if spec.word_order == "little":
        words.reverse()
    data = b"".join(
        (w & 0xFFFF).to_bytes(2, "little" if spec.byte_order == "little" else "big")
        for w in words
    )
    raw: int | float = struct.unpack(fmt, data)[0]
    if spec.data_type == "float32" and isinstance(raw, float) and math.isfinite(raw):
        raw = float(f"{raw:.7g}")  # float32 holds ~7 digits: 1.291, not 1.2910000085830688
    return raw


def decode_registers(registers: Sequence[int], spec: RegisterSpec) -> float:
    """Decode the engineering value: raw × scale + offset."""
    return float(decode_raw(registers, spec)) * spec.scale + spec.offset


def decode_status(registers: Sequence[int], status: StatusSpec) -> int:
    """The raw status word from its one or two registers."""
    if len(registers) != status.count:
        raise ValueError(f"{status.data_type} needs {status.count} registers, "
                         f"got {len(registers)}")
    words = list(registers)
    if status.word_order == "little":
        words.reverse()
    word = 0
    for w in words:
        word = (word << 16) | (w & 0xFFFF)
    return word


def merged_read(value: RegisterSpec, status: StatusSpec) -> tuple[int, int] | None:
    """(first address, count) of one request covering value and status, or None.

    They merge when they are registers of the same kind, the unused registers between them
    are at most MERGE_MAX_GAP, and the whole span fits one request (125 registers).
    """
    if value.kind != status.kind:
        return None
    start = min(value.address, status.address)
    end = max(value.address + value.count, status.address + status.count)
    gap = max(value.address, status.address) - min(value.address + value.count,
                                                   status.address + status.count)
    if gap > MERGE_MAX_GAP or end - start > MAX_READ_REGISTERS:
        return None
    return start, end - start
