r"""Serial line gauges: a poll-response text protocol on a serial line shared by several gauges.

Many level sensors and rain counters speak plain ASCII lines instead of Modbus. Each gauge on
the line has an address (`unit`); the gateway asks one gauge at a time and the gauge answers
with one line holding its value, and optionally its status and a checksum.

The protocol, as configured per gauge (`LineSpec`, drivers.configs; the defaults are what the
bundled simulator speaks):

- **Request**: `command`, a template formatted with the gauge's `unit`; default
  `"#{unit:02d}RD\r\n"`, e.g. `#03RD` CR LF for unit 3. Written as ASCII.
- **Answer**: one line ending in LF (a CR before it is dropped), within `timeout_s` of the
  end of the request. The default answer is

      *03,+0001.234,00,24 CR LF
      │ │  │         │  └ checksum: two hex digits
      │ │  │         └── status byte, two hex digits (00 = all well)
      │ │  └──────────── value: sign optional, decimal point optional
      │ └─────────────── unit (address) of the gauge that answers
      └───────────────── start of an answer

- **`pattern`**: a regular expression that must match the whole line (without CR LF), with
  named groups: `value` (required), `status` (optional; read in base `status_base`, 16 by
  default, or 10), `unit` (optional; when present it must equal the gauge's unit, else the
  line is another gauge's or a stale answer and is ignored), `checksum` (optional; required
  when `checksum` is not `none`). Default:
  `^\*(?P<unit>\d{2}),(?P<value>[-+]?\d+(?:\.\d+)?),(?P<status>[0-9A-F]{2}),(?P<checksum>[0-9A-F]{2})$`
- **`checksum`**: `sum8` (the sum of the bytes modulo 256), `xor8` (all bytes XORed) or
  `none`; computed over the bytes of the line before the `checksum` group (for the default
  answer above: over `*03,+0001.234,00,`), written as two hex digits (upper or lower case).
- A value without a decimal point is an integer (a counter stays exact); with one, a float.
  `scale` and `offset` turn it into the engineering value, as for Modbus gauges.

A line that does not match, has a bad checksum or another unit is never returned as a
reading: the hub keeps listening until the deadline and then raises TransportError (or
DeviceTimeout when nothing at all came back). The bus rules (one request at a time, silence
between frames, flush after trouble, retries, reopening a vanished port) are those of every
serial hub: drivers.serialport.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

from drivers.base import RawReading
from drivers.configs import ChecksumKind, LineSpec, SerialLineBusConfig
from drivers.errors import DeviceTimeout, TransportError
from drivers.serialport import SerialHub, SerialPort

MAX_LINE = 256  # bytes; a longer "line" is noise


def line_checksum(kind: ChecksumKind, data: bytes) -> int:
    """sum8: the sum of the bytes modulo 256; xor8: the bytes XORed together."""
    if kind == "sum8":
        return sum(data) & 0xFF
    result = 0
    if kind == "xor8":
        for byte in data:
            result ^= byte
    return result


def parse_number(text: str) -> int | float:
    """`+0001.234` → 1.234; `-12` → -12 (an integer stays an integer)."""
    if re.fullmatch(r"[-+]?\d+", text):
        return int(text)
    return float(text)


def parse_line(line: str, spec: LineSpec, regex: re.Pattern[str],
               unit: int) -> RawReading | str:
    """The reading in one answer line, or why the line is not one (a short reason)."""
    match = regex.fullmatch(line)
    if match is None:
        return "no match"
    groups = match.groupdict()
    if groups.get("unit") is not None:
        try:
            if int(groups["unit"]) != unit:
                return f"unit {groups['unit']}"
        except ValueError:
            return "bad unit"
    if spec.checksum != "none":
        sent = groups.get("checksum")
        if sent is None:
            return "no checksum"
        try:
            want = line_checksum(spec.checksum, line[:match.start("checksum")].encode("ascii"))
            if int(sent, 16) != want:
                return "bad checksum"
        except (UnicodeEncodeError, ValueError):
            return "bad checksum"
    try:
        value = parse_number(groups["value"])
        status = groups.get("status")
        return RawReading(value, None if status is None else int(status, spec.status_base))
    except (TypeError, ValueError):
        return "bad number"


class SerialLineHub(SerialHub):
    """The single owner of one serial line of text gauges.

    Contract (drivers.base.Hub): calls may overlap and are run one at a time in arrival
    order; after `__aexit__` every call raises TransportError.
    """

    config: SerialLineBusConfig

    def __init__(self, name: str, config: SerialLineBusConfig) -> None:
        super().__init__(name, config)

    async def poll(self, unit: int, command: bytes,
                   parse: Callable[[str], RawReading | str]) -> RawReading:
        """Send `command`; return the first answer line `parse` accepts."""
        where = f"bus {self.name} unit {unit}"

        async def exchange(port: SerialPort) -> RawReading:
            await port.write(command)
            loop = asyncio.get_running_loop()
            deadline = port.tx_end + self.config.timeout_s
            rejected: list[str] = []
            try:
                while True:
                    while (end := port.buffer.find(b"\n")) >= 0:
                        raw = bytes(port.buffer[:end]).rstrip(b"\r")
                        del port.buffer[:end + 1]
                        try:
                            result = parse(raw.decode("ascii"))
                        except UnicodeDecodeError:
                            result = "not ASCII"
                        if isinstance(result, RawReading):
                            return result
                        rejected.append(result)
                    if len(port.buffer) > MAX_LINE:
                        port.buffer.clear()
                        rejected.append("line too long")
                    if not await port.wait_data(deadline):
                        break
            except asyncio.CancelledError:
                self._after_cancel(port, max(deadline, loop.time()))
                raise
            if port.buffer:
                rejected.append("incomplete line")
            if rejected:
                raise TransportError(f"{where}: no valid answer; {len(rejected)} line(s) "
                                     f"discarded ({', '.join(rejected[-3:])})")
            raise DeviceTimeout(f"{where}: no answer within {self.config.timeout_s:g} s")

        return await self._transact("poll", exchange)


class LineGauge:
    """A text-protocol gauge on a serial line (see the module docstring for the protocol)."""

    def __init__(self, hub: SerialLineHub, unit: int, spec: LineSpec) -> None:
        self.hub = hub
        self.unit = unit
        self.spec = spec
        self.command = spec.command.format(unit=unit).encode("ascii")
        self._regex = re.compile(spec.pattern)

    async def read(self) -> RawReading:
        """Ask the gauge and return its raw reading (before scale and offset)."""
        return await self.hub.poll(self.unit, self.command, self._parse)

    def _parse(self, line: str) -> RawReading | str:
        return parse_line(line, self.spec, self._regex, self.unit)
