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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from drivers.configs import BIT_KINDS, FORMATS, RegisterSpec, StatusSpec

# Largest read in one request (Modbus: 125 registers, 2000 bits) and the widest gap of unused
# registers worth reading to save a request.
MAX_READ_REGISTERS = 125
MAX_READ_BITS = 2000
MERGE_MAX_GAP = 8


def decode_raw(registers: Sequence[int], spec: RegisterSpec) -> int | float:
    """Decode the raw number (before scale and offset) from `registers` (or bits).

    Raises ValueError when the number of registers does not match the data type.
    """
    fmt, count = FORMATS[spec.data_type]
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


@dataclass(frozen=True, slots=True)
class Read:
    """One read request of a plan: `count` registers (or bits) of `kind` from `address`."""

    kind: str
    address: int
    count: int

    @property
    def end(self) -> int:
        return self.address + self.count

    def covers(self, kind: str, address: int, count: int) -> bool:
        """Whether this read holds all of `count` words of `kind` from `address`."""
        return kind == self.kind and self.address <= address and address + count <= self.end


def plan_reads(spans: Iterable[tuple[str, int, int]], *, max_gap: int = MERGE_MAX_GAP,
               max_registers: int = MAX_READ_REGISTERS) -> list[Read]:
    """As few reads as cover every span `(kind, address, count)` of one device.

    Spans of one kind are sorted by address and joined while the unused words between them
    are at most `max_gap` and the read stays within `max_registers` registers (2000 bits for
    coils and discrete inputs). Overlapping spans (a status word shared by two channels) are
    read once. `max_gap < 0` joins nothing but identical spans: one read per span.
    Reads come out by kind (holding, input, coil, discrete), then by address.
    """
    by_kind: dict[str, list[tuple[int, int]]] = {}
    for kind, address, count in spans:
        by_kind.setdefault(kind, []).append((address, address + count))
    plan: list[Read] = []
    for kind in sorted(by_kind, key=_KIND_ORDER.index):
        limit = MAX_READ_BITS if kind in BIT_KINDS else max_registers
        start = end = -1
        for a, b in sorted(set(by_kind[kind])):
            if max_gap < 0:
                plan.append(Read(kind, a, b - a))
                continue
            if start >= 0 and a - end <= max_gap and max(end, b) - start <= limit:
                end = max(end, b)
                continue
            if start >= 0:
                plan.append(Read(kind, start, end - start))
            start, end = a, b
        if start >= 0:
            plan.append(Read(kind, start, end - start))
    return plan


_KIND_ORDER = ("holding", "input", "coil", "discrete")
