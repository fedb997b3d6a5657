"""The simulated Modbus device: one unit id with gauges, a status word and relay coils.

The same object answers over Modbus TCP and over RTU: the transports hand it a request PDU and
a fault :class:`~simulators.faults.Plan`, and put its response PDU in their own framing.
"""

from __future__ import annotations

import logging
import struct
import time
from typing import Protocol

from simulators.clock import SimClock
from simulators.config import MIN_BLOCK, GaugeSpec, SiteInputSpec
from simulators.faults import DeviceFaults, Plan
from simulators.journal import Record
from simulators.logger import Cabinet
from simulators.modbus import ExceptionCode, Function, bits_pdu, exception_pdu, registers_pdu
from simulators.registers import (
    BIT_KINDS,
    RegisterSpec,
    counter_raw,
    encode_registers,
    encode_status,
    invalid_raw,
    level_raw,
)

log = logging.getLogger(__name__)

#: Most registers one read may ask for, and most bits (Modbus application protocol §6).
MAX_READ_REGISTERS = 125
MAX_READ_BITS = 2000
MAX_WRITE_BITS = 1968


class Host(Protocol):
    """What a device needs from its fleet: the clock, scenario values and the relay journal."""

    clock: SimClock

    def gauge_value(self, gauge: GaugeSpec) -> float:
        """Level (m) or cumulative rain (mm) the scenario gives ``gauge`` now."""
        ...

    def record_relay(self, record: Record) -> None:
        """Keep one coil-write record."""
        ...


def _round_up(count: int, step: int) -> int:
    return -(-count // step) * step


def _end(spec: RegisterSpec) -> int:
    return spec.address + spec.count


class _Invalid(Exception):
    def __init__(self, code: ExceptionCode) -> None:
        super().__init__(code)
        self.code = code


class ModbusDevice:
    """One simulated Modbus device (unit id) on a bus: gauges, a status word, relay coils.

    Address spaces: holding and input registers 0 .. max(63, highest used); coils (relays and
    bit gauges) 0 .. a multiple of 16 ≥ 64; discrete inputs 0 .. max(63, highest used). Reads
    beyond answer 02; register writes answer 01 (gauges are sensors); a coil write to a gauge's
    coil answers 01.
    """

    def __init__(
        self,
        host: Host,
        bus: str,
        unit: int,
        gauges: list[GaugeSpec],
        relay_names: dict[int, str],
        faults: DeviceFaults,
        site: list[SiteInputSpec] | None = None,
        system_v: int = 12,
    ) -> None:
        self.host = host
        self.bus = bus
        self.unit = unit
        self.gauges = gauges
        self.relay_names = relay_names
        self.faults = faults
        # the cabinet channels of a multi-channel logger (simulators/logger.py)
        self.site = list(site or [])
        self.cabinet = Cabinet(system_v)
        specs = [g.register for g in gauges if g.register is not None]
        specs += [s.register for s in self.site]
        specs += [g.status for g in gauges if g.status is not None]
        word_ends = [_end(s) for s in specs if s.kind not in BIT_KINDS]
        self.register_count = max([MIN_BLOCK, *word_ends])
        coil_ends = [_end(s) for s in specs if s.kind == "coil"] + [c + 1 for c in relay_names]
        self.coil_states = [False] * _round_up(max([MIN_BLOCK, *coil_ends]), 16)
        self.discrete_count = max([MIN_BLOCK, *(_end(s) for s in specs if s.kind == "discrete")])
        self._sensor_coils = {
            s.address for s in specs if s.kind == "coil"
        }
        # Status words, once per device even when several gauges name the same one.
        self._status_specs = list(dict.fromkeys(g.status for g in gauges if g.status))

    # -- values --------------------------------------------------------------------------------

    def values_now(self) -> dict[str, float]:
        """Every gauge's engineering value now, without faults (what ``stuck`` freezes)."""
        return {gauge.name: self.host.gauge_value(gauge) for gauge in self.gauges}

    def _gauge_value(self, gauge: GaugeSpec, plan: Plan) -> float:
        if plan.stuck and gauge.name in self.faults.frozen:
            plan.applied.add("stuck")
            value = self.faults.frozen[gauge.name]
        else:
            value = self.host.gauge_value(gauge)
        if plan.spike:
            plan.applied.add("spike")
            value += plan.spike
        return value

    def _encode_gauge(self, gauge: GaugeSpec, spec: RegisterSpec, plan: Plan) -> list[int]:
        value = self._gauge_value(gauge, plan)
        raw = level_raw(value, spec) if gauge.quantity == "level_m" else counter_raw(value, spec)
        if plan.nan and spec.data_type != "bool":
            plan.applied.add("nan")
            raw = invalid_raw(spec)
        return encode_registers(raw, spec.data_type, spec.byte_order, spec.word_order)

    def _block(self, kind: str, start: int, count: int, plan: Plan) -> list[int]:
        """Values of ``count`` registers (or bits) of ``kind`` from ``start``, faults applied."""
        if kind == "coil":
            values = [int(state) for state in self.coil_states[start : start + count]]
        else:
            values = [0] * count
        overlays: list[tuple[RegisterSpec, GaugeSpec | SiteInputSpec | None]] = [
            (g.register, g) for g in self.gauges if g.register is not None
        ]
        overlays += [(spec, None) for spec in self._status_specs]
        overlays += [(s.register, s) for s in self.site]
        for spec, gauge in overlays:
            if spec.kind != kind or spec.address >= start + count or _end(spec) <= start:
                continue
            if isinstance(gauge, SiteInputSpec):
                now = self.host.clock.now().timestamp()
                value = self.cabinet.value(gauge.role, now, self.faults.knobs)
                encoded = encode_registers(level_raw(value, spec), spec.data_type,
                                           spec.byte_order, spec.word_order)
            elif gauge is None:
                status = plan.status if plan.status is not None else 0
                if plan.status is not None:
                    plan.applied.add("status")
                encoded = encode_status(status, spec)
            else:
                encoded = self._encode_gauge(gauge, spec, plan)
            for offset, value in enumerate(encoded):
                index = spec.address + offset - start
                if 0 <= index < count:
                    values[index] = value
        return values

    # -- requests ------------------------------------------------------------------------------

    def respond(self, pdu: bytes, plan: Plan) -> bytes:
        """The response PDU to request ``pdu`` under ``plan`` (an exception PDU included)."""
        function = pdu[0] if pdu else 0
        if plan.exception is not None:
            return exception_pdu(function, plan.exception)
        try:
            return self._respond(function, pdu, plan)
        except _Invalid as invalid:
            return exception_pdu(function, invalid.code)

    def _respond(self, function: int, pdu: bytes, plan: Plan) -> bytes:
        if function in (Function.READ_HOLDING_REGISTERS, Function.READ_INPUT_REGISTERS):
            start, count = self._read_range(pdu, MAX_READ_REGISTERS, self.register_count)
            kind = "holding" if function == Function.READ_HOLDING_REGISTERS else "input"
            return registers_pdu(function, self._block(kind, start, count, plan))
        if function in (Function.READ_COILS, Function.READ_DISCRETE_INPUTS):
            size = len(self.coil_states) if function == Function.READ_COILS else self.discrete_count
            start, count = self._read_range(pdu, MAX_READ_BITS, size)
            kind = "coil" if function == Function.READ_COILS else "discrete"
            return bits_pdu(function, [bool(v) for v in self._block(kind, start, count, plan)])
        if function == Function.WRITE_SINGLE_COIL:
            if len(pdu) != 5:
                raise _Invalid(ExceptionCode.ILLEGAL_DATA_VALUE)
            address, value = struct.unpack(">HH", pdu[1:5])
            if value not in (0x0000, 0xFF00):
                raise _Invalid(ExceptionCode.ILLEGAL_DATA_VALUE)
            self._check_coils(address, 1)
            self._write_coils(address, [value == 0xFF00], plan)
            return pdu
        if function == Function.WRITE_MULTIPLE_COILS:
            if len(pdu) < 6:
                raise _Invalid(ExceptionCode.ILLEGAL_DATA_VALUE)
            address, count, byte_count = struct.unpack(">HHB", pdu[1:6])
            data = pdu[6:]
            if not 1 <= count <= MAX_WRITE_BITS or byte_count != (count + 7) // 8 or len(
                data
            ) != byte_count:
                raise _Invalid(ExceptionCode.ILLEGAL_DATA_VALUE)
            self._check_coils(address, count)
            bits = [bool(data[i // 8] >> (i % 8) & 1) for i in range(count)]
            self._write_coils(address, bits, plan)
            return pdu[:5]
        # Register writes (06, 16) and everything else: gauges are sensors.
        raise _Invalid(ExceptionCode.ILLEGAL_FUNCTION)

    def _read_range(self, pdu: bytes, most: int, size: int) -> tuple[int, int]:
        if len(pdu) != 5:
            raise _Invalid(ExceptionCode.ILLEGAL_DATA_VALUE)
        start, count = struct.unpack(">HH", pdu[1:5])
        if not 1 <= count <= most:
            raise _Invalid(ExceptionCode.ILLEGAL_DATA_VALUE)
        if start + count > size:
            raise _Invalid(ExceptionCode.ILLEGAL_DATA_ADDRESS)
        longest = self.faults.knobs.get("max_read")
        if longest is not None and count > int(longest):
            self.faults.count("max_read")
            raise _Invalid(ExceptionCode.ILLEGAL_DATA_ADDRESS)  # a hole in the map
        return start, count

    def _check_coils(self, address: int, count: int) -> None:
        if address + count > len(self.coil_states):
            raise _Invalid(ExceptionCode.ILLEGAL_DATA_ADDRESS)
        if any(address <= coil < address + count for coil in self._sensor_coils):
            raise _Invalid(ExceptionCode.ILLEGAL_FUNCTION)  # a gauge's coil takes no writes

    def _write_coils(self, address: int, values: list[bool], plan: Plan) -> None:
        for offset, value in enumerate(values):
            self._write_coil(address + offset, value, applied=not plan.stuck)
        if plan.stuck:
            plan.applied.add("stuck")

    def _write_coil(self, coil: int, value: bool, applied: bool) -> None:
        previous = self.coil_states[coil]
        if applied:
            self.coil_states[coil] = value
        now = self.host.clock.now()
        self.host.record_relay(
            {
                "t_sim": now.isoformat(),
                "t_real": time.monotonic(),
                "bus": self.bus,
                "unit": self.unit,
                "coil": coil,
                "value": value,
                "previous": previous,
                "applied": applied,  # false: the board is stuck (fault knob) and ignored it
            }
        )
        label = self.relay_names.get(coil, "not referenced by any zone")
        if not applied:
            log.info(
                "bus %s unit %d coil %d (%s): write %s ignored (stuck board)",
                self.bus,
                self.unit,
                coil,
                label,
                "ON" if value else "OFF",
            )
        elif value != previous:
            log.info(
                "bus %s unit %d coil %d (%s): %s -> %s at %s",
                self.bus,
                self.unit,
                coil,
                label,
                "ON" if previous else "OFF",
                "ON" if value else "OFF",
                now.isoformat(timespec="seconds"),
            )
        else:
            log.debug(
                "bus %s unit %d coil %d (%s): rewritten %s",
                self.bus,
                self.unit,
                coil,
                label,
                "ON" if value else "OFF",
            )
