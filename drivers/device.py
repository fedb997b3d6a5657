"""Devices: every channel behind one unit id of a bus, read together once per cycle.

A field datalogger or a Modbus I/O gateway presents many channels at one address: a river
level, a rain counter, the cabinet's battery voltage, a mains contact, a status word. Reading
them one request per channel wastes bus time on a slow RS-485 line, and treating them as
unrelated hides that they live or die together. `ModbusDevice`:

- plans its reads once, at construction: spans of one register kind that are near each other
  (at most `max_gap` unused words between them, at most `max_registers` in one request) are
  read in one request (drivers.registers.plan_reads);
- when the device refuses a joined read with exception 02 (illegal data address: its map
  has holes the plan bridged), it falls back to one request per value and status word, for
  good, and logs that once at WARNING; a 02 on a read of one span is a configuration fault
  of that channel only;
- a silent device (DeviceTimeout) or a broken bus (TransportError) fails every channel of the
  device at once: the rest of its plan is not tried, so a dead device costs its timeout
  budget once per cycle, not once per channel.

A gauge of its own (`unit` on the gauge, or a text-protocol line gauge) is a device of one
channel (`GaugeDevice`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from drivers.base import Gauge, RawReading
from drivers.configs import BIT_KINDS, RegisterSpec, StatusSpec
from drivers.errors import DeviceError, DriverError, TransportError
from drivers.modbus import ILLEGAL_ADDRESS, ModbusHub
from drivers.registers import (
    MAX_READ_REGISTERS,
    MERGE_MAX_GAP,
    Read,
    decode_raw,
    decode_status,
    plan_reads,
)

log = logging.getLogger(__name__)

Outcome = RawReading | DriverError
"""What one channel got from a device read: its raw reading, or why it has none."""


@dataclass(frozen=True, slots=True)
class Channel:
    """One value of a device (and the status word that qualifies it, if any)."""

    spec: RegisterSpec
    status: StatusSpec | None = None

    def spans(self) -> list[tuple[str, int, int]]:
        out: list[tuple[str, int, int]] = [(self.spec.kind, self.spec.address,
                                            self.spec.count)]
        if self.status is not None:
            out.append((self.status.kind, self.status.address, self.status.count))
        return out


class ModbusDevice:
    """Every channel of one Modbus device (hub + unit id), read as planned.

    Contract: `read` returns one outcome per channel, in the order of `channels`, and never
    raises a DriverError (the outcome carries it); CancelledError propagates. Calls must not
    overlap (the poller reads a device once per cycle). The device holds no connection: the
    hub serialises its requests with every other device's.

    `plan` is the list of reads a cycle makes; `requests` counts the requests sent.
    """

    def __init__(self, hub: ModbusHub, unit: int, channels: Mapping[str, Channel], *,
                 max_gap: int = MERGE_MAX_GAP, max_registers: int = MAX_READ_REGISTERS,
                 name: str = "") -> None:
        self.hub = hub
        self.unit = unit
        self.name = name or f"{hub.name}:{unit}"
        self.channels = dict(channels)
        spans = [s for c in self.channels.values() for s in c.spans()]
        self.joined = plan_reads(spans, max_gap=max_gap, max_registers=max_registers)
        self.single = plan_reads(spans, max_gap=-1)
        self.plan = self.joined
        self.requests = 0

    @property
    def fell_back(self) -> bool:
        """Whether the device refused a joined read and is read span by span."""
        return self.plan is self.single and self.joined != self.single

    async def read(self) -> dict[str, Outcome]:
        """Read the device's plan and decode every channel."""
        words: dict[tuple[str, int], int] = {}
        failed: dict[tuple[str, int], DriverError] = {}
        plan = list(self.plan)
        while plan:
            r = plan.pop(0)
            if all((r.kind, a) in words for a in range(r.address, r.end)):
                continue  # already read by a joined read before the fallback
            try:
                data = await self._fetch(r)
            except TransportError as exc:  # silent device or broken bus: every channel
                return dict.fromkeys(self.channels, exc)
            except DeviceError as exc:
                if exc.code == ILLEGAL_ADDRESS and self.plan is self.joined \
                        and r not in self.single:
                    self._fall_back(r)
                    plan = [s for s in self.single if r.covers(s.kind, s.address, s.count)] \
                        + plan
                    continue
                failed.update(dict.fromkeys(((r.kind, a) for a in range(r.address, r.end)),
                                            exc))
                continue
            words.update(((r.kind, r.address + i), w) for i, w in enumerate(data))
        return {key: self._decode(c, words, failed) for key, c in self.channels.items()}

    async def _fetch(self, r: Read) -> list[int]:
        self.requests += 1
        if r.kind in BIT_KINDS:
            return await self.hub.read_bits(self.unit, r.kind, r.address, r.count)
        return await self.hub.read_registers(self.unit, r.kind, r.address, r.count)

    def _fall_back(self, r: Read) -> None:
        self.plan = self.single
        log.warning("bus=%s unit=%d: read of %s %d+%d refused (exception 02, the map has "
                    "holes); reading the device's %d values one request each from now on "
                    "(%d requests a cycle, was %d)", self.hub.name, self.unit, r.kind,
                    r.address, r.count, len(self.channels), len(self.single),
                    len(self.joined))

    @staticmethod
    def _decode(c: Channel, words: Mapping[tuple[str, int], int],
                failed: Mapping[tuple[str, int], DriverError]) -> Outcome:
        def take(kind: str, address: int, count: int) -> list[int] | DriverError:
            keys = [(kind, a) for a in range(address, address + count)]
            for k in keys:
                if k not in words:
                    return failed.get(k) or DeviceError(f"{kind} {address} not read", 0)
            return [words[k] for k in keys]

        value = take(c.spec.kind, c.spec.address, c.spec.count)
        if isinstance(value, DriverError):
            return value
        if c.status is None:
            return RawReading(decode_raw(value, c.spec))
        status = take(c.status.kind, c.status.address, c.status.count)
        if isinstance(status, DriverError):
            return status
        return RawReading(decode_raw(value, c.spec), decode_status(status, c.status))


class GaugeDevice:
    """A device of one channel read through its gauge (a line gauge, a gauge with its own
    unit on a bus without joined reads). Same contract as ModbusDevice."""

    def __init__(self, name: str, key: str, gauge: Gauge) -> None:
        self.name = name
        self.channels = {key: gauge}
        self.plan: list[Read] = []
        self.requests = 0

    async def read(self) -> dict[str, Outcome]:
        (key, gauge), = self.channels.items()
        self.requests += 1
        try:
            return {key: await gauge.read()}
        except DriverError as exc:
            return {key: exc}
