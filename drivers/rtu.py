"""Modbus RTU over a serial line (RS-485 behind a USB adapter): the hub of one bus.

The framing is ours, not pymodbus's (pymodbus 3.16.1's RTU client takes an answer with the
wrong function code, or a late answer to an earlier request of the same unit, as the answer
to the current request, and throws a good frame away when junk precedes it). Here:

- a request is `unit, PDU, CRC-16/MODBUS`; the answer's length is known from the request;
- received bytes are scanned for a frame of the expected unit, function (or its exception),
  byte count and a valid CRC: junk before it, corrupted frames, other units' answers and
  stale answers of another function or length are skipped and never decoded;
- a frame split across reads (USB adapters deliver in chunks) is reassembled; only the CRC
  decides whether it is whole;
- nothing tells two identical answers apart on RTU, so after a timeout the input is flushed
  and the line must be quiet before the next request, and after a cancelled request the hub
  waits out that request's deadline before it sends again.

Serial settings, silence, timeouts, retries and reopening: drivers.serialport.
"""

from __future__ import annotations

import asyncio

from drivers.configs import ModbusRtuBusConfig
from drivers.errors import DeviceTimeout, TransportError
from drivers.pdu import (
    Request,
    decode_reply,
    find_rtu_reply,
    read_request,
    rtu_frame,
    write_coil_request,
)
from drivers.serialport import SerialHub, SerialPort


class ModbusRtuHub(SerialHub):
    """The single owner of one RTU bus; same operations as ModbusTcpHub.

    Contract (drivers.base.Hub): calls may overlap and are run one at a time in arrival
    order; after `__aexit__` every call raises TransportError. Unit 0 (broadcast) is refused
    with TransportError: it has no answer to verify.
    """

    config: ModbusRtuBusConfig

    def __init__(self, name: str, config: ModbusRtuBusConfig) -> None:
        super().__init__(name, config)

    async def read_registers(self, unit: int, kind: str, address: int, count: int) -> list[int]:
        """Read `count` holding or input registers starting at `address`."""
        if kind not in ("holding", "input"):
            raise ValueError(f"not a register kind: {kind}")
        return await self._request(unit, read_request(kind, address, count),
                                   f"read {kind} {address}+{count}")

    async def read_bits(self, unit: int, kind: str, address: int, count: int) -> list[int]:
        """Read `count` coils or discrete inputs starting at `address` (0 or 1 each)."""
        if kind not in ("coil", "discrete"):
            raise ValueError(f"not a bit kind: {kind}")
        return await self._request(unit, read_request(kind, address, count),
                                   f"read {kind} {address}+{count}")

    async def read_coils(self, unit: int, address: int, count: int = 1) -> list[bool]:
        """Read `count` coils starting at `address`."""
        return [bool(b) for b in await self.read_bits(unit, "coil", address, count)]

    async def write_coil(self, unit: int, address: int, value: bool) -> None:
        """Write one coil (the device's echo is checked)."""
        await self._request(unit, write_coil_request(address, value),
                            f"write coil {address}={int(value)}")

    async def _request(self, unit: int, request: Request, what: str) -> list[int]:
        where = f"bus {self.name} unit {unit} {what}"
        if not 1 <= unit <= 247:  # the config check refuses it; never crash a relays-off
            raise TransportError(f"{where}: an RTU unit id is 1…247 (0 is broadcast, "
                                 f"which has no answer)")

        async def exchange(port: SerialPort) -> list[int]:
            await port.write(rtu_frame(unit, request.pdu))
            loop = asyncio.get_running_loop()
            answer_s = (1 + request.reply_length + 2) * self.config.char_s
            deadline = port.tx_end + answer_s + self.config.timeout_s
            garbled = False
            try:
                while True:
                    drop, reply, bad = find_rtu_reply(port.buffer, unit, request)
                    garbled = garbled or bad
                    del port.buffer[:drop]
                    if reply is not None:
                        return decode_reply(request, reply, where)
                    if not await port.wait_data(deadline):
                        break
            except asyncio.CancelledError:
                self._after_cancel(port, max(deadline, loop.time()))
                raise
            if garbled:
                raise TransportError(f"{where}: garbled answer (CRC or framing)")
            raise DeviceTimeout(f"{where}: no answer within {self.config.timeout_s:g} s")

        return await self._transact(what, exchange)
