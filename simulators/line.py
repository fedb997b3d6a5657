"""Text-protocol line gauges on the device side of a pty: several addresses on one line.

The protocol (ASCII, one exchange at a time)::

    gateway → gauge   #03RD\\r\\n                     read gauge at address 03
    gauge → gateway   *03,+0001.234,00,7A\\r\\n       address, value, status, checksum

* the value is ``{value:+09.3f}``: sign, at least 4 integer digits, 3 decimals (a level in the
  gauge's unit, ``sent = (level − offset) / scale``; a rain counter sends its cumulative tips,
  ``floor(total_mm / scale)`` modulo ``2 ** bits``, e.g. ``+0123.000``);
* the status byte is two upper-case hex digits (``00``: all well);
* the checksum is the sum of the bytes from ``*`` up to and including the last comma, modulo
  256, as two upper-case hex digits.

A request for an address nobody has, or a line that is not a request, is met with silence.
Replies are timed as on a real line (see :mod:`simulators.serialbus`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
from pathlib import Path

from simulators.config import BusSpec, GaugeSpec, LineSpec
from simulators.devices import Host
from simulators.faults import DeviceFaults, Plan
from simulators.serialbus import SerialBus
from simulators.serialport import PtyPort

log = logging.getLogger(__name__)

REQUEST = re.compile(rb"#(\d{2})RD\r?\n")
#: A partial line is dropped after this long without a byte, or when it grows past MAX_LINE.
PARTIAL_LINE_S = 1.0
MAX_LINE = 256


def checksum(body: bytes) -> int:
    """sum8: the sum of ``body``'s bytes modulo 256."""
    return sum(body) % 256


def format_reply(address: int, value: float, status: int, corrupt: bool = False) -> bytes:
    """One reply line; ``corrupt`` makes the checksum wrong by one; a NaN ``value`` is sent
    as ``NaN`` (a gauge without a valid value: the ``nan`` fault knob)."""
    number = "NaN" if math.isnan(value) else f"{value:+09.3f}"
    body = f"*{address:02d},{number},{status & 0xFF:02X},".encode("ascii")
    total = (checksum(body) + (1 if corrupt else 0)) % 256
    return body + f"{total:02X}\r\n".encode("ascii")


def sent_value(value: float, quantity: str, line: LineSpec) -> float:
    """The number a gauge sends for engineering ``value`` (level m, or rain total mm)."""
    if quantity == "rain_counter":
        return float(math.floor(value / line.scale + 1e-9) % (1 << line.bits))
    return (value - line.offset) / line.scale


class LineDevice:
    """One text-protocol gauge (one address) on a serial line."""

    def __init__(self, host: Host, bus: str, gauge: GaugeSpec, faults: DeviceFaults) -> None:
        if gauge.line is None:
            raise ValueError(f"gauge {gauge.name!r} is not a line gauge")
        self.host = host
        self.bus = bus
        self.unit = gauge.unit
        self.gauge = gauge
        self.line: LineSpec = gauge.line
        self.faults = faults

    def values_now(self) -> dict[str, float]:
        """The gauge's engineering value now, without faults (what ``stuck`` freezes)."""
        return {self.gauge.name: self.host.gauge_value(self.gauge)}

    def reply(self, plan: Plan, address: int) -> bytes:
        """The reply line under ``plan``, sent as ``address``."""
        if plan.stuck and self.gauge.name in self.faults.frozen:
            plan.applied.add("stuck")
            value = self.faults.frozen[self.gauge.name]
        else:
            value = self.host.gauge_value(self.gauge)
        if plan.spike:
            plan.applied.add("spike")
            value += plan.spike
        status = 0
        if plan.status is not None:
            plan.applied.add("status")
            status = plan.status
        sent = sent_value(value, self.gauge.quantity, self.line)
        if plan.nan:
            plan.applied.add("nan")
            sent = math.nan
        return format_reply(address, sent, status, plan.corrupt)


class LineBus(SerialBus):
    """Every line gauge of one ``serial_line`` bus, answering on one pty."""

    protocol = "serial_line"

    def __init__(
        self,
        spec: BusSpec,
        path: Path,
        devices: dict[int, LineDevice],
        group: asyncio.TaskGroup,
    ) -> None:
        super().__init__(spec, path, group)
        self.devices = devices

    async def serve(self, port: PtyPort) -> None:
        buffer = bytearray()
        t_first = t_last = 0.0
        while True:
            got = await port.read(t_last + PARTIAL_LINE_S if buffer else None)
            if got is None:
                self._drop(buffer, "partial line")
                continue
            data, moment = got
            if not buffer:
                t_first = moment
            buffer += data
            t_last = moment
            while (newline := buffer.find(b"\n")) >= 0:
                line = bytes(buffer[: newline + 1])
                del buffer[: newline + 1]
                await self._line(port, line, t_first, t_last)
                t_first = t_last
            if len(buffer) > MAX_LINE:
                self._drop(buffer, "overlong line")

    def _drop(self, buffer: bytearray, why: str) -> None:
        self.stats["frames"] += 1
        self.stats["bad_frames"] += 1
        log.debug("bus %s: %s %r dropped", self.name, why, bytes(buffer))
        buffer.clear()

    async def _line(self, port: PtyPort, line: bytes, t_first: float, t_last: float) -> None:
        self.stats["frames"] += 1
        end = self.request_end(t_first, t_last, len(line))
        match = REQUEST.fullmatch(line)
        if match is None:
            self.stats["bad_frames"] += 1
            log.debug("bus %s: %r is not a request", self.name, line)
            return
        device = self.devices.get(int(match.group(1)))
        if device is None:
            self.stats["foreign_frames"] += 1
            return
        faults = device.faults
        plan = faults.plan()
        if not plan.answer:
            return
        address = self._other_address(device.unit, faults.rng) if plan.wrong_unit else device.unit
        reply = device.reply(plan, address)
        faults.settle(plan)
        if plan.junk:
            reply = self._line_junk(len(reply), faults.rng)
        await self.deliver(port, reply, plan, end + self.timing.silence_s, faults)

    @staticmethod
    def _line_junk(length: int, rng: random.Random) -> bytes:
        """A garbage line (ended by CR LF so a reader by lines gets it whole), never a reply."""
        size = rng.randint(max(3, length - 4), length + 4) - 2
        body = bytearray(b for b in rng.randbytes(2 * size) if b not in b"\r\n")[:size]
        if not body or body[0] == ord("*"):
            body[:1] = b"?"
        return bytes(body) + b"\r\n"

    def _other_address(self, unit: int, rng: random.Random) -> int:
        others = sorted(u for u in self.devices if u != unit)
        return rng.choice(others) if others else (unit + 1) % 100
